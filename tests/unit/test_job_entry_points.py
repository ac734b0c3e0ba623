"""jobs/*.py are the CLI's commands: the same options, the same usage errors, and no Ray call of their own."""

from __future__ import annotations

import ast
import os
import runpy
from pathlib import Path

import pytest
import typer

from bigsister_ray.cli import app
from bigsister_ray.job import ADDRESS_ENV, run_command

REPO = Path(__file__).resolve().parents[2]
JOBS = ["prepare", "train", "evaluate"]


def _options(command: str) -> set[str]:
    group = typer.main.get_command(app)
    return {opt for param in group.commands[command].params for opt in param.opts if opt.startswith("--")}


@pytest.mark.parametrize("command", JOBS)
def test_a_job_takes_the_commands_options(command, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", [f"jobs/{command}.py", "--help"])
    job = runpy.run_path(str(REPO / "jobs" / f"{command}.py"))
    assert job["main"]() == 0
    shown = capsys.readouterr().out
    assert f"bigsister {command}" in shown
    missing = {opt for opt in _options(command) if opt not in shown}
    assert not missing, f"jobs/{command}.py --help lacks {sorted(missing)}"


@pytest.mark.parametrize("command", JOBS)
def test_a_usage_error_is_the_commands_exit_code_2(command, capsys):
    assert run_command(command, ["--no-such-option"]) == 2
    assert "No such option" in capsys.readouterr().err


def test_the_cluster_address_is_set_for_the_command_only(monkeypatch):
    """Inside a job the stages join the job's cluster (``auto``) unless the settings name one; afterwards the
    environment is as it was."""
    monkeypatch.delenv(ADDRESS_ENV, raising=False)
    seen = []
    probe = typer.Typer()
    probe.callback()(lambda: None)

    @probe.command()
    def show() -> None:
        from bigsister_ray.config import load_settings

        seen.append(load_settings().ray.address)

    monkeypatch.setattr("bigsister_ray.cli.app", probe)
    assert run_command("show", []) == 0
    assert seen == ["auto"] and ADDRESS_ENV not in os.environ
    monkeypatch.setenv(ADDRESS_ENV, "ray://head:10001")
    assert run_command("show", []) == 0
    assert seen[-1] == "ray://head:10001" and os.environ[ADDRESS_ENV] == "ray://head:10001"


@pytest.mark.parametrize("command", JOBS)
def test_a_job_script_only_runs_the_command(command):
    """No argparse and no ray.init in a job script: everything it does is the command's."""
    tree = ast.parse((REPO / "jobs" / f"{command}.py").read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names}
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "argparse" not in imported and "ray" not in imported and not any(
        m and m.startswith("ray") for m in modules)
    assert "bigsister_ray.job" in modules
