"""Helpers of the web console tests: an in-process Ingress app on a temporary database, seeded incidents, logins.

Used by tests/integration/test_console.py (FastAPI's TestClient) and tests/browser/ (the same app under uvicorn on
127.0.0.1, driven by Chromium).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

__all__ = ["LINK_SECRET", "console_settings", "console_app", "seed_incident", "write_clip", "csrf_of", "login"]

#: The signed-link key of the console tests (32+ characters).
LINK_SECRET = "console-test-link-secret-0123456789abcdef"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def console_settings(tmp: Path, **ui: Any):
    """Settings of the console tests: SQLite, media and keys in ``tmp`` (tests/_serve_support.py's keys), signed
    links on, ``serve.ui`` from ``ui``."""
    from tests._serve_support import serve_settings

    settings = serve_settings(tmp, tmp / "no-checkpoint", ui=ui, links={"secret": LINK_SECRET})
    settings.incidents.media_dir = tmp / "evidence"
    return settings


def console_app(settings):
    """The real Ingress app (tests/_handles.py's stand-in handles behind it) and its store."""
    from tests._handles import ingress_app

    app = ingress_app(settings)
    return app, app.state.ctx.store


def seed_incident(store, *, stream_id: str = "cam-1", name: str = "gate camera", label: str = "fight",
                  started: datetime | None = None, snapshot: bytes | None = None, key: str | None = None) -> int:
    """Store one incident (a fight peaking at 0.91, a 9-point timeline); returns its id."""
    from bigsister_ray.incidents.models import IncidentCreate

    started = started or datetime.now(timezone.utc) - timedelta(minutes=3)
    timeline = [[float(t), s] for t, s in zip(range(0, 9), (0.1, 0.2, 0.5, 0.8, 0.91, 0.85, 0.6, 0.3, 0.1))]
    return store.record_event(IncidentCreate(
        stream_id=stream_id, stream_name=name, location="north gate", label=label, severity="medium",
        started_at=started, start_s=2.0, end_s=7.0, peak_score=0.91, peak_start_s=4.0, peak_end_s=5.0,
        event_key=key or f"{stream_id}:{label}:{started.timestamp()}", timeline=timeline, snapshot=snapshot))


def write_clip(settings, store, incident_id: int, seconds: float = 2.0) -> Path:
    """A real H.264 MP4 of the synthetic fight, stored as the incident's evidence clip."""
    from bigsister_ray.data.synth import render_video

    relative = f"{incident_id}/clip.mp4"
    path = Path(settings.incidents.media_dir) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    render_video(path, "fight", seconds, fps=8.0, size=(160, 120), seed=7, abnormal_span=(0.0, seconds))
    store.set_clip(incident_id, relative)
    return path


def csrf_of(html: str) -> str:
    """The form token in a console page."""
    found = _CSRF.search(html)
    assert found, "no csrf_token field in the page"
    return found.group(1)


def login(client, key: str, next_path: str = "/ui/incidents"):
    """Log ``client`` (a TestClient or httpx client) in with ``key``; returns the POST's response (a 303)."""
    page = client.get("/ui/login", params={"next": next_path})
    assert page.status_code == 200, page.text
    return client.post("/ui/login", data={"api_key": key, "next": next_path, "csrf_token": csrf_of(page.text)},
                       follow_redirects=False)
