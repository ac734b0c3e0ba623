"""Tests do not wait on luck: no ``time.sleep`` or ``asyncio.sleep`` in tests/ except where waiting is the point.

Allowed: inside a helper that polls a condition until a deadline (``wait_for``), and in the scripted behaviour of a
local test server or another stand-in that is slow on purpose. Everywhere else a test waits for an event, polls
with ``wait_for`` / Ray's ``wait_for_condition``, blocks on Ray's ``SignalActor``, or is given a clock. Code a test
runs as a separate program from a string is that program's own. tests/browser is left to its own rules (a browser
is driven by Playwright's waits).
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
SKIP = ("browser/",)

#: ``(file under tests/, function)``: the helpers that poll until a deadline and the stand-ins that are slow on
#: purpose (a local server's script, a consumer, a decoder or a model forward that takes time).
ALLOWED: frozenset[tuple[str, str]] = frozenset({
    ("_serve_support.py", "wait_for"),
    ("integration/test_stream_runner.py", "wait_for"),
    ("integration/test_jobs.py", "_wait_http"),
    ("integration/test_jobs.py", "_run"),
    ("integration/_multinode_driver.py", "_poll"),
    ("integration/test_alert_delivery.py", "wait_until"),
    ("integration/test_stream_policy.py", "_RtspRedirector._serve"),
    ("integration/test_stream_runner.py", "Collector.__call__"),
    ("integration/test_classifier_batching.py", "_run.slow_forward"),
    ("integration/test_detect_decode_timeout.py",
     "test_a_timed_out_decode_stops_its_thread_and_other_routes_answer_meanwhile.slow_scale"),
})


def _is_sleep(call: ast.Call, sleep_names: set[str]) -> bool:
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr == "sleep":
        return isinstance(func.value, ast.Name) and func.value.id in {"time", "asyncio", "anyio", "trio"}
    return isinstance(func, ast.Name) and func.id in sleep_names


def sleeps(source: str) -> list[tuple[str, int]]:
    """``(enclosing function, line)`` of every sleep call in ``source`` (``<module>`` outside functions)."""
    tree = ast.parse(source)
    names = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
             and node.module in {"time", "asyncio", "anyio", "trio"} for alias in node.names if alias.name == "sleep"}
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(child, [*scope, child.name])
                continue
            if isinstance(child, ast.Call) and _is_sleep(child, names):
                found.append((".".join(scope) or "<module>", child.lineno))
            visit(child, scope)

    visit(tree, [])
    return found


def test_sleeps_are_only_in_polling_helpers_and_scripted_servers():
    bad = []
    for path in sorted(TESTS.rglob("*.py")):
        name = path.relative_to(TESTS).as_posix()
        if name.startswith(SKIP):
            continue
        for scope, line in sleeps(path.read_text(encoding="utf-8")):
            if (name, scope) not in ALLOWED:
                bad.append(f"tests/{name}:{line} in {scope}")
    assert not bad, ("sleeps outside a polling helper or a scripted server (wait for an event, poll with "
                     "tests._serve_support.wait_for, or inject a clock):\n" + "\n".join(bad))


def test_every_allowed_place_still_sleeps():
    """An entry of ALLOWED whose sleep is gone (or whose function was renamed) leaves the list."""
    present = {(path.relative_to(TESTS).as_posix(), scope) for path in TESTS.rglob("*.py")
               for scope, _ in sleeps(path.read_text(encoding="utf-8"))}
    assert not ALLOWED - present, f"no longer sleeping, remove from ALLOWED: {sorted(ALLOWED - present)}"


def test_the_scan_finds_every_spelling_of_sleep():
    source = (
        "import asyncio, time\nfrom time import sleep as pause\n"
        "def a():\n    time.sleep(1)\n"
        "async def b():\n    await asyncio.sleep(0)\n"
        "class C:\n    def d(self):\n        pause(2)\n"
        "time.sleep(3)\n"
    )
    assert sleeps(source) == [("a", 4), ("b", 6), ("C.d", 9), ("<module>", 10)]
