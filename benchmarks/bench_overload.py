"""Overload on loopback: offer POST /detect at twice the rate the app sustains; every request must get an answer.

1. Measures the sustainable rate: sequential /detect uploads of a short synthetic clip for ``--calibrate-s``.
2. Offers ``--factor`` x that rate (open loop: requests start on schedule whatever the answers) for
   ``--seconds``, and records each answer's status and latency, and the RSS of the Ingress replica process.

Usage: ``python benchmarks/bench_overload.py [--seconds 30] [--factor 2]``. Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["main"]


def _ingress_rss_mb(app: str) -> float | None:
    import psutil
    import ray

    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith("SERVE_REPLICA::") and f"{app}#Ingress#" in actor["name"]:
            handle = ray.get_actor(actor["name"], namespace="serve")
            pid = ray.get(handle.__ray_call__.remote(lambda self: __import__("os").getpid()))
            return psutil.Process(pid).memory_info().rss / 2**20
    return None


def main(argv: list[str] | None = None) -> dict:
    import sys

    import httpx
    import numpy as np
    import ray
    from ray import serve

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tests/_serve_support helpers

    from bigsister_ray.data.synth import render_video
    from tests._serve_support import TINY_SPEC, WRITE_KEY, make_checkpoint, serve_settings, start_app

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--calibrate-s", type=float, default=10.0)
    ap.add_argument("--factor", type=float, default=2.0)
    ap.add_argument("--max-ongoing", type=int, default=2)
    ap.add_argument("--max-queued", type=int, default=4)
    args = ap.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="bench-overload-"))
    ckpt = make_checkpoint(root / "ckpt")
    clip = root / "clip.mp4"
    render_video(clip, "fight", 2.0, fps=TINY_SPEC.fps, size=(96, 72), seed=3, abnormal_span=None)
    data = clip.read_bytes()
    settings = serve_settings(root, ckpt, max_ongoing_requests=args.max_ongoing, max_queued_requests=args.max_queued)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    app = "bench-overload"
    base = start_app(settings, app)
    headers = {"X-API-Key": WRITE_KEY}

    def one(client: httpx.Client) -> tuple[int, float]:
        t = time.perf_counter()
        try:
            r = client.post("/detect", files={"file": ("c.mp4", data, "video/mp4")})
            return r.status_code, time.perf_counter() - t
        except httpx.HTTPError:
            return -1, time.perf_counter() - t  # no answer (connection error or client timeout)

    with httpx.Client(base_url=base, headers=headers, timeout=120) as c:
        one(c)  # warm-up
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < args.calibrate_s:
            code, _ = one(c)
            assert code == 200, code
            n += 1
        sustainable = n / (time.perf_counter() - t0)

    rate = args.factor * sustainable
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    rss = [_ingress_rss_mb(app)]
    stop = threading.Event()

    def sample_rss() -> None:
        while not stop.wait(2.0):
            rss.append(_ingress_rss_mb(app))

    def fire(client: httpx.Client) -> None:
        res = one(client)
        with lock:
            results.append(res)

    threading.Thread(target=sample_rss, daemon=True).start()
    threads = []
    with httpx.Client(base_url=base, headers=headers, timeout=120,
                      limits=httpx.Limits(max_connections=512, max_keepalive_connections=64)) as c:
        start = time.perf_counter()
        k = 0
        while time.perf_counter() - start < args.seconds:
            due = start + k / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            th = threading.Thread(target=fire, args=(c,))
            th.start()
            threads.append(th)
            k += 1
        for th in threads:
            th.join(180)
    stop.set()
    codes: dict[str, int] = {}
    for code, _ in results:
        codes[str(code)] = codes.get(str(code), 0) + 1
    lat = {str(code): np.percentile([l for c_, l in results if c_ == code], [50, 95, 100]).round(3).tolist()
           for code in {c_ for c_, _ in results}}
    summary = {
        "sustainable_rps": round(sustainable, 2), "offered_rps": round(rate, 2), "offered": k,
        "answered": len(results), "codes": codes, "latency_s_p50_p95_max": lat,
        "ingress_rss_mb_first_last_max": [round(x, 1) for x in (rss[0], rss[-1], max(r for r in rss if r))] if rss[0] else None,
        "max_ongoing": args.max_ongoing, "max_queued": args.max_queued,
    }
    print(json.dumps(summary, indent=1))
    serve.delete(app)
    serve.shutdown()
    ray.shutdown()
    return summary


if __name__ == "__main__":
    main()
