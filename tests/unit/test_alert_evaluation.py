"""Alert-level evaluation: hand-checked event matching, and `bigsister evaluate-alerts` on synthetic long videos."""

from __future__ import annotations


import pytest

from bigsister_ray.serve.evaluate_alerts import Detection, GroundTruth, run_rules, score_detections, sweep_rules
from bigsister_ray.alerts.rules import WindowScore
from bigsister_ray.config import AlertRule, AlertsConfig


def test_score_detections_by_hand():
    truths = [GroundTruth("a", "fight", 10, 20), GroundTruth("a", "fight", 40, 50), GroundTruth("b", "assault", 5, 9)]
    dets = [
        Detection("a", "fight", 12, 22, alert_s=14, peak_score=0.9),   # hits event 1, 4 s after its start
        Detection("a", "fight", 18, 25, alert_s=19, peak_score=0.8),   # also event 1 (a duplicate: still a TP)
        Detection("a", "assault", 41, 45, alert_s=43, peak_score=0.7),  # wrong class over event 2: false alarm
        Detection("b", "assault", 8, 12, alert_s=10, peak_score=0.9),  # hits event 3, 5 s after
        Detection("b", "fight", 100, 110, alert_s=104, peak_score=0.6),  # nothing there
    ]
    m = score_detections(dets, truths, hours=0.5)
    assert (m.detections, m.true_positives, m.false_alarms, m.events, m.events_found) == (5, 3, 2, 3, 2)
    assert m.precision == pytest.approx(0.6) and m.recall == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(2 * 0.6 * (2 / 3) / (0.6 + 2 / 3))
    assert m.false_alarms_per_hour == pytest.approx(4.0)
    assert m.median_time_to_alert_s == pytest.approx(4.5)  # median of 4 and 5
    empty = score_detections([], truths, hours=1.0)
    assert empty.precision is None and empty.recall == 0.0 and empty.false_alarms_per_hour == 0.0
    with pytest.raises(ValueError, match="camera-hours"):
        score_detections(dets, truths, hours=0)


def test_sweep_trades_false_alarms_for_recall():
    # one true event at 30-40 s (scores 0.8) and noise blips of 0.55 elsewhere, every 1 s for 100 s
    def score(t):
        if 30 <= t < 40:
            return 0.8
        return 0.55 if t % 10 == 3 else 0.1

    windows = {"v": [WindowScore(float(t), t + 2.0, {"fight": score(t)}) for t in range(100)]}
    truths = [GroundTruth("v", "fight", 30, 40)]
    base = AlertsConfig(default=AlertRule(cooldown_s=0, close_after=1))
    rows = sweep_rules(windows, truths, ["fight", "normal"], base, None, hours=100 / 3600, thresholds=[0.5, 0.7], kn=[(1, 1), (3, 5)])
    by = {(r["threshold"], r["k"]): r for r in rows}
    assert by[(0.5, 1)]["false_alarms"] == 9 and by[(0.5, 1)]["recall"] == 1.0  # every blip alerts
    assert by[(0.7, 1)]["false_alarms"] == 0 and by[(0.5, 3)]["false_alarms"] == 0  # a higher threshold or 3 of 5 suppress them
    assert by[(0.5, 3)]["recall"] == 1.0
    # k of n costs time: the alert goes out at the end of the 3rd hit window
    assert by[(0.5, 1)]["median_time_to_alert_s"] == pytest.approx(2.0)
    assert by[(0.5, 3)]["median_time_to_alert_s"] == pytest.approx(4.0)
    dets = run_rules(windows, ["fight", "normal"], base.model_copy(update={"default": AlertRule(threshold=0.7, k=1, n=1, cooldown_s=0)}))
    assert [(d.start_s, d.end_s, d.alert_s) for d in dets] == [(30.0, 41.0, 32.0)]
