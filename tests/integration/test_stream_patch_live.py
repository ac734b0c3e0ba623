"""``PATCH /streams/{id}`` on a running app (real local Ray, real Serve, a real HTTP camera): changed rules apply to
the camera's next windows on the shard that holds it, without moving it; disabling stops it and frees its lease;
enabling runs it again.

The camera is tests/_stream_server.py's grey ramp and the checkpoint :func:`tests._serve_support.ramp_checkpoint`:
under k=1, n=1, close_after=1 rules it opens one incident every ramp period (40 frames, 5 s, 10 windows).
"""

from __future__ import annotations

import httpx
import pytest

from tests._serve_support import TINY_SPEC, WRITE_KEY, ramp_checkpoint, serve_settings, start_app, wait_for
from tests._stream_server import StreamServer

APP = "bigsister-patch"
#: windows of one ramp period
PERIOD = 10
FAST = {"threshold": 0.5, "k": 1, "n": 1, "close_after": 1, "cooldown_s": 0.0}


@pytest.fixture(scope="module")
def app(tmp_path_factory, ray_local):
    from ray import serve

    root = tmp_path_factory.mktemp("stream-patch")
    ckpt = ramp_checkpoint(root / "ckpt", threshold=0.5)
    settings = serve_settings(root, ckpt, shards={"lease_ttl_s": 3.0})
    for key, value in FAST.items():
        setattr(settings.alerts.default, key, value)
    base = start_app(settings, APP)
    client = httpx.Client(base_url=base, headers={"X-API-Key": WRITE_KEY}, timeout=60)
    yield client
    client.close()
    serve.delete(APP)


def test_patched_rules_apply_to_the_next_windows_and_disable_stops_the_camera(app):
    c = app

    def status(sid: str) -> dict:
        return c.get(f"/streams/{sid}").json()

    def windows(sid: str) -> int:
        return status(sid)["status"]["windows_classified"]

    def incidents(sid: str) -> int:
        return c.get("/incidents", params={"stream_id": sid}).json()["total"]

    def windows_past(sid: str, n: int, what: str) -> int:
        return wait_for(lambda: (w := windows(sid)) >= n and w, 60, 0.25, what)

    with StreamServer(fps=TINY_SPEC.fps, size=(64, 48)) as cam:
        res = c.post("/streams", json={"url": cam.url("/live.ts"), "name": "ramp", "realtime": True})
        assert res.status_code == 201, res.text
        sid = res.json()["id"]
        # positive control: under the deployment's rules the ramp opens incidents
        wait_for(lambda: incidents(sid) >= 2, 90, 0.5, "two incidents under the deployment's rules")
        token = status(sid)["owner"]["token"]

        assert c.patch(f"/streams/{sid}", json={"rules": {"fight": {**FAST, "enabled": False}}}).status_code == 200
        # one lease round (1 s) and a period of windows later the new rules hold; count from there
        settled = windows_past(sid, windows(sid) + PERIOD, "the shard's next lease round and a ramp period")
        quiet_from = incidents(sid)
        windows_past(sid, settled + 3 * PERIOD, "three more ramp periods of windows")
        assert incidents(sid) == quiet_from, "an incident opened on a class the camera no longer watches"

        assert c.patch(f"/streams/{sid}", json={"rules": {"fight": FAST}}).status_code == 200
        wait_for(lambda: incidents(sid) > quiet_from, 60, 0.5, "an incident once the class is watched again")
        assert status(sid)["owner"]["token"] == token  # applied by the shard that holds it: the stream never moved

        off = c.patch(f"/streams/{sid}", json={"enabled": False})
        assert off.status_code == 200 and off.json()["enabled"] is False
        stopped = wait_for(lambda: (s := status(sid))["owner"] is None and s, 30, 0.25, "the shard to let it go")
        assert stopped["status"]["state"] == "stopped"
        assert c.get("/shards").json()["unowned"] == [sid]

        on = c.patch(f"/streams/{sid}", json={"enabled": True})
        assert on.status_code == 200 and on.json()["enabled"] is True
        back = wait_for(lambda: (s := status(sid))["owner"] is not None and s, 60, 0.25, "a shard to take it again")
        assert back["owner"]["token"] > token
        windows_past(sid, back["status"]["windows_classified"] + 2, "windows again after it was enabled")
        assert c.delete(f"/streams/{sid}").status_code == 204
