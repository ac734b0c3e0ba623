"""End to end over HTTP: a live MPEG-TS camera on a local server, through the whole graph, into incidents.

The app runs on the session's local Ray; the camera is tests/_stream_server.py (real PyAV-encoded MPEG-TS over
HTTP on 127.0.0.1). The checkpoint is a random tiny3d whose calibrated ``fight`` threshold is set very low, so
every window is a hit and the k-of-n rule opens an incident (and, every window being a hit, keeps it open): that
exercises StreamShard (decode, windows, rules) -> IncidentService (persist first with the stream's fencing token,
then the console notifier) with no model training. Leases last 3 s (a round every second), so the status the
owner saves with its lease is at most 1 s old. Steps:

1. register the camera: 201, windows classified, state ``live``, owned by the one shard (``owner``, ``/shards``);
2. an incident for it appears in ``GET /incidents`` with its snapshot;
3. the camera server stops until the stream has tried it again in vain, and comes back on the same port: the
   stream goes through ``reconnecting`` and returns to ``live`` by itself with ``reconnects`` raised;
4. the app is deleted and started again on the same database: the old shard hands the stream over (state saved,
   lease freed), a shard of the new app claims it with a higher fencing token and it goes live again, continuing
   the SAME open incident (its rule state came with the lease), not opening a second one.
"""

from __future__ import annotations

import httpx
import pytest

from tests._serve_support import WRITE_KEY, make_checkpoint, serve_settings, start_app, wait_for
from tests._stream_server import StreamServer

pytestmark = pytest.mark.slow

APP = "serve-e2e"


@pytest.fixture(scope="module")
def local_ray():
    """The session's Ray when one is up; else a local one (2 CPUs) for this module, shut down after it.

    (The integration tier's ``ray_local`` fixture lives in tests/integration/conftest.py, out of reach here.)
    """
    import os

    import ray
    from ray import serve

    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    # address="local": always a new local Ray, never another one that happens to run on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="bigsister-tests")
    try:
        yield
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, local_ray):
    from ray import serve

    root = tmp_path_factory.mktemp("serve-e2e")
    ckpt = make_checkpoint(root / "ckpt", thresholds={"fight": 0.01})
    settings = serve_settings(root, ckpt, shards={"lease_ttl_s": 3.0})
    camera = StreamServer(fps=8.0, size=(64, 48)).start()
    base = start_app(settings, APP)
    client = httpx.Client(base_url=base, headers={"X-API-Key": WRITE_KEY}, timeout=60)
    yield {"root": root, "settings": settings, "camera": camera, "client": client, "base": base}
    client.close()
    camera.stop()
    if APP in serve.status().applications:
        serve.delete(APP)


def _status(client, sid):
    r = client.get(f"/streams/{sid}")
    assert r.status_code == 200, r.text
    return r.json()["status"]


def test_live_camera_classified_alerted_reconnected_and_resumed(setup):
    from ray import serve

    c, camera = setup["client"], setup["camera"]
    r = c.post("/streams", json={"url": camera.url("/live.ts"), "name": "gate camera", "location": "north gate"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]

    # 1. live, windows classified
    st = wait_for(lambda: (s := _status(c, sid))["state"] == "live" and s["windows_classified"] >= 3 and s,
                  90, 0.5, "the camera to be live with windows classified")
    assert st["fps"] > 0 and st["frames_decoded"] > 0 and st["last_frame_at"], st
    owner = c.get(f"/streams/{sid}").json()["owner"]
    shards = c.get("/shards").json()
    assert owner and [s["shard_id"] for s in shards["shards"]] == [owner["shard_id"]], (owner, shards)
    assert shards["shards"][0]["streams"] == [sid] and shards["unowned"] == [], shards

    # 2. the rules opened an incident, stored with the camera's name and a snapshot
    def incident():
        items = c.get("/incidents", params={"stream_id": sid}).json()["items"]
        return items and items[0]

    inc = wait_for(incident, 60, 1.0, "an incident for the camera")
    assert inc["label"] == "fight" and inc["stream_name"] == "gate camera" and inc["location"] == "north gate", inc
    snap = c.get(f"/incidents/{inc['id']}/snapshot")
    assert snap.status_code == 200 and snap.headers["content-type"].startswith("image/jpeg"), snap.status_code

    # 3. the camera goes away, the stream tries it again at least once in vain, and it comes back on the same port
    before = _status(c, sid)["reconnects"]
    camera.stop()
    wait_for(lambda: _status(c, sid)["state"] in ("reconnecting", "error"), 30, 0.3, "the stream to notice the outage")
    # a reconnect is counted as each attempt starts: the second one means the first failed against the dead port
    wait_for(lambda: _status(c, sid)["reconnects"] >= before + 2, 30, 0.3, "a reconnect attempt while the camera is down")
    assert _status(c, sid)["state"] != "live"
    camera.start()
    st = wait_for(lambda: (s := _status(c, sid))["state"] == "live" and s["reconnects"] > before and s,
                  60, 0.5, "the stream to come back live by itself")
    seen = st["windows_classified"]
    wait_for(lambda: _status(c, sid)["windows_classified"] > seen, 30, 0.5, "windows after the reconnect")

    open_before = [i for i in c.get("/incidents", params={"stream_id": sid}).json()["items"] if not i.get("ended_at")]
    assert [i["id"] for i in open_before] == [inc["id"]], open_before  # every window a hit: still the one incident

    # 4. restart the whole app on the same database: the registration is resumed by a shard of the new app
    token = c.get(f"/streams/{sid}").json()["owner"]["token"]
    seen = _status(c, sid)["windows_classified"]
    serve.delete(APP)
    start_app(setup["settings"], APP)
    listed = c.get("/streams").json()["streams"]
    assert [s["id"] for s in listed] == [sid]

    def resumed():
        s = c.get(f"/streams/{sid}").json()
        return (s["owner"] and s["owner"]["shard_id"] != owner["shard_id"] and s["owner"]["token"] > token
                and s["status"]["state"] == "live" and s["status"]["windows_classified"] > seen and s)

    wait_for(resumed, 90, 0.5, "a shard of the new app to claim the stream and play it again")
    items = c.get("/incidents", params={"stream_id": sid}).json()["items"]
    assert [i["id"] for i in items] == [inc["id"]] and not items[0].get("ended_at"), items  # continued, not reopened
    assert c.delete(f"/streams/{sid}").status_code == 204
    shard = serve.get_deployment_handle("StreamShard", app_name=APP)
    wait_for(lambda: sid not in shard.info.remote().result()["streams"] and sid not in shard.stream_threads.remote().result(),
             30, 0.5, "the shard to stop the deleted stream at its next lease round")
    ended = c.get(f"/incidents/{inc['id']}").json()
    assert ended.get("ended_at"), ended  # the delete ended the open incident

