"""Helpers shared by the serving tests: tiny checkpoints, test settings, starting the app on the shared Ray.

Everything is real: a real tiny3d checkpoint, a real Serve app on the session's local Ray, real HTTP.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any, Callable

from bigsister_ray.clip import ClipSpec

__all__ = [
    "TINY_SPEC",
    "WRITE_KEY",
    "READ_KEY",
    "make_checkpoint",
    "test_settings",
    "free_port",
    "start_app",
    "wait_for",
]

#: 8 frames of 32 px at 8 fps, a window every 4 frames (0.5 s): cheap enough for 2 shared CPUs.
TINY_SPEC = ClipSpec(frames=8, fps=8.0, size=32, stride=4)
WRITE_KEY = "test-write-key-0123456789"
READ_KEY = "test-read-key-0123456789"


def make_checkpoint(path: Path, spec: ClipSpec = TINY_SPEC, labels=("fight", "normal"), model=None,
                    thresholds: dict[str, float] | None = None, seed: int = 0) -> Path:
    """Save a tiny3d checkpoint (random weights unless ``model`` is given); returns the model file."""
    import torch

    from bigsister_ray.models import CheckpointMeta, build_model, get_model_spec, save_checkpoint

    if model is None:
        torch.manual_seed(seed)
        model = build_model("tiny3d", len(labels))
    meta = CheckpointMeta(model_name="tiny3d", labels=list(labels), clip=spec, norm=get_model_spec("tiny3d").norm,
                          data_fingerprint=None, thresholds=dict(thresholds or {}), epoch=0)
    return save_checkpoint(path, model, meta)


def test_settings(tmp: Path, checkpoint: Path, **serve_overrides: Any):
    """Settings for a test app: SQLite in ``tmp``, media root ``tmp/media``, known keys, loopback allowed."""
    from bigsister_ray.config import Settings

    (tmp / "media").mkdir(parents=True, exist_ok=True)
    serve = {
        "checkpoint": str(checkpoint),
        "upload_max_bytes": 2 * 1024 * 1024,
        "classifier": {"max_batch_size": 8, "batch_wait_timeout_s": 0.02, "num_cpus": 0.5},
        "streams": {"media_root": str(tmp / "media"), "backoff_initial_s": 0.5, "backoff_max_s": 8.0,
                    "healthy_after_s": 1.0, "watchdog_s": 3.0, "open_timeout_s": 3.0},
    }
    for key, value in serve_overrides.items():
        serve[key] = value
    return Settings(
        serve=serve,
        database={"url": f"sqlite:///{tmp / 'bigsister.db'}"},
        alerts={"alert_file": str(tmp / "alerts.jsonl"), "notifier": "console"},
        auth={"keys": [{"name": "writer", "key": WRITE_KEY, "scope": "write"},
                       {"name": "reader", "key": READ_KEY, "scope": "read"}],
              "allow_loopback": True},
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_port() -> int:
    """Start Serve on a free port if it is not running; return its HTTP port."""
    from ray import serve
    from ray.serve.context import _get_global_client

    try:
        client = _get_global_client()
    except Exception:  # RayServeException when no controller runs yet
        client = None
    if client is None:
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
        client = _get_global_client()
    return int(client.http_config.port)


def start_app(settings, name: str, resume_streams: bool = True) -> str:
    """Run the serving app under ``name`` (route prefix /) on the shared Ray; returns its base URL."""
    from ray import serve

    from bigsister_ray.serve.app import AppArgs, build_app

    port = _serve_port()
    serve.run(build_app(AppArgs.from_settings(settings, resume_streams=resume_streams)), name=name, route_prefix="/")
    return f"http://127.0.0.1:{port}"


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.5, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last value: {last!r}")
