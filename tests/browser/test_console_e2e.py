"""The operator's loop in Chromium against the whole Serve graph on a local Ray, with Slack on a local server.

The app is the real one (Ingress -> StreamShard -> Classifier, incidents in SQLite, the outbox sending to
tests/_slack_server.py, which speaks the Slack Web API). Its checkpoint is a random tiny3d whose calibrated
``fight`` threshold is 0.01, so every window of the camera (a synthetic fight, a file under the media root) is a
hit and the rules open an incident within a few windows, with no training (as tests/e2e/test_streams_e2e.py).

In the browser: log in; add the camera; its incident appears in the list; open it and play its evidence clip;
press Ack; the Slack alert is rewritten in place to say who acted; the alert's link opens the incident page in
a browser with no session; log out. Screenshots go to tests/browser/artifacts/.
"""

from __future__ import annotations

import html
import json
import re

import httpx
import pytest

from tests._console import LINK_SECRET
from tests._serve_support import WRITE_KEY, make_checkpoint, serve_settings, wait_for
from tests._slack_server import FakeSlack

pytestmark = pytest.mark.slow

APP = "console-e2e"
_LINK = re.compile(r"https?://[^\s\"|>]*/ui/incidents/\d+[^\s\"|>]*")


@pytest.fixture(scope="module")
def local_ray():
    """The session's Ray when one is up; else a local one (2 CPUs) for this module, shut down after it."""
    import os

    import ray
    from ray import serve

    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="bigsister-tests")
    try:
        yield
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def graph(tmp_path_factory, local_ray):
    from ray import serve

    from bigsister_ray.data.synth import render_video
    from tests._serve_support import _serve_port, start_app

    root = tmp_path_factory.mktemp("console-e2e")
    slack = FakeSlack().start()
    base = f"http://127.0.0.1:{_serve_port()}"
    settings = serve_settings(root, make_checkpoint(root / "ckpt", thresholds={"fight": 0.01}),
                              shards={"lease_ttl_s": 3.0}, public_url=base, links={"secret": LINK_SECRET})
    settings.alerts.notifier = "slack"
    settings.alerts.sweep_interval_s = 0.5
    settings.alerts.slack.token = slack.token
    settings.alerts.slack.channel = "C0INCIDENT"
    settings.alerts.slack.base_url = slack.base_url
    settings.incidents.media_dir = root / "evidence"
    settings.incidents.clip_before_s = 1.0
    settings.incidents.clip_after_s = 2.0
    render_video(root / "media" / "fight.mp4", "fight", 8.0, fps=8.0, size=(96, 72), seed=5, abnormal_span=(0.5, 7.5))
    start_app(settings, APP)
    api = httpx.Client(base_url=base, headers={"X-API-Key": WRITE_KEY}, timeout=30)
    yield {"base": base, "api": api, "slack": slack}
    api.close()
    if APP in serve.status().applications:
        serve.delete(APP)
    slack.stop()


def test_the_operator_loop_in_a_browser(chromium, page, shot, graph):
    from playwright.sync_api import expect

    base, api, slack = graph["base"], graph["api"], graph["slack"]
    page.goto(f"{base}/ui/cameras")
    expect(page).to_have_url(f"{base}/ui/login?next=%2Fui%2Fcameras")
    page.get_by_label("API key").fill(WRITE_KEY)
    page.get_by_role("button", name="Log in").click()
    form = page.get_by_test_id("add-camera")
    form.get_by_label("Name").fill("gate camera")
    form.get_by_label("Source URL").fill("fight.mp4")
    form.get_by_label("Location").fill("north gate")
    form.get_by_role("button", name="Add camera").click()
    expect(page.get_by_test_id("camera").filter(has_text="gate camera")).to_have_count(1)

    page.get_by_role("navigation").get_by_role("link", name="Incidents").click()
    row = page.get_by_test_id("incident-row").first
    expect(row).to_contain_text("gate camera", timeout=90_000)  # the list reloads itself every 5 s
    shot("incidents")
    iid = int(row.get_attribute("data-incident-id"))

    # the clip is cut once the frames after the peak have arrived; the alert is out once the outbox sent it
    inc = wait_for(lambda: (i := api.get(f"/incidents/{iid}").json())["has_clip"] and i["alert_status"] == "sent" and i,
                   90, 0.5, "the evidence clip and the Slack alert")
    channel, ts = inc["slack_channel"], inc["slack_ts"]
    row.get_by_role("link").first.click()
    expect(page).to_have_url(f"{base}/ui/incidents/{iid}")
    video = page.get_by_test_id("clip")
    video.evaluate("v => v.play()")
    page.wait_for_function("() => { const v = document.querySelector('video'); return v.readyState >= 2 && v.currentTime > 0; }")
    assert video.evaluate("v => v.duration") > 0
    shot("incident")

    page.get_by_label("Note").fill("guard on the way")
    page.get_by_role("button", name="Ack").click()
    expect(page.get_by_test_id("incident-status")).to_have_text("acknowledged")
    expect(page.get_by_test_id("audit")).to_contain_text("console:writer")
    shot("acked")
    updated = wait_for(lambda: "console:writer" in json.dumps(slack.message(channel, ts) or {}) and slack.message(channel, ts),
                       30, 0.3, "the Slack alert to be updated with who acted")
    links = _LINK.findall(json.dumps(updated))
    assert links and all(f"/ui/incidents/{iid}" in link for link in links), updated

    fresh = chromium.new_context()  # no cookies: the alert's link opens the page by itself
    try:
        viewer = fresh.new_page()
        link = html.unescape(links[0])  # Slack's text escapes & as &amp;, in links too
        response = viewer.goto(link)
        assert response.status == 200 and response.headers["content-type"].startswith("text/html")
        assert viewer.url == link, (viewer.url, link)
        expect(viewer.get_by_test_id("incident-status")).to_have_text("acknowledged")
        expect(viewer.get_by_text("Viewing from an alert link")).to_be_visible()
        shot("slack-link", viewer)
    finally:
        fresh.close()

    # the camera grid shows the camera's newest frame, which its shard saves every lease round
    [cam] = api.get("/streams").json()["streams"]
    wait_for(lambda: api.get(f"/streams/{cam['id']}/frame").status_code == 200, 30, 0.3, "the camera's newest frame")
    page.get_by_role("navigation").get_by_role("link", name="Cameras").click()
    picture = page.get_by_test_id("camera").filter(has_text="gate camera").get_by_test_id("camera-frame")
    picture.scroll_into_view_if_needed()
    page.wait_for_function("() => { const i = document.querySelector('[data-testid=camera-frame]');"
                           " return i && i.complete && i.naturalWidth > 0; }", timeout=8_000)
    shot("cameras")

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{base}/ui/login")
