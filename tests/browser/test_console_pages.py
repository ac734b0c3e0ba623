"""The console in Chromium, over real HTTP, against the in-process Ingress app on a temporary SQLite store (the
Serve deployments behind it are tests/_handles.py's stand-ins; tests/browser/test_console_e2e.py runs the real
graph). Log in, add a camera, find an incident, play its clip, ack it, the CSRF refusal, a signed alert link
from no session, log out. Screenshots go to tests/browser/artifacts/.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from tests._console import LINK_SECRET, console_app, console_settings, seed_incident, write_clip
from tests._serve_support import READ_KEY, WRITE_KEY
from tests.browser.conftest import LocalServer


def _snapshot_jpeg(camera: str) -> bytes:
    from bigsister_ray.alerts.snapshot import render_snapshot
    from bigsister_ray.data.synth import render_frames

    frames = np.stack(list(render_frames("fight", 1.0, 8.0, (160, 120), 3, (0.0, 1.0))))
    return render_snapshot(frames, label="fight", score=0.91, camera=camera, when=datetime.now(timezone.utc))


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    root = tmp_path_factory.mktemp("console-browser")
    settings = console_settings(root)
    app, store = console_app(settings)
    (root / "media" / "loading-bay.mp4").write_bytes(b"\x00" * 64)
    now = datetime.now(timezone.utc)
    older = seed_incident(store, stream_id="cam-yard", name="yard", started=now - timedelta(hours=5),
                          snapshot=_snapshot_jpeg("yard"), key="yard")
    store.act(older, "false_alarm", actor="console:writer", note="two people hugging")
    iid = seed_incident(store, snapshot=_snapshot_jpeg("gate camera"), key="gate")
    write_clip(settings, store, iid)
    server = LocalServer(app).start()
    yield {"url": server.url, "store": store, "incident": iid, "settings": settings}
    server.stop()


def _login(page, base: str, key: str, path: str = "/ui/incidents"):
    from playwright.sync_api import expect

    page.goto(base + path)
    expect(page).to_have_url(f"{base}/ui/login?next={path.replace('/', '%2F')}")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(base + path)


def test_operator_logs_in_adds_a_camera_plays_the_clip_and_acks(page, shot, console):
    from playwright.sync_api import expect

    base, store, iid = console["url"], console["store"], console["incident"]
    _login(page, base, WRITE_KEY, "/ui/cameras")
    expect(page.get_by_test_id("user")).to_contain_text("writer")
    form = page.get_by_test_id("add-camera")
    form.get_by_label("Name").fill("loading bay")
    form.get_by_label("Source URL").fill("loading-bay.mp4")
    form.get_by_label("Location").fill("dock 3")
    form.get_by_role("button", name="Add camera").click()
    expect(page.get_by_test_id("camera").filter(has_text="loading bay")).to_contain_text("connecting")
    assert [s.name for s in store.list_streams()] == ["loading bay"]
    shot("cameras")

    page.get_by_role("navigation").get_by_role("link", name="Incidents").click()
    row = page.locator(f'[data-incident-id="{iid}"]')
    expect(row.get_by_test_id("incident-status")).to_have_text("open")
    expect(row.locator("img")).to_have_js_property("complete", True)
    assert row.locator("img").evaluate("img => img.naturalWidth") > 0  # the snapshot thumbnail loaded
    shot("incidents")

    row.get_by_role("link").first.click()
    expect(page).to_have_url(f"{base}/ui/incidents/{iid}")
    video = page.get_by_test_id("clip")
    video.evaluate("v => v.play()")
    page.wait_for_function("() => { const v = document.querySelector('video'); return v.readyState >= 2 && v.currentTime > 0; }")
    duration = video.evaluate("v => v.duration")
    assert duration > 1.0, duration  # the 2 s evidence clip, decoded by Chromium
    expect(page.get_by_test_id("timeline").locator("svg circle")).to_have_count(9)
    shot("incident")

    page.get_by_label("Note").fill("guard sent")
    page.get_by_role("button", name="Ack").click()
    expect(page.get_by_test_id("incident-status")).to_have_text("acknowledged")
    expect(page.get_by_test_id("audit")).to_contain_text("console:writer")
    expect(page.get_by_test_id("audit")).to_contain_text("guard sent")
    assert store.get_incident(iid).status == "acknowledged"
    shot("acked")

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{base}/ui/login")
    page.goto(f"{base}/ui/incidents")
    expect(page).to_have_url(f"{base}/ui/login?next=%2Fui%2Fincidents")


def test_a_form_without_its_token_changes_nothing(page, shot, console):
    from playwright.sync_api import expect

    base, store = console["url"], console["store"]
    iid = seed_incident(store, stream_id="cam-csrf", name="csrf camera", key="csrf")
    _login(page, base, WRITE_KEY, f"/ui/incidents/{iid}")
    page.locator('form[data-testid="act"] input[name="csrf_token"]').evaluate("el => el.remove()")
    page.get_by_role("button", name="Resolve").click()
    expect(page.get_by_test_id("error")).to_contain_text("security token")
    shot("refused")
    assert store.get_incident(iid).status == "open" and store.audit_trail(iid) == []
    page.goto(f"{base}/ui/incidents/{iid}")  # the positive control: the same form, token kept
    page.get_by_role("button", name="Resolve").click()
    expect(page.get_by_test_id("incident-status")).to_have_text("resolved")


def test_a_read_key_sees_without_action_buttons(page, console):
    from playwright.sync_api import expect

    base, iid = console["url"], console["incident"]
    _login(page, base, READ_KEY, f"/ui/incidents/{iid}")
    expect(page.get_by_text("Read-only view")).to_be_visible()
    expect(page.get_by_test_id("act")).to_have_count(0)
    page.get_by_role("navigation").get_by_role("link", name="Cameras").click()
    expect(page.get_by_test_id("add-camera")).to_have_count(0)
    page.get_by_role("navigation").get_by_role("link", name="System").click()
    expect(page.get_by_test_id("model")).to_contain_text("fight, normal")


def test_an_alert_link_opens_the_incident_from_no_session(page, shot, console):
    from playwright.sync_api import expect

    from bigsister_ray.alerts.links import LinkSigner

    base, iid = console["url"], console["incident"]
    link = LinkSigner(base, LINK_SECRET).incident_url(iid)
    response = page.goto(link)
    assert response.status == 200 and response.headers["content-type"].startswith("text/html")
    expect(page.get_by_role("heading", level=1)).to_contain_text("gate camera")
    expect(page.get_by_text("Viewing from an alert link")).to_be_visible()
    page.wait_for_function("() => document.querySelector('video').readyState >= 1")
    shot("link")
    expired = LinkSigner(base, LINK_SECRET, clock=lambda: time.time() - 8 * 24 * 3600).incident_url(iid)
    page.context.clear_cookies()
    page.goto(expired)
    expect(page).to_have_url(f"{base}/ui/login?next=%2Fui%2Fincidents%2F{iid}&why=link")
    expect(page.get_by_text("log in to open the incident")).to_be_visible()
