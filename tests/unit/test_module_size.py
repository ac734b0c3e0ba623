"""No module of bigsister_ray is longer than 500 lines unless its docstring says why it must be one unit.

A long module says so in its docstring with a line ``One unit: <why it cannot be split along a seam>``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAX_LINES = 500
_ONE_UNIT = re.compile(r"^\s*One unit:\s*(\S.{19,})", re.MULTILINE)



def too_long(root: Path, package: str = "bigsister_ray") -> dict[str, int]:
    """``{path: lines}`` of the modules over MAX_LINES whose docstring has no ``One unit:`` reason."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        lines = len(source.splitlines())
        if lines > MAX_LINES and not _ONE_UNIT.search(ast.get_docstring(ast.parse(source)) or ""):
            found[path.relative_to(root).as_posix()] = lines
    return found


def test_modules_are_at_most_500_lines_or_say_why():
    found = too_long(REPO)
    assert not found, (
        f"modules over {MAX_LINES} lines: split them along a seam, or say in the module docstring "
        f"'One unit: <why>': " + ", ".join(f"{name} ({n} lines)" for name, n in sorted(found.items())))



def test_the_check_finds_a_long_module_unless_its_docstring_says_why(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    body = "x = 1\n" * MAX_LINES
    (package / "long.py").write_text('"""A module."""\n' + body, encoding="utf-8")
    (package / "unit.py").write_text('"""A module.\n\nOne unit: one table of constants read as a whole.\n"""\n' + body,
                                     encoding="utf-8")
    (package / "short.py").write_text('"""A module."""\n' + "x = 1\n" * (MAX_LINES - 1), encoding="utf-8")
    assert too_long(tmp_path, "pkg") == {"pkg/long.py": MAX_LINES + 1}
