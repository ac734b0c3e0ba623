"""Benchmark (not a test): the StreamShard serving graph with live H.264 cameras, decoding to alerts included.

Cameras: an H.264 file (``ffmpeg`` ``testsrc2``, 25 fps, GOP 2 s, ``veryfast``) remuxed, paced at real time and
looped, as live MPEG-TS over HTTP on 127.0.0.1 (a :class:`tests._stream_server.StreamServer` whose ``/live.ts``
sends the file instead of encoding; one server process per resolution, one connection per camera). Streams are
registered through ``POST /streams``; each StreamShard decodes, samples, scales, windows, sends the windows to
the Classifier and applies the alert rules. Model: the tiny3d test checkpoint of ``tests/_serve_support.py``
(``make_checkpoint``: random weights, ClipSpec 8 frames of 32 px at 8 fps, stride 4), so the model is cheap and
decoding dominates; ``--checkpoint FILE`` serves a trained model instead (``bigsister demo``'s, or one trained
with ``configs/fight-cpu.yaml``), and ``--recipe CONFIG`` the model and clip of a config file with random weights
(inference costs what the architecture and clip cost, whatever the weights). Database: PostgreSQL (``BIGSISTER_TEST_POSTGRES_URL``; ``eval "$(bash .ci/start_postgres.sh)"``),
a fresh database per topology.

Modes:

- ``cpu``: CPU-seconds per camera-second at 320x240 (500 kbit/s) and 1920x1080 (``--hd-bitrate``), for (a) one
  shard on a single-node local Ray and (b) three shards on a simulated three-node cluster
  (``ray.cluster_utils.Cluster``, 2 CPUs per node, at most one shard per node), with the same cameras. CPU =
  user + system time of the processes (psutil, by Ray process title) over ``--window`` seconds after every stream
  is live, balanced and ``--warmup`` seconds in, divided by cameras x seconds: the StreamShard processes, and the
  graph (shards + Classifier + Ingress). ``b/a`` is the three-shard figure over the one-shard figure.
- ``capacity``: one shard on a single-node local Ray (``serve.streams.per_shard`` 1000), 320x240 cameras added
  in ``--steps``; a step passes when, over ``--hold`` seconds, no frame is dropped, no stream reconnects or
  restarts (its counters would start again at 0), every stream's sampled fps at the end is within 10% of the
  clip fps, and the Classifier scored at least 90% of the windows the cameras make (clip fps / stride each). Reports the largest count that passed.

Run::

    eval "$(bash .ci/start_postgres.sh)"
    python benchmarks/bench_shards.py --mode cpu
    python benchmarks/bench_shards.py --mode capacity
    python benchmarks/bench_shards.py --mode capacity --recipe configs/fight-cpu.yaml --steps 4,8,12
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
APP = "shards"
SMALL, HD = "320x240", "1920x1080"


# ---------------------------------------------------------------------------------------------- cameras
def make_ts(path: Path, size: str, seconds: float, bitrate: str) -> Path:
    """An H.264 MPEG-TS file of ``testsrc2`` (the bench_stream_decode.py encoding settings)."""
    cmd = ["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
           "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-b:v", bitrate, "-maxrate", bitrate,
           "-bufsize", bitrate, "-g", "50", "-pix_fmt", "yuv420p", "-f", "mpegts", str(path)]
    subprocess.run(cmd, check=True)
    return path


def _serve_file(path: str, conn) -> None:
    """Child process: serve ``path`` as a looped, paced live MPEG-TS at ``/live.ts`` until told to stop."""
    sys.path.insert(0, str(REPO))
    import av

    from tests._stream_server import StreamServer, _SocketWriter

    class FileStreamServer(StreamServer):
        def _write_ts(self, wfile, seconds, sink=None) -> None:
            sink = _SocketWriter(wfile, self._stopped)
            t0, offset = time.monotonic(), 0.0
            with av.open(sink, mode="w", format="mpegts", buffer_size=1024, container_options={"flush_packets": "1"}) as out:
                ost = None
                while not self._stopped.is_set():
                    with av.open(path) as inp:
                        ist = inp.streams.video[0]
                        if ost is None:
                            ost = out.add_stream_from_template(ist)
                        tb = ist.time_base
                        first = last = None
                        for pkt in inp.demux(ist):
                            if pkt.dts is None:
                                continue
                            first = pkt.dts if first is None else first
                            last = pkt.dts
                            due = t0 + offset + float((pkt.dts - first) * tb)
                            if due > time.monotonic() and self._stopped.wait(due - time.monotonic()):
                                return
                            shift = int(round(offset / tb))
                            pkt.pts = None if pkt.pts is None else pkt.pts - first + shift
                            pkt.dts = pkt.dts - first + shift
                            pkt.stream = ost
                            out.mux(pkt)
                        offset += float((last - first) * tb) + 1 / 25

    server = FileStreamServer().start()
    conn.send(server.url("/live.ts"))
    conn.recv()  # any message: stop
    server.stop()


class Cameras:
    """A camera server process for one file; ``url`` is its live stream."""

    def __init__(self, path: Path) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_file, args=(str(path), child), daemon=True)
        self._proc.start()
        self.url = self._conn.recv()

    def stop(self) -> None:
        self._conn.send("stop")
        self._proc.join(10)


# ---------------------------------------------------------------------------------------------- the app
def _settings(root: Path, ckpt: Path, db_url: str, shards: int, per_node: int, per_shard: int, ttl_s: float):
    from bigsister_ray.config import Settings

    return Settings(
        serve={"checkpoint": str(ckpt),
               "classifier": {"max_batch_size": 16, "batch_wait_timeout_s": 0.02, "num_cpus": 0.5},
               "streams": {"media_root": str(root), "per_shard": per_shard, "open_timeout_s": 10.0, "watchdog_s": 10.0},
               "shards": {"min_shards": shards, "max_shards": shards, "max_per_node": per_node, "lease_ttl_s": ttl_s,
                          "journal_dir": str(root / "journal")}},
        database={"url": db_url},
        alerts={"alert_file": str(root / "alerts.jsonl"), "notifier": "console"},
        auth={"enabled": False, "allow_loopback": True},
    )


class Graph:
    """The serving app on a local Ray (``nodes`` == 1) or a simulated cluster of ``nodes`` nodes of 2 CPUs."""

    def __init__(self, root: Path, ckpt: Path, db_url: str, *, nodes: int, shards: int, per_shard: int,
                 ttl_s: float) -> None:
        import httpx
        import ray
        from ray import serve

        from bigsister_ray.serve.app import AppArgs, build_app
        from tests._serve_support import free_port

        self.cluster = None
        if nodes == 1:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        else:
            from ray.cluster_utils import Cluster

            self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
            for _ in range(nodes - 1):
                self.cluster.add_node(num_cpus=2)
            self.cluster.wait_for_nodes()
            ray.init(address=self.cluster.address, log_to_driver=False)
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        settings = _settings(root, ckpt, db_url, shards, 1 if nodes > 1 else 0, per_shard, ttl_s)
        serve.run(build_app(AppArgs.from_settings(settings)), name=APP, route_prefix="/")
        self.shards = shards
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        wait_for(lambda: len(self.client.get("/shards").json()["shards"]) >= shards, 180, 1.0, f"{shards} live shards")

    def streams(self) -> dict[str, dict]:
        return {s["id"]: s for s in self.client.get("/streams").json()["streams"]}

    def add(self, url: str, n: int, tag: str) -> list[str]:
        ids = []
        for i in range(n):
            r = self.client.post("/streams", json={"url": url, "name": f"{tag}{i}"})
            r.raise_for_status()
            ids.append(r.json()["id"])
        return ids

    def remove(self, ids: list[str]) -> None:
        for i in ids:
            self.client.delete(f"/streams/{i}")
        wait_for(lambda: not any(o for o in self.streams().values()), 60, 1.0, "the streams deleted")
        time.sleep(3)

    def wait_live(self, ids: list[str], balanced: bool) -> dict[str, dict]:
        def ready():
            st = self.streams()
            if not all(st[i]["status"]["state"] == "live" and st[i]["owner"] for i in ids):
                return None
            if balanced:
                per: dict[str, int] = {}
                for i in ids:
                    per[st[i]["owner"]["shard_id"]] = per.get(st[i]["owner"]["shard_id"], 0) + 1
                if len(per) < min(self.shards, len(ids)) or max(per.values()) - min(per.values()) > 1:
                    return None
            return st
        return wait_for(ready, 180, 1.0, f"{len(ids)} streams live" + (" and balanced over the shards" if balanced else ""))

    def close(self) -> None:
        import ray
        from ray import serve

        self.client.close()
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            if self.cluster is not None:
                self.cluster.shutdown()


def wait_for(*args: Any, **kwargs: Any) -> Any:
    """The tests' poll-with-a-deadline helper (tests/_serve_support.py)."""
    sys.path.insert(0, str(REPO))
    from tests._serve_support import wait_for as poll

    return poll(*args, **kwargs)


def _processes() -> dict[str, list]:
    """The replica processes of the app by deployment (every simulated node runs on this machine)."""
    import psutil

    found: dict[str, list] = {"StreamShard": [], "Classifier": [], "Ingress": []}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        for d in found:
            if f"ServeReplica:{APP}:{d}" in cmd:
                found[d].append(proc)
    return found


def _cpu(procs: dict[str, list]) -> dict[str, float]:
    return {d: sum(sum(p.cpu_times()[:2]) for p in ps) for d, ps in procs.items()}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def measure(graph: Graph, ids: list[str], warmup: float, window: float) -> dict:
    """CPU per camera-second of the shards and of the graph over ``window`` s, and the streams' counters."""
    graph.wait_live(ids, balanced=graph.shards > 1)
    time.sleep(warmup)
    procs = _processes()
    if len(procs["StreamShard"]) != graph.shards:
        raise RuntimeError(f"expected {graph.shards} StreamShard processes, found {len(procs['StreamShard'])}")
    s0, c0, t0, l0 = graph.streams(), _cpu(procs), time.monotonic(), _load()
    time.sleep(window)
    s1, c1, t1 = graph.streams(), _cpu(procs), time.monotonic()
    secs = t1 - t0
    cam_s = len(ids) * secs
    d = {k: c1[k] - c0[k] for k in c0}

    def delta(key: str) -> int:
        return sum(int(s1[i]["status"].get(key) or 0) - int(s0[i]["status"].get(key) or 0) for i in ids)

    per_shard: dict[str, int] = {}
    for i in ids:
        per_shard[s1[i]["owner"]["shard_id"]] = per_shard.get(s1[i]["owner"]["shard_id"], 0) + 1
    return {"cameras": len(ids), "seconds": round(secs, 1),
            "shard_cpu_s_per_camera_s": round(d["StreamShard"] / cam_s, 4),
            "graph_cpu_s_per_camera_s": round(sum(d.values()) / cam_s, 4),
            "cpu_s": {k: round(v, 2) for k, v in d.items()},
            "frames_decoded_per_camera_s": round(delta("frames_decoded") / cam_s, 2),
            "frames_dropped": delta("frames_dropped"),
            "reconnects": delta("reconnects"),
            # a stream whose counters went back was restarted during the window (its counts start again at 0)
            "restarted": sum(int(s1[i]["status"].get("frames_decoded") or 0) < int(s0[i]["status"].get("frames_decoded") or 0)
                             for i in ids),
            "windows_per_camera_s": round(delta("windows_classified") / cam_s, 3),
            "min_fps": min(float(s1[i]["status"].get("fps") or 0) for i in ids),
            "streams_per_shard": sorted(per_shard.values()), "load_avg": [l0, _load()]}


# ---------------------------------------------------------------------------------------------- modes
def run_cpu(args, root: Path, ckpt: Path, cams: dict[str, Cameras]) -> dict:
    from tests._postgres import fresh_postgres

    out: dict[str, Any] = {}
    for name, nodes, shards in (("a_one_shard_one_node", 1, 1), ("b_three_shards_three_nodes", 3, 3)):
        graph = Graph(root, ckpt, fresh_postgres(f"bench_shards_{nodes}"), nodes=nodes, shards=shards, per_shard=1000,
                      ttl_s=args.lease_ttl)
        try:
            for size, n in ((SMALL, args.cameras_small), (HD, args.cameras_hd)):
                ids = graph.add(cams[size].url, n, f"{size}-")
                row = measure(graph, ids, args.warmup, args.window)
                row.update(topology=name, video=size, at=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
                print(json.dumps(row), flush=True)
                out[f"{name}/{size}"] = row
                graph.remove(ids)
        finally:
            graph.close()
    for size in (SMALL, HD):
        a, b = out[f"a_one_shard_one_node/{size}"], out[f"b_three_shards_three_nodes/{size}"]
        out[f"ratio_b_over_a/{size}"] = {
            "shard": round(b["shard_cpu_s_per_camera_s"] / a["shard_cpu_s_per_camera_s"], 3),
            "graph": round(b["graph_cpu_s_per_camera_s"] / a["graph_cpu_s_per_camera_s"], 3)}
        print(json.dumps({"video": size, "ratio_b_over_a": out[f"ratio_b_over_a/{size}"]}), flush=True)
    return out


def run_capacity(args, root: Path, ckpt: Path, cams: dict[str, Cameras]) -> dict:
    from bigsister_ray.models.checkpoint import read_checkpoint_meta
    from tests._postgres import fresh_postgres

    clip = read_checkpoint_meta(ckpt).clip
    fps, windows_per_s = clip.fps, clip.fps / clip.stride
    graph = Graph(root, ckpt, fresh_postgres("bench_shards_capacity"), nodes=1, shards=1, per_shard=1000,
                  ttl_s=args.lease_ttl)
    ids: list[str] = []
    best, rows = 0, []
    try:
        for n in args.steps:
            ids += graph.add(cams[SMALL].url, n - len(ids), f"cap{len(ids)}-")
            row = measure(graph, ids, args.settle, args.hold)
            st = graph.streams()
            fps_all = [float(st[i]["status"].get("fps") or 0) for i in ids]
            row["ok"] = (row["frames_dropped"] == 0 and row["restarted"] == 0 and row["reconnects"] == 0
                         and all(abs(f - fps) <= 0.1 * fps for f in fps_all)
                         and row["windows_per_camera_s"] >= 0.9 * windows_per_s)
            row["fps_range"] = [min(fps_all), max(fps_all)]
            row["at"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
            print(json.dumps(row), flush=True)
            rows.append(row)
            if not row["ok"]:
                break
            best = n
    finally:
        graph.close()
    print(json.dumps({"largest_sustained": best, "clip_fps": fps}), flush=True)
    return {"largest_sustained": best, "steps": rows}



def recipe_checkpoint(config: Path, root: Path) -> Path:
    """A checkpoint of ``config``'s model and clip with random weights (``model.weights`` is not read)."""
    import torch

    from bigsister_ray.clip import input_channels
    from bigsister_ray.config import load_settings
    from bigsister_ray.models import CheckpointMeta, build_model, get_model_spec, save_checkpoint

    s = load_settings(config)
    torch.manual_seed(0)
    labels = list(s.task.labels)
    model = build_model(s.model.name, len(labels), in_channels=input_channels(s.clip.input))
    meta = CheckpointMeta(model_name=s.model.name, labels=labels, clip=s.clip, norm=get_model_spec(s.model.name).norm,
                          data_fingerprint=None, thresholds={}, epoch=0)
    root.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(root / "model.pt", model, meta)

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("cpu", "capacity", "all"), default="all")
    ap.add_argument("--cameras-small", type=int, default=6, help="320x240 cameras in each topology (cpu mode)")
    ap.add_argument("--cameras-hd", type=int, default=3, help="1080p cameras in each topology (cpu mode)")
    ap.add_argument("--hd-bitrate", default="4M")
    ap.add_argument("--clip-seconds", type=float, default=20.0, help="length of the looped camera files")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds after all streams are live, not measured")
    ap.add_argument("--window", type=float, default=40.0, help="seconds measured (cpu mode)")
    ap.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",")], default=[4, 8, 16, 24, 32, 40, 48, 56, 64])
    ap.add_argument("--settle", type=float, default=5.0, help="seconds after a step's streams are live (capacity)")
    ap.add_argument("--hold", type=float, default=30.0, help="seconds each step must hold (capacity)")
    ap.add_argument("--lease-ttl", type=float, default=10.0,
                    help="serve.shards.lease_ttl_s (the streams' status in GET /streams is saved every third of it)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="serve this checkpoint instead of the tiny test model")
    ap.add_argument("--recipe", type=Path, default=None,
                    help="serve the model and clip of this config file (e.g. configs/fight-cpu.yaml), random weights")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    sys.path.insert(0, str(REPO))
    from tests._postgres import PG_URL, PG_URL_ENV
    from tests._serve_support import make_checkpoint

    if not PG_URL:
        print(f"needs PostgreSQL: {PG_URL_ENV} is not set (eval \"$(bash .ci/start_postgres.sh)\")", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="bench-shards-"))
    if args.checkpoint is not None:
        ckpt = args.checkpoint.resolve()
    elif args.recipe is not None:
        ckpt = recipe_checkpoint(args.recipe, root / "ckpt")
    else:
        ckpt = make_checkpoint(root / "ckpt")
    print(json.dumps({"model": str(ckpt)}), flush=True)
    files = {SMALL: make_ts(root / "small.ts", SMALL, args.clip_seconds, "500k")}
    if args.mode in ("cpu", "all"):
        files[HD] = make_ts(root / "hd.ts", HD, args.clip_seconds, args.hd_bitrate)
    cams = {size: Cameras(path) for size, path in files.items()}
    print(json.dumps({"machine": f"{os.cpu_count()} CPUs", "load_avg": _load(),
                      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}), flush=True)
    result: dict[str, Any] = {}
    try:
        if args.mode in ("cpu", "all"):
            result["cpu"] = run_cpu(args, root, ckpt, cams)
        if args.mode in ("capacity", "all"):
            result["capacity"] = run_capacity(args, root, ckpt, cams)
    finally:
        for c in cams.values():
            c.stop()
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
