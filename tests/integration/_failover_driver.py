"""Driver for tests/integration/test_shard_failover.py, run in its own process (never next to the shared Ray).

A simulated three-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head and two worker nodes,
each with its own CPUs), PostgreSQL (the URL is the second argument), a local server speaking the Slack Web API,
and nine live MPEG-TS cameras (tests/_stream_server.py) served on 127.0.0.1. The checkpoint's ``fight``
threshold is so low that every window is a hit: every camera opens one incident at once and keeps it open (it
never drops below the close threshold, and the cooldown is long), so a camera that moves must continue its
incident, never open a second one, and Slack must get exactly one post per camera.

Steps (each recorded in the JSON written to the first argument, with the time it took):

1. deploy with three shards at most one per node; register nine cameras; wait until every camera is live with
   its incident open and alerted;
2. hold back the lease renewals of the shard that holds camera 1 (a stalled or partitioned shard): its streams
   come back live on other shards, and every shard's record of when it took chunks of each stream (per fencing
   token) shows the stalled shard stopped before the next owner started;
3. kill the shard replica (not its node) that holds camera 0: its streams come back live elsewhere;
4. remove the worker node that holds the most cameras: every camera it held comes back live on another node;
5. read back incidents per camera and the Slack posts.

Usage: ``python tests/integration/_failover_driver.py OUT.json POSTGRES_URL WORKDIR``
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

CAMERAS = 9
TTL_S = 4.0


def main(out: Path, pg_url: str, work: Path) -> None:
    import httpx
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from bigsister_ray.config import Settings
    from bigsister_ray.serve.app import AppArgs, build_app
    from tests._serve_support import WRITE_KEY, free_port, make_checkpoint, wait_for
    from tests._slack_server import FakeSlack
    from tests._stream_server import StreamServer

    result: dict[str, Any] = {"steps": {}}
    t_start = time.monotonic()

    def step(name: str, **data: Any) -> None:
        result["steps"][name] = {"at_s": round(time.monotonic() - t_start, 1), **data}
        out.write_text(json.dumps(result, indent=1, default=str))

    slack = FakeSlack().start()
    cameras = [StreamServer(fps=6.0, size=(64, 48)).start() for _ in range(CAMERAS)]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address, log_to_driver=False, namespace="bigsister-failover")
        head_id = ray.get_runtime_context().get_node_id()
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        ckpt = make_checkpoint(work / "ckpt", thresholds={"fight": 0.01})
        settings = Settings(
            serve={"checkpoint": str(ckpt), "classifier": {"max_batch_size": 16, "batch_wait_timeout_s": 0.02, "num_cpus": 0.5},
                   "streams": {"media_root": str(work), "per_shard": 5, "backoff_initial_s": 0.3, "backoff_max_s": 2.0,
                               "healthy_after_s": 1.0, "watchdog_s": 3.0, "open_timeout_s": 3.0},
                   "shards": {"min_shards": 3, "max_shards": 3, "max_per_node": 1, "lease_ttl_s": TTL_S}},
            database={"url": pg_url},
            alerts={"notifier": "slack", "slack": {"token": slack.token, "channel": "C0INCIDENT", "base_url": slack.base_url},
                    "default": {"k": 2, "n": 3, "close_after": 1000, "cooldown_s": 3600}},
            auth={"keys": [{"name": "writer", "key": WRITE_KEY, "scope": "write"}], "allow_loopback": True},
        )
        serve.run(build_app(AppArgs.from_settings(settings)), name="failover", route_prefix="/")
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": WRITE_KEY}, timeout=30)
        ids = []
        for i, cam in enumerate(cameras):
            r = client.post("/streams", json={"url": cam.url("/live.ts"), "name": f"camera {i}"})
            r.raise_for_status()
            ids.append(r.json()["id"])

        def get(path: str, **kwargs: Any) -> httpx.Response:
            # Every node runs a Serve proxy on the same port; a removed node's proxy resets the connections it
            # held, so a poll that lands on one is sent again on a new connection (a client behind a load
            # balancer does the same).
            for attempt in range(3):
                try:
                    return client.get(path, **kwargs)
                except httpx.TransportError:
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")

        def streams() -> dict[str, Any]:
            return {s["id"]: s for s in get("/streams").json()["streams"]}

        def incidents() -> list[dict[str, Any]]:
            return get("/incidents", params={"limit": 500}).json()["items"]

        def all_live_and_alerted() -> dict[str, Any] | None:
            st = streams()
            live = all(st[i]["status"]["state"] == "live" and st[i]["owner"] for i in ids)
            alerted = {inc["stream_id"] for inc in incidents() if inc.get("alert_status") == "sent"}
            return st if live and set(ids) <= alerted else None

        def moved_and_live(ids_moved: list[str], old_shard: str, gone_node: str | None) -> dict[str, Any] | None:
            st = streams()
            for i in ids_moved:
                o = st[i]["owner"]
                if not o or o["shard_id"] == old_shard or (gone_node and o["node_id"] == gone_node):
                    return None
                if st[i]["status"]["state"] != "live":
                    return None
            return st

        st = wait_for(all_live_and_alerted, 240, what="all nine cameras live with their incident alerted")
        placement = {i: (st[i]["owner"]["shard_id"], st[i]["owner"]["node_id"]) for i in ids}
        step("started", placement=placement, shards=get("/shards").json(), head=head_id,
             workers=[w.node_id for w in workers])

        # 2. stall the lease renewals of the shard holding camera 1: it must stop before another shard starts
        handle = serve.get_deployment_handle("StreamShard", app_name="failover")
        stalled_shard = placement[ids[1]][0]
        stalled = [i for i in ids if placement[i][0] == stalled_shard]
        wait_for(lambda: handle.stall_renewals.remote(3 * TTL_S, shard_id=stalled_shard).result(), 30,
              what="the stalled shard to take the drill", interval=0.0)
        t0 = time.monotonic()
        st = wait_for(lambda: moved_and_live(stalled, stalled_shard, None), 120,
                   what="the stalled shard's streams live on another shard", interval=0.25)
        seconds = round(time.monotonic() - t0, 1)
        live_shards = {sh["shard_id"] for sh in get("/shards").json()["shards"]} | {stalled_shard}
        infos: dict[str, Any] = {}

        def decoded_by_the_new_owners() -> bool:
            # "live" is reported when a stream connects, its first decode span a chunk later: wait for a span of
            # every moved stream on a shard other than the stalled one, with an answer from every shard.
            info = handle.info.remote().result()
            infos[info["shard_id"]] = info
            if not live_shards <= set(infos):
                return False
            elsewhere = {sid for shard, inf in infos.items() if shard != stalled_shard
                         for sid, _token, _first, _last in inf["decoded"]}
            return set(stalled) <= elsewhere

        wait_for(decoded_by_the_new_owners, 60, what="an info() answer from every shard, each moved stream decoded "
                 "by its new owner", interval=0.05)
        spans = [(sid, token, shard, first, last) for shard, info in infos.items()
                 for sid, token, first, last in info["decoded"] if sid in stalled]
        step("renewals_stalled", shard=stalled_shard, moved=stalled, seconds=seconds, spans=spans,
             now={i: st[i]["owner"]["shard_id"] for i in stalled})

        # 3. kill the shard replica holding camera 0 (its node stays)
        st = wait_for(all_live_and_alerted, 120, what="every camera live again before a shard is killed")
        placement = {i: (st[i]["owner"]["shard_id"], st[i]["owner"]["node_id"]) for i in ids}
        victim_shard, victim_node = placement[ids[0]]
        moved = [i for i in ids if placement[i][0] == victim_shard]
        replica = next(a for a in ray.util.list_named_actors(all_namespaces=True)
                       if "StreamShard" in a["name"] and victim_shard.split("-")[0] in a["name"])
        t0 = time.monotonic()
        ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)


        st = wait_for(lambda: moved_and_live(moved, victim_shard, None), 120, interval=0.25,
                      what="the killed shard's streams live elsewhere")
        step("shard_killed", shard=victim_shard, node=victim_node, moved=moved, seconds=round(time.monotonic() - t0, 1),
             now={i: (st[i]["owner"]["shard_id"], st[i]["owner"]["node_id"]) for i in moved})

        # 4. remove the worker node holding the most cameras
        st = wait_for(all_live_and_alerted, 120, what="every camera live again before the node is removed")
        by_node: dict[str, list[str]] = {}
        for i in ids:
            by_node.setdefault(st[i]["owner"]["node_id"], []).append(i)
        worker = max((w for w in workers if w.node_id in by_node), key=lambda w: len(by_node[w.node_id]))
        lost = by_node[worker.node_id]
        old_shards = {st[i]["owner"]["shard_id"] for i in lost}
        t0 = time.monotonic()
        cluster.remove_node(worker)
        st = wait_for(lambda: moved_and_live(lost, next(iter(old_shards)), worker.node_id), 120,
                   what="the removed node's streams live on another node", interval=0.25)
        step("node_removed", node=worker.node_id, moved=lost, seconds=round(time.monotonic() - t0, 1),
             now={i: (st[i]["owner"]["shard_id"], st[i]["owner"]["node_id"]) for i in lost})

        # 5. what was recorded: give deliveries one sweep to settle, then count
        wait_for(lambda: all(inc.get("alert_status") == "sent" for inc in incidents()), 60, what="every alert delivered")
        per_stream: dict[str, int] = {}
        for inc in incidents():
            per_stream[inc["stream_id"]] = per_stream.get(inc["stream_id"], 0) + 1
        posts = [m for m in slack.top_level_messages()]
        step("counted", incidents_per_stream=per_stream, slack_posts=len(posts),
             slack_texts=sorted(str(m.get("text", ""))[:80] for m in posts), ids=ids)
        result["ok"] = True
    except BaseException as err:  # recorded for the test to show
        result["error"] = f"{type(err).__name__}: {err}"
        result["traceback"] = traceback.format_exc()
    finally:
        out.write_text(json.dumps(result, indent=1, default=str))
        try:
            serve.shutdown()
        except Exception:  # the cluster may already be partly gone
            pass
        ray.shutdown()
        cluster.shutdown()
        for cam in cameras:
            cam.stop()
        slack.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
