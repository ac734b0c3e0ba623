"""constraints.txt pins every dependency the project declares, so each fresh install is the same program."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_every_declared_dependency_is_pinned_exactly():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared |= {_name(r) for r in extra}
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert "==" in line, f"constraints.txt: expected NAME==VERSION, got {line!r}"
            pins[_name(line)] = line
    missing = sorted(declared - set(pins))
    assert not missing, f"not pinned in constraints.txt (run tools/refresh-constraints.sh): {missing}"


def test_install_commands_use_the_constraints():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    installs = [line for line in readme.splitlines() if line.startswith("pip install")]
    assert installs and all("-c constraints.txt" in line for line in installs), installs
    assert "-c constraints.txt" in ci
