"""The number of stream shards follows the registered streams (Serve autoscaling with the shards' own policy), and
streams move to new shards in bounded steps; deleting streams frees their shards' capacity.

The app runs on the session's local Ray with ``serve.streams.per_shard = 2`` and up to 3 shards; the cameras are
live MPEG-TS servers on 127.0.0.1 (tests/_stream_server.py).
"""

from __future__ import annotations

import httpx
import pytest

from tests._serve_support import WRITE_KEY, make_checkpoint, serve_settings, start_app, wait_for
from tests._stream_server import StreamServer

pytestmark = pytest.mark.slow

APP = "serve-scaling-test"


@pytest.fixture(scope="module")
def app(tmp_path_factory, ray_local):
    from ray import serve

    root = tmp_path_factory.mktemp("serve-scaling")
    ckpt = make_checkpoint(root / "ckpt")
    settings = serve_settings(root, ckpt, shards={"min_shards": 1, "max_shards": 3, "lease_ttl_s": 3.0,
                                                  "moves_per_interval": 1})
    settings.serve.streams.per_shard = 2
    cameras = [StreamServer(fps=4.0, size=(64, 48)).start() for _ in range(5)]
    base = start_app(settings, APP)
    client = httpx.Client(base_url=base, headers={"X-API-Key": WRITE_KEY}, timeout=60)
    yield {"client": client, "cameras": cameras}
    client.close()
    serve.delete(APP)
    for cam in cameras:
        cam.stop()


def test_shards_are_added_as_streams_are_registered_and_removed_capacity_is_freed(app):
    c, cameras = app["client"], app["cameras"]
    shards = c.get("/shards").json()
    assert len(shards["shards"]) == 1 and shards["streams"] == 0, shards  # min_shards with nothing to watch
    ids = []
    for i, cam in enumerate(cameras):
        r = c.post("/streams", json={"url": cam.url("/live.ts"), "name": f"cam {i}"})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])

    def spread():
        body = c.get("/shards").json()
        loads = sorted(len(s["streams"]) for s in body["shards"])
        return len(body["shards"]) == 3 and not body["unowned"] and loads == [1, 2, 2] and body

    body = wait_for(spread, 120, 1.0, "three shards (ceil(5 / 2)) holding the five streams, at most two each")
    held = [sid for s in body["shards"] for sid in s["streams"]]
    assert sorted(held) == sorted(ids)  # each stream held by exactly one shard
    streams = {s["id"]: s for s in c.get("/streams").json()["streams"]}
    wait_for(lambda: all((s := c.get(f"/streams/{i}").json())["status"]["state"] == "live" for i in ids), 60, 1.0,
             "every stream live on its shard")
    assert {streams[i]["owner"]["shard_id"] for i in ids} == {s["shard_id"] for s in body["shards"]}

    for sid in ids[:4]:
        assert c.delete(f"/streams/{sid}").status_code == 204

    def freed():
        body = c.get("/shards").json()
        held = [sid for s in body["shards"] for sid in s["streams"]]
        return held == [ids[4]] and body["streams"] == 1 and body

    wait_for(freed, 60, 1.0, "the deleted streams' leases and shard capacity freed, the last stream still held")
