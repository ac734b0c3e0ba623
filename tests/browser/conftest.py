"""The browser tier: real headless Chromium (the system's ``chromium``, Debian's package in CI) driven by
Playwright for Python, against the console served over real HTTP on 127.0.0.1.

Skipped, with the reason, where Playwright or a ``chromium`` executable is absent. Every test may save
screenshots with the ``shot`` fixture into ``tests/browser/artifacts/`` (git-ignored; CI keeps it as an
artifact), named after the test.
"""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="module")
def chromium():
    """A headless Chromium shared by a module's tests (one browser process; each test has its own context).

    Module-scoped, not session-scoped: Playwright's sync API keeps an asyncio loop running in the main thread
    while it is open, and every later module that runs a loop of its own (``asyncio.run``, Serve's sync
    handles) would refuse to start under it.
    """
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (pip install -e '.[dev]')")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("no chromium executable on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"], headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    """A fresh browser context (no cookies) and page; Playwright's ``expect`` waits up to 10 s by default here."""
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)
    context = chromium.new_context(viewport={"width": 1280, "height": 860})
    pg = context.new_page()
    yield pg
    context.close()


@pytest.fixture
def shot(request, page):
    """``shot(name)`` saves a full-page PNG of ``page`` as artifacts/<test>-<name>.png and returns its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    test = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)

    def save(name: str, target=None) -> Path:
        path = ARTIFACTS / f"{test}-{name}.png"
        (target or page).screenshot(path=str(path), full_page=True)
        return path

    return save


class LocalServer:
    """An ASGI app under uvicorn on 127.0.0.1 (a free port) in a thread of this process."""

    def __init__(self, app) -> None:
        import uvicorn

        self.config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name="console-uvicorn", daemon=True)

    def start(self) -> "LocalServer":
        self.thread.start()
        from tests._serve_support import wait_for

        wait_for(lambda: self.server.started, 30, 0.05, "uvicorn to start")
        return self

    @property
    def url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
