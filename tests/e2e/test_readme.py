"""Every short command in the README runs as written, its links resolve and its accuracy figures are measured ones.

The README's ``bash`` blocks are extracted; the ``bigsister`` commands that finish in seconds to a minute
(--help, config, synth, eda, prepare, train, evaluate, detect) run in order, exactly as written except that
``/tmp/`` becomes this test's temporary folder. Long-running or external commands are listed and skipped for
a reason: ``pip install`` (the set-up itself), ``bigsister demo`` and ``bigsister serve`` (they run until
stopped; the serve app is tested in tests/integration), ``ray job submit`` (tests/integration/test_jobs.py),
``curl`` against a running service (tests/integration/test_serve_app.py), shell variable set-up, and the
commands on the user's own footage with ``configs/fight-cpu.yaml`` (they need that footage and ImageNet weights;
the recipe is checked in tests/unit/test_recipe.py and measured by benchmarks/bench_fight_surv.py).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
RUNNABLE = {"--help", "config", "synth", "eda", "prepare", "train", "evaluate", "detect"}
SKIPPED_PREFIXES = ("pip install", "bigsister demo", "bigsister serve", "ray job submit", "curl ", "export ", "KEY=")
OWN_FOOTAGE = "--config configs/fight-cpu.yaml"


def own_footage(command: str) -> bool:
    return OWN_FOOTAGE in command


def readme_commands(text: str) -> list[str]:
    """Commands of the README's ```bash blocks, continuation lines joined, comments dropped."""
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                commands.extend(part.strip() for part in line.split("&&"))
    return commands


def test_readme_commands_are_known():
    """Every command in the README is either run here or skipped for a stated reason: none is forgotten."""
    commands = readme_commands(README.read_text())
    assert "pip install -c constraints.txt -e ." in commands
    assert "bigsister demo" in commands
    assert 'pip install -c constraints.txt -e ".[dev,postgres]"' in commands and "python -m pytest -q" in commands
    for c in commands:
        words = shlex.split(c)
        runnable = words[0] == "bigsister" and len(words) > 1 and words[1] in RUNNABLE
        assert runnable or c.startswith(SKIPPED_PREFIXES) or words[0] == "python", f"README command not covered: {c}"
    assert sum(own_footage(c) for c in commands) == 3, "README shows prepare, train and evaluate with the CPU recipe"


def test_readme_test_command_is_what_ci_runs():
    """.ci/run runs the README's test command (install the dev extras, then pytest)."""
    ci = (README.parent / ".ci" / "run").read_text()
    commands = readme_commands(README.read_text())
    install = next(c for c in commands if c.startswith("pip install") and "[dev" in c)
    test = next(c for c in commands if "pytest" in c)
    assert install.split("install", 1)[1].strip() in ci
    assert test in ci


def test_readme_links_resolve():
    """Every relative link in the README (docs, RESULTS, the dashboard) names a file of the repository."""
    text = README.read_text()
    links = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t and not t.startswith("#")]
    assert "docs/configuration.md" in links and "docs/metrics.md" in links
    missing = [t for t in links if not (README.parent / t).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"



def test_readme_accuracy_figures_are_the_measured_ones():
    """Each figure the README quotes for accuracy is one that benchmarks/RESULTS.md records as measured."""
    text = README.read_text()
    section = text.split("## What accuracy to expect", 1)[1].split("\n## ", 1)[0]
    figures = set(re.findall(r"\b\d\.\d{3}\b", section))
    assert len(figures) >= 6, f"the accuracy section quotes too few figures to check: {sorted(figures)}"
    results = (README.parent / "benchmarks" / "RESULTS.md").read_text()
    missing = sorted(f for f in figures if f not in results)
    assert not missing, f"README quotes figures that benchmarks/RESULTS.md does not record: {missing}"

@pytest.mark.slow
def test_short_readme_commands_run_as_written(tmp_path):
    from bigsister_ray.data.synth import render_video

    render_video(tmp_path / "clip.mp4", "fight", seconds=6.0, seed=3, abnormal_span=(2.0, 4.0), size=(96, 72))
    ran = []
    for command in readme_commands(README.read_text()):
        words = shlex.split(command)
        if words[0] != "bigsister" or len(words) < 2 or words[1] not in RUNNABLE or own_footage(command):
            continue
        words = [w.replace("/tmp/", f"{tmp_path}/") for w in words]
        exe = str(Path(sys.executable).with_name("bigsister"))
        proc = subprocess.run([exe, *words[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"`{command}` failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        ran.append(words[1])
    assert {"synth", "eda", "prepare", "train", "evaluate", "detect"} <= set(ran)
    assert (tmp_path / "eda" / "report.md").exists()
    assert (tmp_path / "eval" / "metrics.json").exists()
