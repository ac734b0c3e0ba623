"""The package layers hold: import-linter's contracts in pyproject.toml pass, and no top-level package or module of
bigsister_ray imports, directly or through others, one that imports it back.

The contracts (``[tool.importlinter]``) are the layering of docs/architecture.md; ``lint-imports`` checks every
import, function-level ones included. The cycle check below reads the same graph with grimp and names a cycle
package by package, with one import that makes each step; it allows only the imports the acyclic contract ignores.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "bigsister_ray"


def _importlinter_config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]


def _top(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def test_import_contracts_pass():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([str(lint_imports), "--no-cache", "--no-logo"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, f"import contracts broken (fix the import, not the contract):\n{run.stdout}{run.stderr}"
    assert "0 broken" in run.stdout, run.stdout


def test_contracts_cover_every_top_level_package():
    """The layers contract is exhaustive over bigsister_ray: a new package or module must be given a layer."""
    contracts = {c["id"]: c for c in _importlinter_config()["contracts"]}
    layers = contracts["layers"]
    assert layers["type"] == "layers" and layers["containers"] == [PACKAGE] and layers["exhaustive"] is True
    assert contracts["acyclic-packages"]["type"] == "acyclic_siblings"
    named = {name.strip() for layer in layers["layers"] for name in layer.replace(":", "|").split("|")}
    graph = grimp.build_graph(PACKAGE)
    assert {_top(m) for m in graph.find_children(PACKAGE)} == named


def test_no_import_cycle_between_top_level_packages():
    ignored = set()
    for raw in next(c for c in _importlinter_config()["contracts"] if c["id"] == "acyclic-packages").get(
            "ignore_imports", []):
        importer, imported = (part.strip() for part in raw.split("->"))
        ignored.add((importer, imported))
    graph = grimp.build_graph(PACKAGE)
    edges: dict[str, dict[str, tuple[str, str]]] = {}
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            a, b = _top(module), _top(imported)
            if a != b and a != PACKAGE and b != PACKAGE and (module, imported) not in ignored:
                edges.setdefault(a, {}).setdefault(b, (module, imported))

    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, {})):
            if state.get(nxt) == 1:
                loop = path[path.index(nxt):] + [nxt]
                cycles.append(" -> ".join(f"{a} ({edges[a][b][0]} imports {edges[a][b][1]})"
                                          for a, b in zip(loop, loop[1:])))
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles between top-level packages:\n" + "\n".join(cycles)
