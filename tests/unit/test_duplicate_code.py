"""No block of more than 10 lines is copied between modules of bigsister_ray (tests are not checked).

The check is pylint's duplicate-code checker (``pylint --disable=all --enable=duplicate-code
--min-similarity-lines=11`` ignoring imports, docstrings and comments), run through its own engine, the
``symilar`` command: comments and docstrings are ignored by its options, and import statements are blanked
beforehand with the standard ``ast`` module (pylint finds them with astroid, which takes minutes on this
package; blanking keeps every line number, so a report points at the real file and line). A copied block is
reported with both places; move the shared code to the module that owns it.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MIN_LINES = 11

#: Copies known today, to be removed, as ``frozenset({"path:first-last", "path:first-last"})`` pairs.
ALLOWED: frozenset[frozenset[str]] = frozenset()


def _without_imports(source: str) -> str:
    """``source`` with every import statement's lines left empty (line numbers unchanged)."""
    lines = source.splitlines(keepends=True)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for n in range(node.lineno - 1, node.end_lineno or node.lineno):
                lines[n] = "\n"
    return "".join(lines)


def copied_blocks(root: Path, package: str, work: Path) -> list[tuple[int, list[str]]]:
    """``(lines, ["path:first-last", ...])`` for each block of at least MIN_LINES lines found in more than one place."""
    names = sorted(p.relative_to(root).as_posix() for p in (root / package).rglob("*.py"))
    for name in names:
        target = work / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_without_imports((root / name).read_text(encoding="utf-8")), encoding="utf-8")
    symilar = Path(sys.executable).with_name("symilar")
    run = subprocess.run([str(symilar), "-d", str(MIN_LINES), "--ignore-comments", "--ignore-docstrings", *names],
                         cwd=work, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "TOTAL lines=" in run.stdout, run.stdout + run.stderr
    blocks: list[tuple[int, list[str]]] = []
    for line in run.stdout.splitlines():
        if head := re.match(r"^(\d+) similar lines in \d+ files$", line):
            blocks.append((int(head[1]), []))
        elif place := re.match(r"^==(.+):\[(\d+):(\d+)\]$", line):
            blocks[-1][1].append(f"{place[1]}:{int(place[2]) + 1}-{place[3]}")
    return blocks


def test_no_copied_blocks_outside_tests(tmp_path):
    found = copied_blocks(REPO, "bigsister_ray", tmp_path)
    new = [(n, places) for n, places in found if frozenset(places) not in ALLOWED]
    assert not new, "copied blocks (move the code to the module that owns the fact):\n" + "\n".join(
        f"{n} lines: " + ", ".join(places) for n, places in new)
