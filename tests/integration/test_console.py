"""The web console in-process (FastAPI's TestClient, a temporary SQLite store): logins and sessions, the cookie's
flags, CSRF on every form, read vs write keys, signed alert links, the pages and their forms.

The browser tier (tests/browser/) drives the same pages in Chromium; these tests pin the rules cheaply.
"""

from __future__ import annotations

import time
from http.cookies import SimpleCookie

import pytest
from fastapi.testclient import TestClient

from tests._console import LINK_SECRET, console_app, console_settings, csrf_of, login, seed_incident
from tests._serve_support import READ_KEY, WRITE_KEY


@pytest.fixture
def app(tmp_path):
    settings = console_settings(tmp_path)
    app, store = console_app(settings)
    return {"app": app, "store": store, "settings": settings, "tmp": tmp_path}


@pytest.fixture
def client(app):
    with TestClient(app["app"], base_url="http://testserver") as c:
        yield c


def _cookie_header(response) -> SimpleCookie:
    jar = SimpleCookie()
    for raw in response.headers.get_list("set-cookie"):
        jar.load(raw)
    return jar


def test_a_page_without_a_session_redirects_to_the_login_and_back_after_it(client):
    r = client.get("/ui/cameras?x=1", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=%2Fui%2Fcameras%3Fx%3D1", r.headers
    done = login(client, READ_KEY, "/ui/cameras?x=1")
    assert done.status_code == 303 and done.headers["location"] == "/ui/cameras?x=1"
    page = client.get("/ui/cameras")
    assert page.status_code == 200 and "reader" in page.text and "Add a camera" not in page.text  # a read key sees


def test_the_session_cookie_is_httponly_samesite_lax_signed_and_limited_to_the_console(client):
    done = login(client, WRITE_KEY)
    morsel = _cookie_header(done)["bigsister_session"]
    assert morsel["httponly"] and morsel["samesite"].lower() == "lax" and morsel["path"] == "/ui", morsel.output()
    assert not morsel["secure"]  # plain HTTP, public_url http://: a Secure cookie would never come back
    assert WRITE_KEY not in morsel.value  # the key is never in the cookie
    assert client.get("/ui/incidents", follow_redirects=False).status_code == 200
    client.cookies.set("bigsister_session", morsel.value[:-2] + ("AA" if not morsel.value.endswith("AA") else "BB"), path="/ui")
    assert client.get("/ui/incidents", follow_redirects=False).status_code == 303  # tampered: log in again


def test_secure_cookies_behind_tls(tmp_path):
    settings = console_settings(tmp_path, secure_cookies="auto")
    settings.serve.public_url = "https://cctv.example.org"
    app, _ = console_app(settings)
    with TestClient(app, base_url="http://testserver") as c:
        assert _cookie_header(login(c, WRITE_KEY))["bigsister_session"]["secure"]
    settings = console_settings(tmp_path / "b")
    app, _ = console_app(settings)
    with TestClient(app, base_url="https://testserver") as c:  # a request that came over HTTPS
        assert _cookie_header(login(c, WRITE_KEY))["bigsister_session"]["secure"]


def test_a_wrong_key_is_refused_with_a_page_not_json(client):
    done = login(client, "not-a-key-0123456789")
    assert done.status_code == 401 and done.headers["content-type"].startswith("text/html"), done.text
    assert "is not one of this service" in done.text
    assert client.get("/ui/incidents", follow_redirects=False).status_code == 303


def test_the_api_still_needs_its_key_and_the_console_asks_for_none(client):
    assert client.get("/incidents").status_code == 401
    assert client.get("/uiadmin").status_code == 401  # only /ui and /ui/... are the console's
    assert client.get("/ui/login").status_code == 200
    login(client, WRITE_KEY)
    assert client.get("/incidents").status_code == 401  # a console session is not an API key


def test_ack_from_the_console_writes_the_audit_trail(app, client):
    iid = seed_incident(app["store"], snapshot=b"\xff\xd8jpeg")
    login(client, WRITE_KEY)
    page = client.get(f"/ui/incidents/{iid}")
    assert page.status_code == 200 and "<svg" in page.text and "Ack" in page.text
    r = client.post(f"/ui/incidents/{iid}/act", data={"action": "ack", "note": "guard on the way",
                                                      "csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/ui/incidents/{iid}"
    assert app["store"].get_incident(iid).status == "acknowledged"
    trail = app["store"].audit_trail(iid)
    assert [(a.action, a.actor, a.note) for a in trail] == [("ack", "console:writer", "guard on the way")]
    page = client.get(f"/ui/incidents/{iid}")
    assert "console:writer" in page.text and "guard on the way" in page.text
    again = client.post(f"/ui/incidents/{iid}/act", data={"action": "ack", "csrf_token": csrf_of(page.text)})
    assert again.status_code == 409 and "acknowledged" in again.text  # the store's refusal, shown on the page


def test_a_false_alarm_pressed_by_mistake_is_reopened_from_the_console(app, client):
    iid = seed_incident(app["store"])
    login(client, WRITE_KEY)
    page = client.get(f"/ui/incidents/{iid}")
    assert 'value="reopen"' not in page.text  # an open incident offers ack, false alarm and resolve
    client.post(f"/ui/incidents/{iid}/act", data={"action": "false_alarm", "csrf_token": csrf_of(page.text)})
    page = client.get(f"/ui/incidents/{iid}")
    assert 'value="reopen"' in page.text and 'value="ack"' not in page.text
    r = client.post(f"/ui/incidents/{iid}/act", data={"action": "reopen", "note": "it was a fight",
                                                      "csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303 and app["store"].get_incident(iid).status == "open"
    assert [a.action for a in app["store"].audit_trail(iid)] == ["false_alarm", "reopen"]


@pytest.mark.parametrize("token", [None, "", "forged-token"])
def test_a_form_post_without_the_sessions_token_changes_nothing(app, client, token):
    iid = seed_incident(app["store"])
    login(client, WRITE_KEY)
    page = client.get(f"/ui/incidents/{iid}")
    data = {"action": "resolve", "note": "x"}
    if token is not None:
        data["csrf_token"] = token
    r = client.post(f"/ui/incidents/{iid}/act", data=data)
    assert r.status_code == 403 and "security token" in r.text, r.text
    assert app["store"].get_incident(iid).status == "open" and app["store"].audit_trail(iid) == []
    # the positive control: the same post with the page's token goes through
    data["csrf_token"] = csrf_of(page.text)
    assert client.post(f"/ui/incidents/{iid}/act", data=data, follow_redirects=False).status_code == 303
    assert app["store"].get_incident(iid).status == "resolved"


def test_another_sessions_token_is_refused(app, client):
    iid = seed_incident(app["store"])
    login(client, WRITE_KEY)
    with TestClient(app["app"]) as other:
        login(other, WRITE_KEY)
        foreign = csrf_of(other.get(f"/ui/incidents/{iid}").text)
    r = client.post(f"/ui/incidents/{iid}/act", data={"action": "ack", "csrf_token": foreign})
    assert r.status_code == 403 and app["store"].get_incident(iid).status == "open"


def test_login_and_logout_forms_need_the_token_too(client):
    page = client.get("/ui/login")
    r = client.post("/ui/login", data={"api_key": WRITE_KEY, "next": "/ui/incidents"})
    assert r.status_code == 403 and client.get("/ui/incidents", follow_redirects=False).status_code == 303
    login(client, WRITE_KEY)
    assert client.post("/ui/logout", data={}).status_code == 403
    assert client.get("/ui/incidents", follow_redirects=False).status_code == 200
    token = csrf_of(client.get("/ui/incidents").text)
    out = client.post("/ui/logout", data={"csrf_token": token}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/ui/login"
    assert client.get("/ui/incidents", follow_redirects=False).status_code == 303
    assert page.status_code == 200


def test_a_read_key_sees_but_cannot_act(app, client):
    iid = seed_incident(app["store"])
    login(client, READ_KEY)
    page = client.get(f"/ui/incidents/{iid}")
    assert page.status_code == 200 and "Read-only view" in page.text
    r = client.post(f"/ui/incidents/{iid}/act", data={"action": "ack", "csrf_token": csrf_of(page.text)})
    assert r.status_code == 403 and "may only read" in r.text
    assert app["store"].get_incident(iid).status == "open"


def test_login_never_sends_the_browser_to_another_site(client):
    for target in ("https://evil.example/", "//evil.example/ui/x", "/incidents", "/ui\\..\\x"):
        done = login(client, READ_KEY, target)
        assert done.headers["location"] == "/ui/incidents", (target, done.headers["location"])
        client.cookies.clear()


def _signed(path: str, exp: float) -> str:
    from bigsister_ray.alerts.links import sign_path

    q = sign_path(path, LINK_SECRET, exp)
    return f"{path}?exp={q['exp']}&sig={q['sig']}"


def test_a_signed_alert_link_opens_its_incident_read_only_without_a_login(app, client):
    store = app["store"]
    iid = seed_incident(store, snapshot=b"\xff\xd8jpeg")
    other = seed_incident(store, stream_id="cam-2", key="other")
    r = client.get(_signed(f"/ui/incidents/{iid}", time.time() + 600), follow_redirects=False)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), r.text
    assert "gate camera" in r.text and "Read-only view" in r.text
    assert client.get(f"/ui/incidents/{iid}/snapshot").content == b"\xff\xd8jpeg"  # its evidence, by the link's session
    assert client.get(f"/ui/incidents/{iid}").status_code == 200
    for denied in (f"/ui/incidents/{other}", f"/ui/incidents/{other}/snapshot", "/ui/cameras", "/ui/incidents"):
        assert client.get(denied, follow_redirects=False).status_code == 303, denied
    assert 'data-testid="act"' not in r.text  # no action form for a link viewer, and a post is sent to the login
    act = client.post(f"/ui/incidents/{iid}/act", data={"action": "ack"}, follow_redirects=False)
    assert act.status_code == 303 and act.headers["location"].startswith("/ui/login")
    assert store.get_incident(iid).status == "open"


@pytest.mark.parametrize("case", ["expired", "tampered", "other page"])
def test_a_bad_alert_link_asks_for_a_login_never_json(app, client, case):
    iid = seed_incident(app["store"])
    url = {"expired": _signed(f"/ui/incidents/{iid}", time.time() - 5),
           "tampered": _signed(f"/ui/incidents/{iid}", time.time() + 600)[:-3] + "xyz",
           "other page": _signed(f"/ui/incidents/{iid + 1}", time.time() + 600).replace(f"/{iid + 1}?", f"/{iid}?")}[case]
    r = client.get(url, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/ui/login?next=%2Fui%2Fincidents%2F{iid}&why=link"
    page = client.get(r.headers["location"])
    assert page.status_code == 200 and "log in to open the incident" in page.text
    done = client.post("/ui/login", data={"api_key": READ_KEY, "next": f"/ui/incidents/{iid}",
                                          "csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert done.headers["location"] == f"/ui/incidents/{iid}"


def test_add_and_delete_a_camera_through_the_forms(app, client):
    (app["tmp"] / "media" / "gate.mp4").write_bytes(b"\x00" * 64)
    login(client, WRITE_KEY)
    page = client.get("/ui/cameras")
    token = csrf_of(page.text)
    bad = client.post("/ui/cameras", data={"name": "x", "url": "http://10.0.0.1:6379/x", "csrf_token": token,
                                           "location": ""})
    assert bad.status_code == 400 and "the camera was not added" in bad.text and app["store"].list_streams() == []
    r = client.post("/ui/cameras", data={"name": "gate", "url": "gate.mp4", "location": "north", "realtime": "on",
                                         "csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303, r.text
    [cam] = app["store"].list_streams()
    assert cam.name == "gate" and cam.location == "north" and cam.options["registered_by"] == "writer"
    grid = client.get("/ui/cameras")
    assert 'data-testid="camera"' in grid.text and "connecting" in grid.text
    no_token = client.post(f"/ui/cameras/{cam.id}/delete", data={})
    assert no_token.status_code == 403 and len(app["store"].list_streams()) == 1
    gone = client.post(f"/ui/cameras/{cam.id}/delete", data={"csrf_token": token}, follow_redirects=False)
    assert gone.status_code == 303 and app["store"].list_streams() == []


def test_the_incident_list_filters_and_the_system_page(app, client):
    store = app["store"]
    first = seed_incident(store, key="a")
    second = seed_incident(store, stream_id="cam-2", name="yard", key="b")
    store.act(first, "false_alarm", actor="test")
    login(client, READ_KEY)
    everything = client.get("/ui/incidents")
    assert everything.status_code == 200 and everything.text.count('data-testid="incident-row"') == 2
    only_open = client.get("/ui/incidents", params={"status": "open"})
    assert only_open.text.count('data-testid="incident-row"') == 1 and f'data-incident-id="{second}"' in only_open.text
    by_camera = client.get("/ui/incidents", params={"camera": "cam-1"})
    assert f'data-incident-id="{first}"' in by_camera.text and f'data-incident-id="{second}"' not in by_camera.text
    later = client.get("/ui/incidents", params={"until": "2000-01-01T00:00"})
    assert 'data-testid="incident-row"' not in later.text
    assert client.get("/ui/incidents", params={"since": "yesterday"}).status_code == 400
    system = client.get("/ui/system")
    assert system.status_code == 200 and "fight, normal" in system.text and "pending 2" in system.text, system.text


def test_the_timeline_plot_is_escaped_svg():
    from bigsister_ray.serve.ui.plot import timeline_svg

    svg = timeline_svg([[0.0, 0.1], [1.0, 0.9], [2.0, 0.2]], threshold=0.5, peak=(1.0, 1.5), label="<script>")
    assert svg.startswith("<svg") and svg.count("<circle") == 3 and "<script>" not in svg and "&lt;script&gt;" in svg
    assert "no scores recorded" in timeline_svg([])


def test_edit_a_cameras_rules_and_disable_it_through_the_form(app, client):
    from bigsister_ray.incidents.models import StreamCreate

    store = app["store"]
    cam = store.add_stream(StreamCreate(name="gate", url="gate.mp4", options={"realtime": True}))
    login(client, WRITE_KEY)
    page = client.get(f"/ui/cameras/{cam.id}")
    assert page.status_code == 200 and 'name="rule-fight-k"' in page.text
    form = {"csrf_token": csrf_of(page.text), "name": "main gate", "location": "north", "realtime": "on", "enabled": "on",
            "rule-fight-watch": "on", "rule-fight-threshold": "0.8", "rule-fight-k": "2", "rule-fight-n": "4",
            "rule-fight-cooldown_s": "", "rule-fight-active_hours": "08:00-12:00, 13:00-18:00",
            "rule-fight-timezone": "Asia/Seoul"}
    bad = client.post(f"/ui/cameras/{cam.id}", data={**form, "rule-fight-k": "9"})  # k > n
    assert bad.status_code == 400 and "nothing was changed" in bad.text, bad.text
    assert store.get_stream(cam.id).name == "gate"
    r = client.post(f"/ui/cameras/{cam.id}", data=form, follow_redirects=False)
    assert r.status_code == 303, r.text
    saved = store.get_stream(cam.id)
    assert saved.name == "main gate" and saved.enabled and saved.location == "north"
    assert saved.options["alerts"] == {"fight": {"threshold": 0.8, "k": 2, "n": 4, "active_hours": ["08:00-12:00", "13:00-18:00"],
                                                 "timezone": "Asia/Seoul"}}, saved.options
    again = client.get(f"/ui/cameras/{cam.id}")
    assert 'value="08:00-12:00, 13:00-18:00"' in again.text and 'value="0.8"' in again.text
    off = {k: v for k, v in form.items() if k != "enabled"}  # the unchecked box: disabled
    assert client.post(f"/ui/cameras/{cam.id}", data=off, follow_redirects=False).status_code == 303
    assert store.get_stream(cam.id).enabled is False
    grid = client.get("/ui/cameras")
    assert "disabled" in grid.text


def test_the_session_key_stays_out_of_what_workers_get_and_signs_for_every_replica(tmp_path):
    from bigsister_ray.security.auth import Authenticator
    from bigsister_ray.serve.ui.sessions import ConsoleSession, SessionCodec

    secret = "console-session-secret-0123456789abcdef"
    settings = console_settings(tmp_path, session_secret=secret)
    assert secret not in settings.for_workers().model_dump_json() and settings.for_workers().serve.ui.session_secret is None
    cookie = SessionCodec.from_settings(settings, None).dumps(ConsoleSession.login("writer", "write"))
    assert SessionCodec.from_settings(settings, None).loads(cookie).user == "writer"  # another replica, same key
    derived = console_settings(tmp_path / "b")
    auth = Authenticator.from_config(derived.auth)
    cookie = SessionCodec.from_settings(derived, auth).dumps(ConsoleSession.login("writer", "write"))
    assert SessionCodec.from_settings(derived, Authenticator.from_config(derived.auth)).loads(cookie) is not None
    rotated = derived.auth.model_copy(update={"keys": derived.auth.keys[:1]})  # a key removed: sessions end
    assert SessionCodec.from_settings(derived, Authenticator.from_config(rotated)).loads(cookie) is None


def test_a_link_viewers_session_ends_with_its_link():
    from bigsister_ray.serve.ui.sessions import ConsoleSession, SessionCodec

    codec = SessionCodec("k" * 32, ttl_s=3600)
    live = ConsoleSession.anonymous().as_link_viewer(7, until=int(time.time()) + 60)
    assert codec.loads(codec.dumps(live)) == live and live.sees_incident(7) and not live.sees_incident(8)
    ended = ConsoleSession.anonymous().as_link_viewer(7, until=int(time.time()) - 1)
    assert codec.loads(codec.dumps(ended)) is None  # the cookie outlives the link in the browser; not here


def test_the_camera_grid_shows_each_cameras_newest_frame_to_a_session(app, client):
    import io

    import numpy as np
    from PIL import Image

    from bigsister_ray.incidents.models import StreamCreate
    from bigsister_ray.serve.evidence import latest_frame_relpath

    app["store"].add_stream(StreamCreate(id="gate-1", url="file:///gate.mp4", name="gate"))
    url = "/ui/cameras/gate-1/frame"
    assert client.get(url, follow_redirects=False).status_code == 303  # no session: the login
    login(client, READ_KEY)
    assert f'src="{url}"' in client.get("/ui/cameras").text and f'src="{url}"' in client.get("/ui/cameras/gate-1").text
    none_yet = client.get(url)
    assert none_yet.status_code == 404 and "no frame yet" in none_yet.text
    picture = app["settings"].incidents.media_dir / latest_frame_relpath("gate-1")
    picture.parent.mkdir(parents=True)
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(buf, format="JPEG")
    picture.write_bytes(buf.getvalue())
    got = client.get(url)
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg" and got.content == buf.getvalue()
    assert client.get("/ui/cameras/other/frame").status_code == 404
