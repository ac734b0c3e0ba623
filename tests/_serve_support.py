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
    "serve_settings",
    "free_port",
    "start_app",
    "wait_for",
    "motion_tiny3d",
    "head_features",
    "fit_head",
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


def serve_settings(tmp: Path, checkpoint: Path, **serve_overrides: Any):
    """Settings for a test app: SQLite in ``tmp``, media root ``tmp/media``, evidence clips in ``tmp/incident-media``,
    known keys, loopback allowed."""
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
    serve["shards"] = {"journal_dir": str(tmp / "journal"), **serve.get("shards", {})}
    return Settings(
        serve=serve,
        database={"url": f"sqlite:///{tmp / 'bigsister.db'}"},
        incidents={"media_dir": str(tmp / "incident-media")},
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


def start_app(settings, name: str) -> str:
    """Run the serving app under ``name`` (route prefix /) on the shared Ray; returns its base URL."""
    from ray import serve

    from bigsister_ray.serve.app import AppArgs, build_app

    port = _serve_port()
    serve.run(build_app(AppArgs.from_settings(settings)), name=name, route_prefix="/")
    return f"http://127.0.0.1:{port}"


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.5, what: str = "condition",
             describe: Callable[[], Any] | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds, with
    ``describe()`` in the message when given (the state that explains a timeout)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    detail = f"; {describe()}" if describe is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last value: {last!r}{detail}")


# ---------------------------------------------------------------------------------------------- test-only model
def motion_tiny3d(labels=("fight", "normal")):
    """TEST-ONLY: a real registry ``tiny3d`` whose weights are set by hand to measure motion energy.

    Channels 0/1 carry relu(+/- frame difference) (the stem's temporal kernel), channels 2/3 carry
    relu(+/- frame) (to cancel the zero-padded first frame's term); every stage averages them 3x3 with
    stride 2 and the head pools them. Only the linear head is then trained (:func:`fit_head`), so the
    checkpoint is an ordinary tiny3d checkpoint that any process (Serve replicas included) loads, and that
    responds to how much the scene moves: the synthetic generator's fights move more than its walking.
    """
    import torch

    from bigsister_ray.models import build_model
    from bigsister_ray.models.tiny3d import Block

    model = build_model("tiny3d", len(labels)).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv3d):
                m.weight.zero_()
            elif isinstance(m, torch.nn.BatchNorm3d):
                m.weight.fill_(1.0)
                m.bias.zero_()
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
        coefs = ([-1.0, 1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 0.0])  # over t-1, t, t+1
        convs = [m for m in model.stem.modules() if isinstance(m, torch.nn.Conv3d)]
        if convs[0].kernel_size[0] == 3:  # one dense 3x3x3 stem conv: time, grey and 3x3 average in one kernel
            for c, k in enumerate(coefs):
                for t in range(3):
                    convs[0].weight[c, :, t] = k[t] / 27.0
        else:  # (2+1)D stem: spatial 1x3x3 average, then a depthwise temporal conv
            for c, k in enumerate(coefs):
                convs[0].weight[c, :, 0] = 1.0 / 27.0
                convs[1].weight[c, 0, :, 0, 0] = torch.tensor(k)
        for stage in model.stages:
            for i, block in enumerate(stage):
                assert isinstance(block, Block)
                if i > 0:
                    continue  # identity shortcut, zero branch: passes the channels through
                for c in range(4):
                    block.expand[0].weight[c, c] = 1.0
                    block.depthwise[0].weight[c, 0, 1] = 1.0 / 9.0  # centre frame, 3x3 spatial average
                    block.project[0].weight[c, c] = 1.0
        for c in range(4):
            model.head.pre[0].weight[c, c] = 1.0
    return model


def head_features(model, windows) -> "torch.Tensor":
    """Pooled features of uint8 windows ``N x T x S x S x 3`` (before the linear head)."""
    import torch

    from bigsister_ray.clip import to_model_input
    from bigsister_ray.models import get_model_spec

    x = to_model_input(windows, get_model_spec("tiny3d").norm)
    with torch.no_grad():
        h = model.head
        return h.pool(h.pre(model.stages(model.stem(x)))).flatten(1)


def fit_head(model, windows, targets, steps: int = 500) -> float:
    """Train only the linear head (logistic regression on the motion features); returns training accuracy."""
    import torch

    feats = head_features(model, windows)
    scale = feats.abs().amax(0).clamp_min(1e-6)
    y = torch.as_tensor(targets, dtype=torch.long)
    fc = model.head.fc
    w = torch.zeros_like(fc.weight, requires_grad=True)
    b = torch.zeros_like(fc.bias, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.1)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy((feats / scale) @ w.T + b, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        fc.weight.copy_(w / scale)
        fc.bias.copy_(b)
        return float(((feats @ fc.weight.T + fc.bias).argmax(1) == y).float().mean())


# ---------------------------------------------------------------------------------------------- grey-ramp detector
def ramp_windows(spec: ClipSpec = TINY_SPEC, period: int = 40):
    """Every window of one period of tests/_stream_server.py's camera (frame ``i`` a flat grey of
    ``frame_level(i)``), cut as a shard cuts them (``spec.frames`` frames every ``spec.stride``), and whether each
    is "bright" (its mean level at least 118: the second half of the ramp)."""
    import numpy as np

    from tests._stream_server import frame_level

    windows, bright = [], []
    for start in range(0, period, spec.stride):
        levels = [frame_level(start + k) for k in range(spec.frames)]
        windows.append(np.stack([np.full((spec.size, spec.size, 3), lv, np.uint8) for lv in levels]))
        bright.append(sum(levels) / len(levels) >= 118)
    return np.stack(windows), bright


def ramp_checkpoint(path: Path, spec: ClipSpec = TINY_SPEC, threshold: float = 0.5) -> Path:
    """TEST-ONLY: a tiny3d checkpoint (``fight``, ``normal``) that scores ``fight`` high on the bright half of the
    test camera's grey ramp and low on the dark half: a camera of tests/_stream_server.py then opens and closes
    one incident every ramp period (40 frames) under k=1, n=1, close_after=1 rules, at known stream times.
    The motion features of :func:`motion_tiny3d` with a linear head fitted on the ramp's own windows."""
    windows, bright = ramp_windows(spec)
    model = motion_tiny3d()
    acc = fit_head(model, windows, [0 if b else 1 for b in bright], steps=800)
    if acc < 1.0:
        raise AssertionError(f"the grey-ramp head does not separate the ramp's windows (training accuracy {acc:.2f})")
    return make_checkpoint(path, spec, model=model, thresholds={"fight": threshold})
