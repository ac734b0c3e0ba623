"""Incident alerts through a real local HTTP server speaking the Slack Web API (tests/_slack_server.py).

Persist first, notify second; retries across an outage and a restart; exactly one message per incident;
errors that retrying cannot fix are failed with their reason; the token never leaks.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from PIL import Image

from bigsister_ray.alerts.notifiers import (
    ConsoleNotifier,
    IncidentAlert,
    SlackNotifier,
    WebhookNotifier,
    make_notifier,
)
from bigsister_ray.alerts.rules import RuleEngine, WindowScore
from bigsister_ray.alerts.snapshot import render_snapshot
from bigsister_ray.config import Settings
from bigsister_ray.errors import AlertDeliveryError, ConfigError
from bigsister_ray.incidents.models import IncidentCreate
from bigsister_ray.incidents.service import MAYBE_TWICE, IncidentService
from bigsister_ray.incidents.store import IncidentStore
from tests._postgres import fresh_postgres
from tests._slack_server import FakeSlack

T0 = datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc)
LABELS = ["fight", "assault", "normal"]


@pytest.fixture
def slack():
    fake = FakeSlack().start()
    yield fake
    fake.stop()


def make_settings(slack: FakeSlack, tmp_path, *, token: str | None = None, channel: str = "#incidents", **alerts):
    return Settings(
        serve={"public_url": "https://cctv.example.org/"},
        alerts={
            "notifier": "slack",
            "default": {"threshold": 0.5, "k": 2, "n": 3, "close_after": 2, "cooldown_s": 0},
            "retry_backoff_initial_s": 0.05,
            "retry_backoff_max_s": 0.2,
            "sweep_interval_s": 0.05,
            "alert_file": str(tmp_path / "alerts.jsonl"),
            "slack": {"token": token or slack.token, "channel": channel, "base_url": slack.base_url,
                      "max_retries": 1, "timeout_s": 2},
            **alerts,
        },
    )


@pytest.fixture
def store(tmp_path):
    s = IncidentStore(f"sqlite:///{tmp_path / 'incidents.db'}")
    s.create_tables()
    yield s
    s.dispose()


def service_for(store, settings, **kw) -> IncidentService:
    return IncidentService(store, SlackNotifier.from_settings(settings), settings, **kw)


def incident_events(stream: str = "cam-1", label: str = "fight", start: float = 0.0):
    """Drive the real rule engine: an incident opens on the 2nd hit and closes after 2 low windows."""
    engine = RuleEngine(LABELS, Settings().alerts.model_copy(update={"default": Settings().alerts.default.model_copy(
        update={"threshold": 0.5, "k": 2, "n": 3, "close_after": 2, "cooldown_s": 0})}))
    events = []
    for i, score in enumerate([0.2, 0.8, 0.85, 0.93, 0.1, 0.1]):
        s = start + i
        events += engine.update(stream, WindowScore(s, s + 2, {label: score}, at=T0 + timedelta(seconds=s + 2)))
    opened = next(e for e in events if e.kind == "opened")
    closed = next(e for e in events if e.kind == "closed")
    return opened, [e for e in events if e.kind == "updated"], closed


def snapshot(score: float = 0.93) -> bytes:
    frames = np.random.default_rng(1).integers(0, 255, (8, 112, 112, 3), dtype=np.uint8)
    return render_snapshot(frames, label="fight", score=score, camera="Lobby", when=T0)


def wait_until(cond, timeout=20.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


class ShiftedClock:
    """A service's clock: the real time plus a shift that a test moves forward (past a backoff) instead of sleeping."""

    def __init__(self) -> None:
        self.shift = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(timezone.utc) + self.shift

    def advance(self, seconds: float) -> None:
        self.shift += timedelta(seconds=seconds)


def count_sweeps(svc: IncidentService) -> list[int]:
    """What each sweep of ``svc`` tried, one entry per finished sweep (its sweeper calls the instance's
    ``sweep_once``), so a test waits for sweeps to have happened instead of sleeping through some."""
    done: list[int] = []
    sweep = svc.sweep_once

    def counted(limit: int = 100) -> int:
        tried = sweep(limit)
        done.append(tried)
        return tried

    svc.sweep_once = counted
    return done


# ---- the message ----------------------------------------------------------------------------------
def test_alert_has_blocks_fallback_snapshot_in_thread_and_close_reply(slack, store, tmp_path):
    settings = make_settings(slack, tmp_path)
    svc = service_for(store, settings)
    opened, updates, closed = incident_events()
    jpeg = snapshot()
    iid = svc.handle(opened, stream_name="Lobby camera", location="Building A, 1F", snapshot_jpeg=jpeg)
    for ev in updates:
        assert svc.handle(ev, stream_name="Lobby camera", location="Building A, 1F") == iid

    [msg] = slack.top_level_messages()
    assert msg["channel"] == "C0INCIDENT"
    text = msg["text"]
    assert "fight" in text and "Lobby camera (Building A, 1F)" in text and "0.85" in text
    assert f"https://cctv.example.org/ui/incidents/{iid}" in text
    blocks = json.dumps(msg["blocks"])
    for needle in ("*Class:*\\nfight", "*Camera:*\\nLobby camera", "*Location:*\\nBuilding A, 1F", "*Peak score:*\\n0.85",
                   "<!date^", f"https://cctv.example.org/ui/incidents/{iid}"):
        assert needle in blocks, needle
    # the snapshot went up with files_upload_v2 into the message's thread, byte for byte
    [done] = slack.completed
    assert done["thread_ts"] == msg["ts"] and done["channel_id"] == "C0INCIDENT"
    [upload] = [slack.uploads[f["id"]] for f in done["files"]]
    assert upload["data"] == jpeg and upload["filename"] == f"incident-{iid}.jpg"
    assert Image.open(io.BytesIO(upload["data"])).format == "JPEG"

    inc = store.get_incident(iid)
    assert (inc.alert_status, inc.slack_ts, inc.slack_channel, inc.alert_attempts) == ("sent", msg["ts"], "C0INCIDENT", 1)
    assert inc.peak_score == pytest.approx(0.93)  # raised by the updates after the alert
    assert inc.started_at == T0 + timedelta(seconds=1)

    assert svc.handle(closed, stream_name="Lobby camera", location="Building A, 1F") == iid
    [reply] = slack.replies(msg["ts"])
    assert f"Incident #{iid} closed" in reply["text"] and "0.93" in reply["text"]
    inc = store.get_incident(iid)
    assert inc.close_status == "sent" and inc.ended_at is not None
    assert len(slack.top_level_messages()) == 1  # still one alert
    assert svc.sweep_once() == 0  # nothing left to do


def test_snapshot_jpeg_is_enlarged_and_marked():
    jpeg = snapshot(0.87)
    img = Image.open(io.BytesIO(jpeg))
    assert img.format == "JPEG" and img.width >= 480
    arr = np.asarray(img.convert("RGB")).astype(int)
    # the red border and the dark banner are drawn over the noise
    assert (arr[arr.shape[0] // 2, 0] > [150, -1, -1]).all() and arr[arr.shape[0] // 2, 0, 1] < 120
    assert arr[:20, 100:].mean() < arr[arr.shape[0] // 2:, :].mean()
    with pytest.raises(ValueError, match="H x W x 3"):
        render_snapshot(np.zeros((4, 4)), label="x", score=0.1)


# ---- outages ------------------------------------------------------------------------------------
def test_rate_limit_then_5xx_then_outage_every_alert_stored_at_once_and_delivered_once(slack, store, tmp_path):
    settings = make_settings(slack, tmp_path)
    svc = service_for(store, settings)
    # the first attempt meets a 429 (Retry-After honoured by the client's handler) and another 429 ...
    slack.fail_next(2, status=429, retry_after=1, methods=("chat.postMessage",))
    opened, _, _ = incident_events("cam-1")
    first = svc.handle(opened, stream_name="Cam 1", location=None)
    assert store.get_incident(first).alert_status == "pending"
    assert "ratelimited" in store.get_incident(first).alert_reason
    # ... then 500s, then Slack goes away entirely
    slack.fail_next(4, status=500)
    port = slack.port
    ids = [first]
    for n in (2, 3):
        ev, _, _ = incident_events(f"cam-{n}")
        ids.append(svc.handle(ev, stream_name=f"Cam {n}", location=None))
    slack.stop()
    for n in (4, 5):
        ev, _, _ = incident_events(f"cam-{n}")
        ids.append(svc.handle(ev, stream_name=f"Cam {n}", location=None))
    # every incident is stored at once, none delivered
    assert store.list_incidents()[1] == 5
    assert all(store.get_incident(i).alert_status == "pending" for i in ids)
    assert slack.top_level_messages() == []
    attempts = {i: store.get_incident(i).alert_attempts for i in ids}
    sweeps = count_sweeps(svc)
    svc.start_sweeper(0.05)
    # the sweeper tries every one again against the dead port (past its backoff, the 429's Retry-After included)
    assert wait_until(lambda: all(store.get_incident(i).alert_attempts > attempts[i] for i in ids), timeout=30)
    assert all(store.get_incident(i).alert_status == "pending" for i in ids) and slack.top_level_messages() == []
    slack.port = port
    slack.start()
    try:
        assert wait_until(lambda: all(store.get_incident(i).alert_status == "sent" for i in ids), timeout=30)
        after = len(sweeps)
        assert wait_until(lambda: len(sweeps) >= after + 3, timeout=30)  # more sweeps: nothing is sent again
    finally:
        svc.stop()
    texts = [m["text"] for m in slack.top_level_messages()]
    assert len(texts) == 5
    assert sorted(int(t.rsplit("/", 1)[1]) for t in texts) == sorted(ids)
    assert all(store.get_incident(i).alert_attempts >= 2 for i in ids)
    assert svc.health()["notifier"]["ok"] is True and svc.health()["alerts"]["pending"] == 0


def test_restart_delivers_pending_alerts_once(slack, store, tmp_path):
    settings = make_settings(slack, tmp_path)
    port = slack.port
    slack.stop()  # Slack is away while the first service runs
    first = service_for(store, settings)
    ids = []
    for n in (1, 2, 3):
        ev, _, closed = incident_events(f"cam-{n}")
        ids.append(first.handle(ev, stream_name=f"Cam {n}", location="Yard"))
        first.handle(closed, stream_name=f"Cam {n}", location="Yard")
    # a fourth whose sender died holding the lease (claimed, never finished)
    ev, _, _ = incident_events("cam-4")
    slack_ids_before = len(ids)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(first, "deliver", lambda incident_id: 0)  # the process "dies" before it can send
        ids.append(first.handle(ev, stream_name="Cam 4", location="Yard"))
    assert store.claim("alert", ids[-1], first.owner, lease_s=3600)
    assert len(ids) == slack_ids_before + 1
    first.stop()
    assert all(store.get_incident(i).alert_status == "pending" for i in ids)

    slack.port = port
    slack.start()
    later = [datetime.now(timezone.utc) + timedelta(seconds=1)]  # past the first service's backoff
    second = service_for(store, settings, clock=lambda: later[0])
    second.sweep_once()
    # the three with free leases go now, then their close replies in the threads
    assert sorted(m["text"].rsplit("/", 1)[1] for m in slack.top_level_messages()) == sorted(str(i) for i in ids[:3])
    second.sweep_once()
    assert all(store.get_incident(i).close_status == "sent" for i in ids[:3])
    for m in slack.top_level_messages():
        assert len(slack.replies(m["ts"])) == 1
    # the dead sender's lease expires: the fourth goes out, once
    later[0] = datetime.now(timezone.utc) + timedelta(hours=2)
    second.sweep_once()
    second.sweep_once()
    assert len(slack.top_level_messages()) == 4
    assert store.get_incident(ids[-1]).alert_status == "sent"
    third = service_for(store, settings)  # yet another restart sends nothing again
    assert third.sweep_once() == 0 and len(slack.messages) == 4 + 3


def test_two_services_on_one_database_never_send_twice(slack, store, tmp_path):
    settings = make_settings(slack, tmp_path)
    a, b = service_for(store, settings), service_for(store, settings)
    sweeps_a, sweeps_b = count_sweeps(a), count_sweeps(b)
    a.start_sweeper(3600)  # running: handle() only persists and wakes it, once its first sweep is over
    assert wait_until(lambda: len(sweeps_a) >= 1) and a.sweeper_running
    ids = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(a._wake, "set", lambda: None)
        for n in range(8):
            ev, _, _ = incident_events(f"cam-{n}")
            ids.append(a.handle(ev, stream_name=f"Cam {n}", location=None))
    a.stop()
    assert all(store.get_incident(i).alert_status == "pending" for i in ids) and slack.messages == []
    a.start_sweeper(0.02)
    b.start_sweeper(0.02)
    try:
        assert wait_until(lambda: all(store.get_incident(i).alert_status == "sent" for i in ids), timeout=30)
        after = len(sweeps_a), len(sweeps_b)
        # both go on sweeping, and nothing is sent again
        assert wait_until(lambda: len(sweeps_a) >= after[0] + 3 and len(sweeps_b) >= after[1] + 3, timeout=30)
    finally:
        a.stop()
        b.stop()
    assert len(slack.top_level_messages()) == 8
    assert len({m["text"] for m in slack.top_level_messages()}) == 8


@pytest.mark.parametrize("error", ["invalid_auth", "channel_not_found", "not_in_channel"])
def test_errors_retrying_cannot_fix_fail_at_once_with_reason_and_show_in_health(slack, store, tmp_path, error):
    settings = make_settings(slack, tmp_path)
    svc = service_for(store, settings)
    slack.fail_next(1, error=error, methods=("chat.postMessage",))
    opened, _, closed = incident_events()
    iid = svc.handle(opened, stream_name="Cam", location=None)
    inc = store.get_incident(iid)
    assert inc.alert_status == "failed" and inc.alert_reason.startswith(error) and inc.alert_attempts == 1
    assert [p for p, _ in slack.requests if "chat.postMessage" in p] == ["/api/chat.postMessage"]  # not retried
    assert svc.sweep_once() == 0 and len(slack.requests) == 1
    svc.handle(closed, stream_name="Cam", location=None)
    assert store.get_incident(iid).close_status == "skipped"
    health = svc.health()
    assert health["ok"] is False and health["notifier"]["ok"] is False
    assert health["notifier"]["last_error"]["reason"] == error
    assert health["alerts"]["failed"] == 1 and health["alerts"]["last_failed"]["reason"].startswith(error)
    # after a restart the reason is still visible, from the database
    again = service_for(store, settings)
    assert again.health()["alerts"]["last_failed"] == {"incident_id": iid, "reason": inc.alert_reason}


def test_the_fake_slack_does_not_count_another_servers_client(slack):
    """A client of an earlier test's server (its port since reused) must not take this test's scripted failure."""
    import httpx

    slack.fail_next(1, error="channel_not_found", methods=("chat.postMessage",))
    other = FakeSlack()
    assert other.token != slack.token
    r = httpx.post(slack.base_url + "chat.postMessage", headers={"Authorization": f"Bearer {other.token}"},
                   data={"channel": "#incidents", "text": "stray"}, timeout=10)
    assert r.json() == {"ok": False, "error": "invalid_auth"}
    assert slack.requests == [] and slack.pending_failures() == 1 and slack.messages == []


def test_wrong_token_is_invalid_auth_from_the_server(slack, store, tmp_path):
    settings = make_settings(slack, tmp_path, token="xoxb-wrong-token")
    svc = service_for(store, settings)
    opened, _, _ = incident_events()
    iid = svc.handle(opened, stream_name="Cam", location=None)
    assert store.get_incident(iid).alert_status == "failed"
    assert "invalid_auth" in store.get_incident(iid).alert_reason
    with pytest.raises(AlertDeliveryError) as info:
        SlackNotifier.from_settings(settings).check()
    assert info.value.retryable is False and info.value.reason == "invalid_auth"
    SlackNotifier.from_settings(make_settings(slack, tmp_path)).check()  # the right token passes auth.test


def test_snapshot_upload_failure_does_not_resend_the_message(slack, store, tmp_path):
    settings = make_settings(slack, tmp_path)
    svc = service_for(store, settings)
    slack.fail_next(1, error="internal_error", methods=("files.getUploadURLExternal",))
    opened, _, _ = incident_events()
    iid = svc.handle(opened, stream_name="Cam", location=None, snapshot_jpeg=snapshot())
    inc = store.get_incident(iid)
    assert inc.alert_status == "sent" and "snapshot upload failed" in inc.alert_reason
    assert svc.sweep_once() == 0 and len(slack.top_level_messages()) == 1


def test_per_channel_cap_defers_instead_of_dropping(slack, store, tmp_path):
    settings = make_settings(slack, tmp_path, max_messages_per_minute=2)
    now = [datetime.now(timezone.utc)]
    svc = service_for(store, settings, clock=lambda: now[0])
    ids = []
    for n in range(4):
        ev, _, _ = incident_events(f"cam-{n}")
        ids.append(svc.handle(ev, stream_name=f"Cam {n}", location=None))
    assert len(slack.top_level_messages()) == 2
    deferred = [store.get_incident(i) for i in ids[2:]]
    assert all(d.alert_status == "pending" and "deferred" in d.alert_reason and d.alert_attempts == 0 for d in deferred)
    now[0] += timedelta(seconds=61)
    svc.sweep_once()
    assert len(slack.top_level_messages()) == 4
    assert all(store.get_incident(i).alert_status == "sent" for i in ids)


def test_token_never_in_logs_reprs_or_health(slack, store, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    settings = make_settings(slack, tmp_path)
    notifier = SlackNotifier.from_settings(settings)
    clock = ShiftedClock()
    svc = IncidentService(store, notifier, settings, clock=clock)
    slack.fail_next(1, status=500)
    slack.fail_next(1, drop=True)
    opened, _, closed = incident_events()
    iid = svc.handle(opened, stream_name="Cam", location=None, snapshot_jpeg=snapshot())
    assert store.get_incident(iid).alert_status == "pending"
    clock.advance(1)  # past the backoff
    svc.sweep_once()
    svc.handle(closed, stream_name="Cam", location=None)
    slack.fail_next(1, error="invalid_auth")
    ev2, _, _ = incident_events("cam-2")
    svc.handle(ev2, stream_name="Cam 2", location=None)
    assert store.get_incident(iid).alert_status == "sent"
    assert any("chat.postMessage" in r.getMessage() for r in caplog.records)  # the SDK's debug logs were captured
    secret = slack.token
    for text in (caplog.text, repr(notifier), str(notifier), repr(svc), json.dumps(svc.health(), default=str),
                 repr(settings), str(settings.alerts), repr(store.get_incident(iid))):
        assert secret not in text
    with pytest.raises(TypeError, match="not picklable"):
        import pickle

        pickle.dumps(notifier)


# ---- the other notifiers --------------------------------------------------------------------------
def test_webhook_notifier_text_only_and_errors(slack, store, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    settings = make_settings(slack, tmp_path, notifier="webhook", webhook={"url": slack.webhook_url})
    notifier = make_notifier(settings)
    assert isinstance(notifier, WebhookNotifier)
    svc = IncidentService(store, notifier, settings)
    opened, _, closed = incident_events()
    iid = svc.handle(opened, stream_name="Gate", location="North")
    svc.handle(closed, stream_name="Gate", location="North")
    assert [p["text"].split(" ")[0] for p in slack.webhook_posts] == ["[MEDIUM]", "Incident"]
    assert all(set(p) == {"text"} for p in slack.webhook_posts)
    assert store.get_incident(iid).close_status == "sent"
    assert slack.webhook_url not in caplog.text and slack.webhook_url not in repr(notifier)
    slack.fail_next(2, status=503)
    with pytest.raises(AlertDeliveryError) as info:
        notifier.send_incident(IncidentAlert.from_row(store.get_incident_row(iid), "http://x"))
    assert info.value.retryable is True


def test_console_notifier_prints_and_appends_jsonl(store, tmp_path, capsys):
    settings = Settings(alerts={"notifier": "auto", "alert_file": str(tmp_path / "out" / "alerts.jsonl")})
    notifier = make_notifier(settings)
    assert isinstance(notifier, ConsoleNotifier)
    svc = IncidentService(store, notifier, settings)
    opened, _, closed = incident_events()
    iid = svc.handle(opened, stream_name="Gate", location=None, snapshot_jpeg=b"\xff\xd8x")
    svc.handle(closed, stream_name="Gate", location=None)
    lines = [json.loads(x) for x in (tmp_path / "out" / "alerts.jsonl").read_text().splitlines()]
    assert [x["event"] for x in lines] == ["incident", "incident_closed"]
    assert lines[0]["incident_id"] == iid and lines[0]["has_snapshot"] is True and lines[0]["label"] == "fight"
    assert capsys.readouterr().out.count('"incident_id"') == 2


def test_slack_config_errors_are_clear(slack, tmp_path):
    with pytest.raises(ConfigError, match="token"):
        SlackNotifier.from_settings(Settings(alerts={"notifier": "slack", "slack": {"channel": "#x"}}))
    with pytest.raises(ConfigError, match="channel"):
        SlackNotifier.from_settings(Settings(alerts={"slack": {"token": "xoxb-1"}}))
    token_file = tmp_path / "token"
    token_file.write_text(slack.token + "\n")
    settings = Settings(alerts={"slack": {"token_file": str(token_file), "channel": "#incidents", "base_url": slack.base_url}})
    notifier = make_notifier(settings)
    assert isinstance(notifier, SlackNotifier)
    notifier.check()


def test_database_down_nothing_is_sent_and_health_says_so(slack, tmp_path):
    from bigsister_ray.incidents.store import IncidentStoreError

    settings = make_settings(slack, tmp_path)
    down = IncidentStore("postgresql+psycopg://nobody@127.0.0.1:1/none", busy_timeout_ms=1000)
    svc = service_for(down, settings)
    opened, _, _ = incident_events()
    with pytest.raises(IncidentStoreError):
        svc.handle(opened, stream_name="Cam", location=None)
    assert slack.messages == []  # persist first: no row, no alert
    health = svc.health()
    assert health["ok"] is False and health["database"]["ok"] is False and health["database"]["error"]
    assert health["notifier"]["ok"] is True


def test_public_surface():
    import bigsister_ray.alerts as alerts_pkg
    from bigsister_ray.alerts import notifiers, rules, snapshot
    from bigsister_ray.incidents import api, models, schemas, service, store

    assert set(alerts_pkg.__all__) == {"WindowScore", "IncidentEvent", "DetectedEvent", "ResolvedRule", "RuleEngine", "detect_events"}
    assert {"RuleEngine", "WindowScore", "IncidentEvent", "DetectedEvent", "detect_events", "overrides_from_options"} <= set(rules.__all__)
    assert {"Notifier", "SlackNotifier", "WebhookNotifier", "ConsoleNotifier", "make_notifier", "IncidentAlert"} <= set(notifiers.__all__)
    assert snapshot.__all__ == ["render_snapshot", "pick_frame"]
    assert {"Stream", "StreamCreate", "StreamPublic", "StreamUpdate", "Incident", "IncidentCreate", "IncidentPublic",
            "IncidentUpdate", "TRANSITIONS"} <= set(models.__all__)
    assert {"IncidentStore", "IncidentStoreError", "IncidentNotFoundError", "InvalidTransitionError"} <= set(store.__all__)
    assert service.__all__ == ["IncidentService"] and api.__all__ == ["make_incidents_router"]
    assert set(schemas.__all__) == {"IncidentPage", "ErrorDetail", "ActionBody", "AuditTrail"}
    for mod in (rules, notifiers, snapshot, models, store, service, api, schemas):
        for name in mod.__all__:
            assert hasattr(mod, name), (mod.__name__, name)


# ---- interrupted sends: never twice ---------------------------------------------------------------
def test_lost_response_is_found_in_the_channel_not_posted_again(slack, store, tmp_path):
    settings = make_settings(slack, tmp_path)
    clock = ShiftedClock()
    svc = service_for(store, settings, clock=clock)
    slack.fail_next(1, drop_after=True, methods=("chat.postMessage",))  # Slack posts it, the answer never arrives
    opened, _, closed = incident_events()
    jpeg = snapshot()
    iid = svc.handle(opened, stream_name="Cam", location=None, snapshot_jpeg=jpeg)
    [posted] = slack.top_level_messages()
    assert posted["metadata"] == {"event_type": "bigsister_incident", "event_payload": {"incident_id": iid, "kind": "alert"}}
    inc = store.get_incident(iid)
    assert inc.alert_status == "pending" and inc.alert_reason.startswith("connection_lost")
    clock.advance(1)  # past the backoff
    svc.sweep_once()
    inc = store.get_incident(iid)
    assert inc.alert_status == "sent" and inc.slack_ts == posted["ts"] and "history" in inc.alert_reason
    assert MAYBE_TWICE not in inc.alert_reason  # found, so certainly once
    assert len(slack.top_level_messages()) == 1 and slack.history_calls == 1
    [done] = slack.completed  # the snapshot the interrupted send never uploaded went into the thread
    assert done["thread_ts"] == posted["ts"] and slack.uploads[done["files"][0]["id"]]["data"] == jpeg
    # the close reply's answer is lost too: found in the thread, not posted twice
    slack.fail_next(1, drop_after=True, methods=("chat.postMessage",))
    svc.handle(closed, stream_name="Cam", location=None)
    assert store.get_incident(iid).close_status == "pending" and len(slack.replies(posted["ts"])) == 1
    clock.advance(1)
    svc.sweep_once()
    assert store.get_incident(iid).close_status == "sent" and len(slack.replies(posted["ts"])) == 1


def _posted_by_a_sender_that_died(store, settings, notifier) -> int:
    """An incident whose alert a sender posted through ``notifier`` and then died before recording the outcome:
    its claim's lease is left held. Returns the incident id."""
    dead = IncidentService(store, notifier, settings)
    opened, _, _ = incident_events()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dead, "deliver", lambda incident_id: 0)
        iid = dead.handle(opened, stream_name="Cam", location=None)
    assert store.claim("alert", iid, dead.owner, lease_s=300)
    notifier.send_incident(IncidentAlert.from_row(store.get_incident_row(iid), settings.serve.public_url))
    return iid


def _heir(store, settings, notifier) -> IncidentService:
    """The sender that sweeps after the dead one's lease expired."""
    later = datetime.now(timezone.utc) + timedelta(minutes=10)
    return IncidentService(store, notifier, settings, clock=lambda: later)


def test_sender_that_died_after_posting_is_not_repeated_by_the_next(slack, store, tmp_path):
    settings = make_settings(slack, tmp_path, channel="C0INCIDENT")  # an id: no lookup by name needed
    iid = _posted_by_a_sender_that_died(store, settings, SlackNotifier.from_settings(settings))
    assert len(slack.top_level_messages()) == 1
    _heir(store, settings, SlackNotifier.from_settings(settings)).sweep_once()
    assert store.get_incident(iid).alert_status == "sent"
    assert len(slack.top_level_messages()) == 1 and store.get_incident(iid).slack_ts == slack.messages[0]["ts"]


def test_a_webhook_send_that_died_unrecorded_goes_again_and_says_it_may_be_twice(slack, store, tmp_path):
    settings = make_settings(slack, tmp_path, notifier="webhook", webhook={"url": slack.webhook_url})
    # an incoming webhook cannot be asked what went out
    iid = _posted_by_a_sender_that_died(store, settings, make_notifier(settings))
    assert len(slack.webhook_posts) == 1
    heir = _heir(store, settings, make_notifier(settings))
    heir.sweep_once()
    inc = store.get_incident(iid)
    assert inc.alert_status == "sent" and len(slack.webhook_posts) == 2  # sent again rather than lost
    assert MAYBE_TWICE in inc.alert_reason
    # positive control: a webhook alert with no interrupted attempt says nothing of the kind
    other, _, _ = incident_events("cam-2")
    second = heir.handle(other, stream_name="Cam 2", location=None)
    assert store.get_incident(second).alert_status == "sent" and len(slack.webhook_posts) == 3
    assert MAYBE_TWICE not in (store.get_incident(second).alert_reason or "")


def test_without_history_access_it_sends_again_rather_than_lose(slack, store, tmp_path, caplog):
    settings = make_settings(slack, tmp_path)
    clock = ShiftedClock()
    svc = service_for(store, settings, clock=clock)
    slack.fail_next(1, drop_after=True, methods=("chat.postMessage",))
    slack.fail_next(1, error="missing_scope", methods=("conversations.history",))
    opened, _, _ = incident_events()
    iid = svc.handle(opened, stream_name="Cam", location=None)
    assert store.get_incident(iid).alert_status == "pending" and len(slack.top_level_messages()) == 1
    clock.advance(1)  # past the backoff
    svc.sweep_once()
    assert store.get_incident(iid).alert_status == "sent"
    assert len(slack.top_level_messages()) == 2  # a duplicate, knowingly, instead of a lost alert
    assert "a duplicate is possible" in caplog.text
    assert MAYBE_TWICE in store.get_incident(iid).alert_reason  # the delivery says it may have gone out twice


def test_incidents_left_open_by_a_restarted_engine_are_ended_and_replied(slack, store, tmp_path):
    settings = make_settings(slack, tmp_path)
    svc = service_for(store, settings)
    opened, updates, _ = incident_events("cam-1")
    iid = svc.handle(opened, stream_name="Cam 1", location=None)
    other, _, other_closed = incident_events("cam-2")
    done = svc.handle(other, stream_name="Cam 2", location=None)
    svc.handle(other_closed, stream_name="Cam 2", location=None)
    # the engine restarts: cam-1's incident will never get its "closed" event
    fresh = service_for(store, settings)
    assert fresh.end_dangling() == [iid]
    assert fresh.end_dangling() == []
    inc = store.get_incident(iid)
    assert inc.ended_at is not None and inc.close_status == "sent"  # delivered inline (no sweeper running)
    [alert] = [m for m in slack.top_level_messages() if m["text"].endswith(f"/incidents/{iid}")]
    assert len(slack.replies(alert["ts"])) == 1
    assert store.get_incident(done).close_status == "sent"


# ---- many senders ---------------------------------------------------------------------------------
class _GatedSlack(SlackNotifier):
    """The Slack notifier whose first send waits until every sender holds a claimed alert (``gate``), so the
    senders below are certainly sweeping at the same time."""

    gate: threading.Barrier

    def send_incident(self, alert: IncidentAlert):
        if not getattr(self, "_passed", False):
            self._passed = True
            self.gate.wait(30)
        return super().send_incident(alert)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_four_services_sweeping_one_database_send_every_alert_exactly_once(slack, tmp_path, backend):
    url = f"sqlite:///{tmp_path / 'outbox.db'}" if backend == "sqlite" else fresh_postgres("bigsister_outbox_test")
    db = IncidentStore(url, busy_timeout_ms=30_000)
    db.create_tables()
    settings = make_settings(slack, tmp_path, max_messages_per_minute=1000)
    ids = [db.record_event(IncidentCreate(
        event_key=f"cam-{n % 7}:fight:{n}", stream_id=f"cam-{n % 7}", stream_name=f"Cam {n % 7}", label="fight",
        severity="high", started_at=T0, start_s=float(n), end_s=n + 4.0, peak_score=0.9, peak_start_s=n + 1.0,
        peak_end_s=n + 3.0, timeline=[[float(n), 0.9]])) for n in range(50)]
    senders = 4
    gate = threading.Barrier(senders)
    services = []
    for _ in range(senders):
        notifier = _GatedSlack.from_settings(settings)
        notifier.gate = gate
        services.append(IncidentService(IncidentStore(url, busy_timeout_ms=30_000), notifier, settings))
    tried = [0] * senders
    errors: list[BaseException] = []

    def sweep(i: int) -> None:
        try:
            tried[i] = services[i].sweep_once()
        except BaseException as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=sweep, args=(i,)) for i in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert errors == [] and not any(t.is_alive() for t in threads)
        assert sum(tried) == 50 and min(tried) >= 1, tried  # every sender sent a share
        sent_for = sorted(int(m["text"].rsplit("/", 1)[1]) for m in slack.top_level_messages())
        assert sent_for == sorted(ids)  # each alert exactly once: none lost, none twice
        assert all(db.get_incident(i).alert_status == "sent" for i in ids)
        assert db.claim_due("alert", "late", 60) == {}
    finally:
        for svc in services:
            svc.store.dispose()
        db.dispose()
