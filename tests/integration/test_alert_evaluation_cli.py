"""bigsister evaluate-alerts end to end on synthetic long videos."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bigsister_ray.serve.evaluate_alerts import GroundTruth, evaluate_alerts, run_rules, score_detections
from bigsister_ray.alerts.rules import WindowScore
from bigsister_ray.config import Settings


@pytest.mark.slow
def test_evaluate_alerts_command_on_synthetic_long_videos(tmp_path):
    import torch

    from tests._serve_support import make_checkpoint

    torch.set_num_threads(1)
    ckpt = make_checkpoint(tmp_path / "ckpt", labels=("fight", "assault", "normal"), thresholds={"fight": 0.4, "assault": 0.4})
    settings = Settings(alerts={"default": {"k": 2, "n": 3, "cooldown_s": 5}})
    summary = evaluate_alerts(ckpt, tmp_path / "out", settings, videos=2, seconds=20.0, seed=3,
                              thresholds=[0.3, 0.5, None], kn=[(1, 1), (2, 3)])
    assert summary.videos == 2 and summary.events == 2
    assert summary.hours == pytest.approx(40 / 3600, rel=0.05)
    for path in (summary.report, summary.metrics_json, summary.plot):
        assert path.is_file() and path.stat().st_size > 0
    assert summary.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(summary.metrics_json.read_text())
    assert len(data["sweep"]) == 6 and {r["threshold"] for r in data["sweep"]} == {0.3, 0.5, "calibrated"}
    assert sorted(t["label"] for t in data["ground_truth"]) == ["assault", "fight"]
    # the figures are recomputable from the stored windows: replaying the configured rules gives the same
    windows = {v: [WindowScore(s, e, sc) for s, e, sc in ws] for v, ws in data["windows"].items()}
    truths = [GroundTruth(**t) for t in data["ground_truth"]]
    again = score_detections(run_rules(windows, data["labels"], settings.alerts, data["checkpoint_thresholds"]), truths, data["hours"])
    assert again.detections == data["current"]["detections"] and again.false_alarms == data["current"]["false_alarms"]
    report = summary.report.read_text()
    assert "false alarms" in report and "tradeoff.png" in report and report.count("\n| ") == 1 + 6

    # and the CLI writes the same kind of output
    from bigsister_ray.cli import app

    res = CliRunner().invoke(app, ["evaluate-alerts", "--checkpoint", str(ckpt), "--data", str(tmp_path / "out" / "videos"),
                                   "--out", str(tmp_path / "cli"), "--thresholds", "0.5", "--kn", "2/3"])
    assert res.exit_code == 0, res.output
    assert "false alarms per camera-hour" in res.output and (tmp_path / "cli" / "tradeoff.png").is_file()
