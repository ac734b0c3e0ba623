"""Slack that acts: the alert's Ack and False alarm buttons, through POST /slack/actions on the real Ingress app
(in-process), a real SQLite database and a real local server speaking the Slack Web API (tests/_slack_server.py).

Requests are signed here with hmac as Slack documents it (``v0:<timestamp>:<body>``, HMAC-SHA256 under the
signing secret), independently of the slack-sdk verifier the route uses.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from fastapi.testclient import TestClient

from bigsister_ray.alerts.links import verify_path
from bigsister_ray.alerts.notifiers import SlackNotifier
from bigsister_ray.config import Settings
from bigsister_ray.errors import AlertDeliveryError
from bigsister_ray.incidents.models import IncidentCreate
from bigsister_ray.incidents.service import IncidentService
from bigsister_ray.incidents.store import IncidentStore
from tests._handles import ingress_app
from tests._serve_support import READ_KEY, WRITE_KEY
from tests._slack_server import FakeSlack

SIGNING_SECRET = "8f14e45fceea167a5a36dedd4bea2543"
LINK_SECRET = "link-secret-for-tests-0123456789abcdef"
T0 = datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc)


@pytest.fixture
def slack():
    fake = FakeSlack().start()
    yield fake
    fake.stop()


def make_settings(slack: FakeSlack, tmp_path, signing_secret: str | None = SIGNING_SECRET) -> Settings:
    return Settings(
        database={"url": f"sqlite:///{tmp_path / 'incidents.db'}"},
        incidents={"media_dir": str(tmp_path / "media")},
        serve={"public_url": "https://cctv.example.org/", "links": {"secret": LINK_SECRET, "ttl_s": 3600}},
        alerts={"notifier": "slack", "alert_file": None,
                "slack": {"token": slack.token, "channel": "#incidents", "base_url": slack.base_url, "max_retries": 0,
                          "timeout_s": 5, "signing_secret": signing_secret}},
        auth={"keys": [{"name": "ops", "key": WRITE_KEY, "scope": "write"}, {"name": "viewer", "key": READ_KEY, "scope": "read"}]},
    )


class World:
    """An incident service posting to the local Slack, and the Ingress app on the same database."""

    def __init__(self, slack: FakeSlack, settings: Settings) -> None:
        self.slack, self.settings = slack, settings
        self.store = IncidentStore(settings.database.url)
        self.store.create_tables()
        self.service = IncidentService(self.store, SlackNotifier.from_settings(settings), settings)
        self.client = TestClient(ingress_app(settings))

    def alert(self, n: int) -> tuple[int, str, str]:
        """Open incident ``n`` and deliver its alert: (incident id, channel, ts)."""
        data = IncidentCreate(event_key=f"cam-1:fight:{n}", stream_id="cam-1", stream_name="Lobby", label="fight",
                              severity="medium", started_at=T0, start_s=float(n), end_s=n + 2.0, peak_score=0.91,
                              peak_start_s=float(n), peak_end_s=n + 2.0)
        iid = self.store.record_event(data)
        self.service.deliver(iid)
        channel, ts = self.store.slack_ref(iid)
        return iid, channel, ts

    def press(self, iid: int, channel: str, ts: str, action_id: str = "incident_ack", *, secret: str | None = SIGNING_SECRET,
              timestamp: int | str | None = None, user: dict | None = None, tamper: tuple[str, str] | None = None):
        payload = {"type": "block_actions", "user": user or {"id": "U123ANA", "username": "ana", "name": "ana"},
                   "container": {"type": "message", "channel_id": channel, "message_ts": ts},
                   "channel": {"id": channel}, "message": {"ts": ts},
                   "actions": [{"type": "button", "action_id": action_id, "block_id": "incident_actions", "value": str(iid)}]}
        body = urlencode({"payload": json.dumps(payload)})
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if secret is not None:
            stamp = str(int(time.time()) if timestamp is None else timestamp)
            digest = hmac.new(secret.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256).hexdigest()
            headers |= {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}
        if tamper is not None:
            body = body.replace(*tamper)
        return self.client.post("/slack/actions", content=body, headers=headers)


@pytest.fixture
def world(slack, tmp_path):
    w = World(slack, make_settings(slack, tmp_path))
    yield w
    w.store.dispose()


def buttons(message: dict) -> list[str]:
    return [e["action_id"] for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]


def status_lines(message: dict) -> list[str]:
    return [e["text"] for b in message["blocks"] if b.get("block_id") == "incident_status" for e in b["elements"]]


def test_the_alert_has_ack_and_false_alarm_buttons_and_a_signed_link_to_the_incident_page(world):
    iid, channel, ts = world.alert(1)
    msg = world.slack.message(channel, ts)
    assert buttons(msg) == ["incident_ack", "incident_false_alarm"]
    [actions] = [b for b in msg["blocks"] if b["type"] == "actions"]
    assert {e["value"] for e in actions["elements"]} == {str(iid)}
    [link] = [b["accessory"]["url"] for b in msg["blocks"] if b.get("accessory", {}).get("action_id") == "open_incident"]
    parts = urlsplit(link)
    assert parts.netloc == "cctv.example.org" and parts.path == f"/ui/incidents/{iid}"
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    verify_path(parts.path, q["exp"], q["sig"], LINK_SECRET)  # opens the page now
    assert int(q["exp"]) == pytest.approx(time.time() + 3600, abs=60)


def test_a_signed_press_acks_the_incident_and_updates_the_message_in_place(world):
    iid, channel, ts = world.alert(1)
    r = world.press(iid, channel, ts, "incident_ack")
    assert r.status_code == 200, r.text
    assert world.store.get_incident(iid).status == "acknowledged"
    [entry] = world.store.audit_trail(iid)
    assert (entry.action, entry.actor) == ("ack", "slack:U123ANA (ana)")
    [update] = world.slack.updates
    assert (update["channel"], update["ts"]) == (channel, ts)
    msg = world.slack.message(channel, ts)
    assert len(world.slack.top_level_messages()) == 1  # edited, not posted again
    [line] = status_lines(msg)
    assert line.startswith("Acknowledged by slack:U123ANA (ana) at ")
    assert buttons(msg) == ["incident_false_alarm"]  # what an acknowledged incident still allows
    api = world.client.get(f"/incidents/{iid}", headers={"X-API-Key": READ_KEY}).json()
    assert api["status"] == "acknowledged"  # the console and the API read the same row

    r = world.press(iid, channel, ts, "incident_false_alarm", user={"id": "U777BEN", "name": "ben"})
    assert r.status_code == 200 and world.store.get_incident(iid).status == "false_alarm"
    msg = world.slack.message(channel, ts)
    assert status_lines(msg)[0].startswith("False alarm by slack:U777BEN (ben)") and buttons(msg) == []


def test_unsigned_wrongly_signed_replayed_and_tampered_presses_are_refused_and_change_nothing(world):
    done, done_channel, done_ts = world.alert(1)
    iid, channel, ts = world.alert(2)
    before = json.dumps(world.slack.message(channel, ts)["blocks"])
    # positive control: a signed press is taken and its message update is seen
    assert world.press(done, done_channel, done_ts).status_code == 200
    assert world.store.get_incident(done).status == "acknowledged" and len(world.slack.updates) == 1

    refused = {
        "unsigned": world.press(iid, channel, ts, secret=None),
        "wrong secret": world.press(iid, channel, ts, secret="another-apps-signing-secret-0000"),
        "replayed (6 minutes old)": world.press(iid, channel, ts, timestamp=int(time.time()) - 360),
        "from the future": world.press(iid, channel, ts, timestamp=int(time.time()) + 360),
        "timestamp not a number": world.press(iid, channel, ts, timestamp="yesterday"),
        "body changed after signing": world.press(iid, channel, ts, tamper=("incident_ack", "incident_false_alarm")),
    }
    for why, r in refused.items():
        assert r.status_code == 401, (why, r.status_code, r.text)
        assert "X-Slack-Signature" in r.json()["detail"], why
    assert world.store.get_incident(iid).status == "open" and world.store.audit_trail(iid) == []
    assert len(world.slack.updates) == 1 and json.dumps(world.slack.message(channel, ts)["blocks"]) == before
    assert [m for m, _ in world.slack.calls].count("chat.update") == 1


def test_slack_actions_needs_no_api_key_but_keeps_the_body_limit(world):
    r = world.client.post("/slack/actions", content=b"payload=" + b"x" * (80 * 1024),
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413  # refused for its size, not for a missing key
    assert world.client.post("/slack/actions", content=b"payload=%7B%7D").status_code == 401  # unsigned
    assert world.client.post("/incidents/1/ack").status_code == 401  # every other route still wants its key


def test_without_a_signing_secret_there_are_no_buttons_and_the_route_says_what_to_set(slack, tmp_path):
    w = World(slack, make_settings(slack, tmp_path, signing_secret=None))
    iid, channel, ts = w.alert(1)
    assert buttons(slack.message(channel, ts)) == []
    r = w.press(iid, channel, ts)
    assert r.status_code == 404 and "alerts.slack.signing_secret" in r.json()["detail"]
    assert w.store.get_incident(iid).status == "open"
    w.store.dispose()


def test_a_press_someone_beat_refreshes_the_message_to_the_status_that_holds(world):
    iid, channel, ts = world.alert(1)
    assert world.client.post(f"/incidents/{iid}/false-alarm", headers={"X-API-Key": WRITE_KEY}).status_code == 200
    r = world.press(iid, channel, ts, "incident_ack")  # a stale button: the incident is already a false alarm
    assert r.status_code == 200
    assert world.store.get_incident(iid).status == "false_alarm"
    [entry] = world.store.audit_trail(iid)
    assert entry.actor == "ops"
    msg = world.slack.message(channel, ts)
    assert status_lines(msg)[0].startswith("False alarm by ops") and buttons(msg) == []


def test_the_evidence_clip_is_uploaded_into_the_alerts_thread(world, tmp_path):
    from bigsister_ray.alerts.message import Delivery, IncidentAlert

    iid, channel, ts = world.alert(1)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8)
    notifier = world.service.notifier
    alert = IncidentAlert.from_row(world.store.get_incident_row(iid), world.settings.serve.public_url)
    delivery = notifier.send_clip(alert, Delivery("slack", channel=channel, ts=ts), clip)
    [upload] = [f for f in world.slack.files_in_thread(ts) if f["filename"].endswith(".mp4")]
    assert upload["filename"] == f"incident-{iid}.mp4" and upload["data"] == clip.read_bytes()
    assert (delivery.channel, delivery.ts) == (channel, ts) and upload["id"] in (delivery.note or "")
    assert len(world.slack.top_level_messages()) == 1  # into the thread, no new message

    world.slack.fail_next(1, status=503, methods=("files.getUploadURLExternal",))
    with pytest.raises(AlertDeliveryError) as retry:
        notifier.send_clip(alert, Delivery("slack", channel=channel, ts=ts), clip)
    assert retry.value.retryable  # an outage: the outbox tries again
    with pytest.raises(AlertDeliveryError) as gone:
        notifier.send_clip(alert, Delivery("slack", channel=channel, ts=ts), tmp_path / "deleted.mp4")
    assert not gone.value.retryable and "retention" in str(gone.value)


def test_a_status_set_from_the_api_reaches_the_slack_message_through_the_outbox(world):
    iid, channel, ts = world.alert(1)
    world.slack.fail_next(1, status=503, methods=("chat.update",))
    r = world.client.post(f"/incidents/{iid}/ack", headers={"X-API-Key": WRITE_KEY}, json={"note": "on my way"})
    assert r.status_code == 200
    assert world.service.sweep_once() >= 1  # the edit is due; Slack answers 503: retried, not lost
    assert world.store.delivery("update", iid).status == "pending" and world.slack.updates == []
    world.service._clock = lambda: datetime.now(timezone.utc) + timedelta(seconds=30)  # past the retry backoff
    world.service.sweep_once()
    assert world.store.delivery("update", iid).status == "sent"
    msg = world.slack.message(channel, ts)
    assert status_lines(msg)[0].startswith("Acknowledged by ops") and buttons(msg) == ["incident_false_alarm"]
    assert world.service.sweep_once() == 0 and len(world.slack.updates) == 1  # sent once


def test_a_recorded_clip_is_uploaded_into_the_thread_through_the_outbox_and_retried(world, tmp_path):
    iid, channel, ts = world.alert(1)
    media = world.settings.incidents.media_dir
    (media / str(iid)).mkdir(parents=True)
    (media / str(iid) / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x01" * 4000)
    world.slack.fail_next(1, status=500, methods=("files.getUploadURLExternal",))
    world.store.set_clip(iid, f"{iid}/clip.mp4")
    world.store.enqueue_delivery(iid, "clip")  # what a shard does once it recorded the clip
    world.service.sweep_once()
    assert world.store.delivery("clip", iid).status == "pending" and world.slack.files_in_thread(ts) == []
    world.service._clock = lambda: datetime.now(timezone.utc) + timedelta(seconds=30)
    world.service.sweep_once()
    [upload] = world.slack.files_in_thread(ts)
    assert upload["filename"] == f"incident-{iid}.mp4" and upload["data"] == (media / str(iid) / "clip.mp4").read_bytes()
    assert world.store.delivery("clip", iid).status == "sent"
    world.service.sweep_once()
    assert len(world.slack.files_in_thread(ts)) == 1  # uploaded once


def test_a_reopened_incident_gets_its_buttons_back_in_the_slack_message(world):
    iid, channel, ts = world.alert(1)
    assert world.press(iid, channel, ts, "incident_false_alarm").status_code == 200
    assert buttons(world.slack.message(channel, ts)) == []
    r = world.client.post(f"/incidents/{iid}/reopen", headers={"X-API-Key": WRITE_KEY}, json={"note": "it was a fight"})
    assert r.status_code == 200 and r.json()["status"] == "open"
    assert world.service.sweep_once() >= 1
    msg = world.slack.message(channel, ts)
    assert status_lines(msg)[0].startswith("Reopened by ops at ")
    assert buttons(msg) == ["incident_ack", "incident_false_alarm"]
    assert world.press(iid, channel, ts, "incident_ack").status_code == 200
    assert world.store.get_incident(iid).status == "acknowledged"
