"""Window assembly (shared by the Windower and detect), AppArgs and the /detect result shape; no Ray."""

from __future__ import annotations

import numpy as np
import pytest

from bigsister_ray.clip import ClipSpec, window_starts

SPEC = ClipSpec(frames=8, fps=8.0, size=32, stride=4)


def _frames(n: int, start: int = 0) -> np.ndarray:
    """Frame i is filled with the value i (mod 256), so windows can be checked by content."""
    out = np.zeros((n, 32, 32, 3), np.uint8)
    for k in range(n):
        out[k] = (start + k) % 256
    return out


def test_windows_match_window_starts_whatever_the_chunking():
    from bigsister_ray.video.windows import WindowAssembler

    n = 50
    expected = window_starts(n, SPEC)
    for chunk in (1, 3, 4, 7, 50):
        asm = WindowAssembler(SPEC)
        got = []
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            got += asm.push(_frames(hi - lo, lo), [k / SPEC.fps for k in range(lo, hi)], decoded_at=100.0 + lo)
        assert [int(w.frames[0, 0, 0, 0]) for w in got] == list(expected), chunk
        assert [w.index for w in got] == list(range(len(expected)))
        for w in got:
            first = int(w.frames[0, 0, 0, 0])
            assert w.frames.shape == (8, 32, 32, 3)
            assert [int(f[0, 0, 0]) for f in w.frames] == list(range(first, first + 8))
            assert w.start_s == pytest.approx(first / SPEC.fps)
            assert w.end_s == pytest.approx((first + 8) / SPEC.fps)
        assert asm.flush() == []  # long enough: nothing looped


def test_a_window_never_spans_a_timestamp_gap():
    """Frames 0..5, then an outage of 2 s, then frames again: no window mixes the two sides of the gap."""
    from bigsister_ray.video.windows import WindowAssembler

    asm = WindowAssembler(SPEC)
    step = 1 / SPEC.fps
    before = [k * step for k in range(6)]  # 6 frames: not yet a window
    after = [5.0 + k * step for k in range(12)]
    got = asm.push(_frames(6, 0), before) + asm.push(_frames(12, 100), after)
    assert asm.gaps == 1
    assert [w.start_s for w in got] == pytest.approx([5.0, 5.0 + 4 * step])
    for w in got:
        assert all(int(f[0, 0, 0]) >= 100 for f in w.frames), "a window joined frames across the gap"
        assert w.end_s - w.start_s == pytest.approx(SPEC.frames * step)
    # A step of exactly one sample period (or within 1.5 periods) is not a gap.
    asm2 = WindowAssembler(SPEC)
    assert len(asm2.push(_frames(8), [k * step * 1.4 for k in range(8)])) == 1 and asm2.gaps == 0


def test_ready_at_is_the_decode_time_of_the_newest_frame():
    from bigsister_ray.video.windows import WindowAssembler

    asm = WindowAssembler(SPEC)
    assert asm.push(_frames(6), [k / 8 for k in range(6)], decoded_at=10.0) == []
    (w,) = asm.push(_frames(2, 6), [6 / 8, 7 / 8], decoded_at=11.5)
    assert w.ready_at == 11.5


def test_a_short_input_gets_one_looped_window():
    from bigsister_ray.video.windows import iter_windows

    (w,) = list(iter_windows([(_frames(3), [0.0, 0.125, 0.25])], SPEC))
    assert [int(f[0, 0, 0]) for f in w.frames] == [0, 1, 2, 0, 1, 2, 0, 1]
    assert (w.start_s, w.end_s) == (0.0, pytest.approx(0.375))
    assert list(iter_windows([], SPEC)) == []


def test_bad_frames_are_refused_with_what_was_expected():
    from bigsister_ray.video.windows import WindowAssembler

    asm = WindowAssembler(SPEC)
    with pytest.raises(ValueError, match=r"N x 32 x 32 x 3 uint8"):
        asm.push(np.zeros((2, 64, 64, 3), np.uint8), [0.0, 0.1])
    with pytest.raises(ValueError, match="one timestamp per frame"):
        asm.push(_frames(2), [0.0])


def test_detection_result_applies_the_live_rules():
    from bigsister_ray.config import AlertsConfig
    from bigsister_ray.serve.detect import detection_result, scores_dict

    labels = ["fight", "normal"]
    rows = []
    for i in range(20):
        p = 0.9 if 6 <= i < 12 else 0.05
        rows.append((i * 0.5, i * 0.5 + 1.0, scores_dict(labels, [p, 1 - p])))
    out = detection_result(rows, labels, AlertsConfig(), {"fight": 0.5})
    assert len(out["windows"]) == 20 and out["windows"][6]["scores"]["fight"] == pytest.approx(0.9)
    assert [(e["label"], e["start_s"], e["end_s"]) for e in out["events"]] == [("fight", 3.0, 6.5)]
    assert out["events"][0]["peak_score"] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="expected 2 probabilities"):
        scores_dict(labels, [1.0])


def test_app_args_build_settings_from_file_overrides_and_checkpoint(tmp_path):
    from bigsister_ray.config import Settings
    from bigsister_ray.errors import ConfigError
    from bigsister_ray.serve.app import AppArgs, deployment_options

    cfg = tmp_path / "c.yaml"
    cfg.write_text("serve:\n  port: 9001\n  classifier:\n    max_batch_size: 4\nalerts:\n  slack:\n    token: xoxb-secret-token\n")
    args = AppArgs(config=cfg, checkpoint=tmp_path / "m.pt", settings={"serve": {"classifier": {"num_gpus": 1}}})
    s = args.to_settings()
    assert (s.serve.port, s.serve.classifier.max_batch_size, s.serve.classifier.num_gpus) == (9001, 4, 1)
    assert s.serve.checkpoint == tmp_path / "m.pt"
    assert s.alerts.slack.token.get_secret_value() == "xoxb-secret-token"
    again = AppArgs.from_settings(s).to_settings()  # what run_serve hands build_app: secrets survive
    assert again.alerts.slack.token.get_secret_value() == "xoxb-secret-token" and again == s
    opts = deployment_options(s)["Classifier"]
    assert opts["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1.0}
    assert opts["user_config"] == {"max_batch_size": 4, "batch_wait_timeout_s": 0.05, "stuck_after_s": 120.0}
    assert opts["autoscaling_config"]["max_replicas"] == 1
    with pytest.raises(ConfigError, match="serve.classifier.bogus"):
        AppArgs(settings={"serve": {"classifier": {"bogus": 1}}}).to_settings()
    with pytest.raises(Exception, match="extra"):
        AppArgs.model_validate({"checkpont": "x"})
    assert isinstance(AppArgs().to_settings(), Settings)


def test_build_app_without_a_checkpoint_says_how_to_set_one():
    from bigsister_ray.errors import ConfigError
    from bigsister_ray.serve.app import build_app

    with pytest.raises(ConfigError, match="--checkpoint"):
        build_app({})


def test_public_surface_of_the_serve_package():
    import importlib

    import bigsister_ray.serve as serve_pkg

    assert sorted(serve_pkg.__all__) == ["AppArgs", "build_app", "deployment_options", "detect_file", "run_serve"]
    for name in serve_pkg.__all__:
        assert callable(getattr(serve_pkg, name)), name
    for mod in ("api", "app", "batcher", "classifier", "context", "detect", "ingress", "metrics", "ownership",
                "schemas", "shard", "routers"):
        module = importlib.import_module(f"bigsister_ray.serve.{mod}")
        assert module.__all__ and all(hasattr(module, n) for n in module.__all__), mod
