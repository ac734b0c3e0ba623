"""Alert rules: k-of-n, hysteresis, cooldown, overrides, severity, checkpoint thresholds (pure, no I/O)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bigsister_ray.alerts.rules import RuleEngine, WindowScore, detect_events, overrides_from_options
from bigsister_ray.errors import ConfigError
from bigsister_ray.config import AlertRule, AlertsConfig

LABELS = ["fight", "assault", "normal"]
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def windows(scores, label="fight", step=1.0, length=2.0, at=False):
    out = []
    for i, s in enumerate(scores):
        when = T0 + timedelta(seconds=i * step + length) if at else None
        out.append(WindowScore(i * step, i * step + length, {label: s, "normal": 1 - s}, at=when))
    return out


def feed(engine, ws, stream="cam", overrides=None):
    events = []
    for w in ws:
        events.extend(engine.update(stream, w, overrides))
    return events


def alerts(**default):
    return AlertsConfig(default=AlertRule(**{"threshold": 0.5, "k": 3, "n": 5, "close_after": 2, "cooldown_s": 0, **default}))


def test_k_of_n_opens_on_the_kth_hit_not_before():
    engine = RuleEngine(LABELS, alerts())
    ev = feed(engine, windows([0.9, 0.1, 0.9, 0.1]))
    assert ev == []  # 2 hits of 4
    ev = engine.update("cam", WindowScore(4, 6, {"fight": 0.8}))
    assert [e.kind for e in ev] == ["opened"]
    assert ev[0].label == "fight" and ev[0].start_s == 0.0 and ev[0].peak_score == pytest.approx(0.9)
    assert ev[0].timeline[0] == (0.0, 0.9) and len(ev[0].timeline) == 5


def test_hits_that_slide_out_of_the_last_n_do_not_count():
    engine = RuleEngine(LABELS, alerts())
    # hits at 0, 1, then 4 misses: the first two leave the window of 5 before a third arrives
    assert feed(engine, windows([0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.9])) == []


def test_hysteresis_keeps_open_between_thresholds_and_closes_after_m_low():
    engine = RuleEngine(LABELS, alerts(close_threshold_ratio=0.6))  # low threshold 0.3
    ev = feed(engine, windows([0.9, 0.9, 0.9, 0.4, 0.35, 0.4, 0.2, 0.9, 0.1, 0.1]))
    kinds = [e.kind for e in ev]
    assert kinds == ["opened", "closed"]
    closed = ev[-1]
    # 0.4/0.35 are below 0.5 but above 0.3: still open; 0.2 alone (1 < close_after=2) does not close; the
    # 0.9 resets the count; two 0.1s close it. The incident ends at the end of its last window >= 0.3.
    assert closed.start_s == 0.0 and closed.end_s == 7.0 + 2.0
    assert closed.peak_score == pytest.approx(0.9)
    assert engine.open_incidents("cam") == []


def test_updated_event_when_the_peak_rises():
    engine = RuleEngine(LABELS, alerts())
    ev = feed(engine, windows([0.6, 0.6, 0.6, 0.7, 0.95, 0.8]))
    assert [e.kind for e in ev] == ["opened", "updated", "updated"]
    assert ev[-1].peak_score == pytest.approx(0.95) and ev[-1].peak_start_s == 4.0 and ev[-1].peak_end_s == 6.0
    assert len({e.key for e in ev}) == 1 and ev[0].key.startswith("cam:fight:")


def test_burst_of_windows_gives_one_incident_with_cooldown():
    engine = RuleEngine(LABELS, alerts(cooldown_s=30, close_after=1))
    # a 60-window flickering burst: high, low, high, high, low ...
    burst = [0.9 if i % 3 != 1 else 0.1 for i in range(60)]
    ev = feed(engine, windows(burst))
    opened = [e for e in ev if e.kind == "opened"]
    # close_after=1 closes on each low window; the cooldown (30 s) keeps the next 30 windows from reopening
    assert len(opened) == 2
    assert opened[1].start_s >= [e for e in ev if e.kind == "closed"][0].end_s + 30 - 3


def test_without_cooldown_the_same_burst_reopens_many_times():
    engine = RuleEngine(LABELS, alerts(cooldown_s=0, close_after=1, k=2, n=3))
    burst = [0.9 if i % 3 != 1 else 0.1 for i in range(60)]
    opened = [e for e in feed(engine, windows(burst)) if e.kind == "opened"]
    assert len(opened) > 5  # the control: the cooldown above is what suppresses


def test_per_class_rule_and_per_stream_override():
    cfg = AlertsConfig(
        default=AlertRule(threshold=0.5, k=3, n=5, cooldown_s=0),
        per_class={"assault": AlertRule(threshold=0.5, k=1, n=1, cooldown_s=0)},
    )
    engine = RuleEngine(LABELS, cfg)
    ev = engine.update("cam", WindowScore(0, 2, {"assault": 0.7, "fight": 0.7}))
    assert [(e.kind, e.label) for e in ev] == [("opened", "assault")]
    # a stream that wants fight at k=1 and nothing from assault below 0.99
    strict = {"fight": AlertRule(threshold=0.5, k=1, n=1), "assault": AlertRule(threshold=0.99, k=1, n=1)}
    ev = engine.update("door", WindowScore(0, 2, {"assault": 0.7, "fight": 0.7}), strict)
    assert [(e.kind, e.label) for e in ev] == [("opened", "fight")]
    # "*" overrides every class of that stream
    ev = engine.update("yard", WindowScore(0, 2, {"assault": 0.7, "fight": 0.7}), {"*": AlertRule(threshold=0.9, k=1, n=1)})
    assert ev == []


def test_severity_per_class_and_rule():
    cfg = AlertsConfig(default=AlertRule(threshold=0.5, k=1, n=1), per_class={"fight": AlertRule(threshold=0.5, k=1, n=1, severity="critical")})
    engine = RuleEngine(["assault", "fight", "drunken", "normal"], cfg)
    ev = {e.label: e.severity for e in engine.update("cam", WindowScore(0, 2, {"assault": 0.9, "fight": 0.9, "drunken": 0.9}))}
    assert ev == {"assault": "high", "fight": "critical", "drunken": "low"}


def test_thresholds_from_the_checkpoint_unless_the_rule_sets_one():
    cfg = AlertsConfig(default=AlertRule(k=1, n=1), default_threshold=0.6)
    engine = RuleEngine(LABELS, cfg, thresholds={"fight": 0.3})
    assert engine.rule_for("fight").threshold == 0.3  # calibrated
    assert engine.rule_for("assault").threshold == 0.6  # no calibration: the default
    assert [e.label for e in engine.update("cam", WindowScore(0, 2, {"fight": 0.35, "assault": 0.55}))] == ["fight"]
    ruled = RuleEngine(LABELS, AlertsConfig(default=AlertRule(k=1, n=1, threshold=0.4)), thresholds={"fight": 0.3})
    assert ruled.rule_for("fight").threshold == 0.4
    assert ruled.rule_for("fight").close_threshold == pytest.approx(0.4 * 0.7)
    with pytest.raises(ValueError, match="must be in"):
        RuleEngine(LABELS, cfg, thresholds={"fight": 1.5})


def test_normal_is_never_alerted_and_missing_or_nan_scores_are_misses():
    engine = RuleEngine(LABELS, alerts(k=1, n=1))
    assert engine.update("cam", WindowScore(0, 2, {"normal": 1.0})) == []
    assert engine.update("cam", WindowScore(1, 3, {"fight": float("nan")})) == []
    with pytest.raises(ValueError, match="at least one abnormal"):
        RuleEngine(["normal"], alerts())


def test_streams_are_independent_flush_and_reset():
    engine = RuleEngine(LABELS, alerts(k=1, n=1))
    assert [e.kind for e in engine.update("a", WindowScore(0, 2, {"fight": 0.9}))] == ["opened"]
    assert engine.update("b", WindowScore(0, 2, {"fight": 0.1})) == []
    assert engine.flush("b") == []
    flushed = engine.flush("a")
    assert [(e.kind, e.stream_id) for e in flushed] == [("closed", "a")]
    engine.update("a", WindowScore(5, 7, {"fight": 0.9}))
    engine.reset("a")
    assert engine.open_incidents("a") == [] and engine.flush("a") == []


def test_wall_clock_times_follow_the_windows():
    engine = RuleEngine(LABELS, alerts())
    ev = feed(engine, windows([0.9, 0.9, 0.9], at=True))
    assert ev[0].at == T0 + timedelta(seconds=2 + 2)  # the end of the third window
    assert ev[0].started_at == T0  # the start of the first hit


def test_detect_events_matches_the_live_engine():
    cfg = alerts()
    ws = windows([0.1, 0.9, 0.9, 0.9, 0.2, 0.1, 0.1, 0.1, 0.8, 0.9, 0.9])
    found = detect_events(list(reversed(ws)), LABELS, cfg)  # order of input does not matter
    assert [(e.label, e.start_s, e.end_s) for e in found] == [("fight", 1.0, 5.0), ("fight", 8.0, 12.0)]
    assert found[0].to_dict() == {"label": "fight", "start_s": 1.0, "end_s": 5.0, "peak_score": 0.9}
    live = RuleEngine(LABELS, cfg)
    closed = [e for e in feed(live, ws) if e.kind == "closed"] + live.flush("cam")
    assert [(e.start_s, e.end_s) for e in closed] == [(e.start_s, e.end_s) for e in found]


def test_rule_config_rejects_k_greater_than_n():
    with pytest.raises(ValueError, match="k \\(4\\) must be <= n \\(3\\)"):
        AlertRule(k=4, n=3)


@settings(max_examples=150, deadline=None)
@given(
    k=st.integers(1, 6),
    extra=st.integers(0, 4),
    hits=st.lists(st.booleans(), min_size=0, max_size=60),
)
def test_never_opens_on_fewer_than_k_hits_in_the_last_n(k, extra, hits):
    n = k + extra
    engine = RuleEngine(LABELS, AlertsConfig(default=AlertRule(threshold=0.5, k=k, n=n, cooldown_s=0)))
    for i, hit in enumerate(hits):
        for e in engine.update("cam", WindowScore(float(i), i + 1.0, {"fight": 0.9 if hit else 0.1})):
            if e.kind == "opened":
                last_n = hits[max(0, i - n + 1): i + 1]
                assert sum(last_n) >= k, (k, n, hits[: i + 1])


def test_overrides_from_stream_options():
    rules = overrides_from_options({"alerts": {"fight": {"k": 1, "n": 1, "threshold": 0.4}, "*": {"threshold": 0.95}}, "other": 1})
    engine = RuleEngine(LABELS, alerts())
    ev = engine.update("cam", WindowScore(0, 2, {"fight": 0.45, "assault": 0.9}), rules)
    assert [e.label for e in ev] == ["fight"]  # assault needs 0.95 on this stream
    assert overrides_from_options(None) == {} and overrides_from_options({"x": 1}) == {}
    with pytest.raises(ConfigError, match="alerts.fight.*k"):
        overrides_from_options({"alerts": {"fight": {"k": 0}}})
    with pytest.raises(ConfigError, match="must map a class"):
        overrides_from_options({"alerts": [1, 2]})
    with pytest.raises(ConfigError, match="unknown class 'figth'"):
        overrides_from_options({"alerts": {"figth": {"k": 1, "n": 1}}})


def test_rules_for_unknown_classes_are_config_errors():
    with pytest.raises(ConfigError, match="alerts.per_class.figth: unknown class"):
        RuleEngine(LABELS, AlertsConfig(per_class={"figth": AlertRule()}))
    # a real class the model does not have is fine (the config may serve several checkpoints)
    RuleEngine(LABELS, AlertsConfig(per_class={"kidnap": AlertRule()}))


def test_rule_state_moved_to_another_engine_continues_the_same_incident_and_its_cooldown():
    import json

    ws = windows([0.9, 0.9, 0.9, 0.95, 0.8, 0.1, 0.1, 0.9, 0.9, 0.9, 0.9], at=True)
    whole = feed(RuleEngine(LABELS, alerts(cooldown_s=5.0)), ws)  # one engine sees every window
    first = RuleEngine(LABELS, alerts(cooldown_s=5.0))
    before = feed(first, ws[:4])
    assert [e.kind for e in before] == ["opened", "updated"]
    state = json.loads(json.dumps(first.export_state("cam")))  # what the database keeps
    assert first.open_keys("cam") == [before[0].key]
    second = RuleEngine(LABELS, alerts(cooldown_s=5.0))
    second.import_state("cam", state)
    after = feed(second, ws[4:])
    moved = before + after
    assert [e.kind for e in moved] == [e.kind for e in whole] == ["opened", "updated", "closed"]
    assert {e.key for e in moved} == {before[0].key}  # one incident across the move
    assert [(e.start_s, e.end_s, e.peak_score) for e in moved] == [(e.start_s, e.end_s, e.peak_score) for e in whole]
    # The hits at 7-10 s fall inside the cooldown that started before the move: nothing opens.
    assert second.export_state("cam")["fight"]["cooldown_until_s"] == pytest.approx(moved[-1].end_s + 5.0)


def test_a_malformed_rule_state_is_refused_with_the_class_named():
    engine = RuleEngine(LABELS, alerts())
    with pytest.raises(ValueError, match="class 'fight'"):
        engine.import_state("cam", {"fight": {"history": [["x"]], "open": None, "cooldown_until_s": None}})
    engine.import_state("cam", None)
    assert engine.export_state("cam") == {}
