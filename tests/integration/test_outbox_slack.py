"""The delivery outbox with a local Slack Web API server on 127.0.0.1: a clip waits for its alert, then goes into its
thread once.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from bigsister_ray.alerts.slack import SlackNotifier
from bigsister_ray.config import Settings
from bigsister_ray.incidents.service import IncidentService
from bigsister_ray.incidents.store import IncidentNotFoundError

from tests._media import make_mp4
from tests._slack_server import FakeSlack

from tests.unit.test_outbox_table import T0, add, store  # noqa: F401 (shared fixtures)


@pytest.fixture
def slack():
    fake = FakeSlack().start()
    yield fake
    fake.stop()


def test_a_clip_delivery_waits_for_its_alert_then_goes_into_the_thread_once(store, slack, tmp_path):
    media = tmp_path / "media"
    settings = Settings(serve={"public_url": "https://cctv.example.org/"}, incidents={"media_dir": str(media)},
                        alerts={"notifier": "slack", "alert_file": None, "slack": {
                            "token": slack.token, "channel": "#incidents", "base_url": slack.base_url,
                            "max_retries": 0, "timeout_s": 2}})
    svc = IncidentService(store, SlackNotifier.from_settings(settings), settings, clock=lambda: T0)
    iid = add(store, "a")
    (media / "a").mkdir(parents=True)
    make_mp4(media / "a" / "clip.mp4", frames=12)
    store.set_clip(iid, "a/clip.mp4")
    assert store.enqueue_delivery(iid, "clip", now=T0) == "pending"
    assert store.due("clip", now=T0) == [] and store.due("alert", now=T0) == [iid]  # the thread does not exist yet
    assert svc.sweep_once() == 2  # the alert, then the clip into its thread
    top = slack.top_level_messages()
    assert len(top) == 1 and store.slack_ref(iid) == (top[0]["channel"], top[0]["ts"])
    files = slack.files_in_thread(top[0]["ts"])
    assert [f["data"] for f in files].count((media / "a" / "clip.mp4").read_bytes()) == 1
    assert store.delivery("clip", iid).status == "sent"
    assert store.enqueue_delivery(iid, "clip", now=T0) == "sent"  # queued again: nothing changes, nothing resent
    assert svc.sweep_once() == 0 and len(slack.files_in_thread(top[0]["ts"])) == len(files)
    assert store.sent_since(T0 - timedelta(seconds=1)) == 2
    with pytest.raises(IncidentNotFoundError):
        store.enqueue_delivery(iid + 100, "clip")
    with pytest.raises(ValueError, match="delivery kind"):
        store.enqueue_delivery(iid, "fax")
