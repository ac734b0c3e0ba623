"""CPU milliseconds per scored window of each process of the serving graph.

The same pseudo-streams as ``bench_serve.py``'s graph-vs-direct runs (frames already preprocessed, pushed into
the Windower; 16 streams, Classifier batch 4), ``--rounds`` runs of 4 s after a warm-up. For each run: windows the
Classifier scored, and the user + system CPU time each replica process (found by its Ray process title) and this
driver spent, divided by them. CPU per window is steadier than throughput on a machine whose speed drifts.

To compare two checkouts, run it from each with its own code first on the path (the local Ray's workers inherit
``PYTHONPATH``); the first line printed says which code ran:

    REPO=/path/to/checkout PYTHONPATH=/path/to/checkout python benchmarks/graph_cpu.py [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(os.environ.get("REPO", Path(__file__).resolve().parents[1]))
DEPLOYMENTS = ("StreamShard", "Classifier", "Ingress")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--batch", type=int, default=4)
    a = p.parse_args(argv)
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    sys.path.insert(0, str(REPO))
    import numpy as np
    import psutil
    import ray
    from ray import serve

    import bigsister_ray
    from benchmarks.bench_serve import _args, _settings, graph_rate
    from bigsister_ray.clip import CLIP_PRESETS
    from bigsister_ray.runtime import ensure_ray
    from bigsister_ray.serve.app import AppArgs, build_app
    from tests._serve_support import free_port, make_checkpoint

    spec = CLIP_PRESETS["laptop"]
    root = Path(tempfile.mkdtemp(prefix="graph-cpu-"))
    ckpt = make_checkpoint(root / "ckpt", spec=spec, labels=("assault", "fight", "datefight", "drunken", "trespass", "normal"))
    settings = _settings(root, ckpt, _args(["--batch", str(a.batch)]))
    ensure_ray(settings, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    serve.run(build_app(AppArgs.from_settings(settings)), name="bench", route_prefix="/")
    print(f"code: {bigsister_ray.__file__}", flush=True)
    try:
        pids = {"driver": os.getpid()}
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            for d in DEPLOYMENTS:
                if f"ServeReplica:bench:{d}" in cmd:
                    pids[d] = proc.info["pid"]
        procs = {k: psutil.Process(v) for k, v in pids.items()}
        classifier = serve.get_deployment_handle("Classifier", app_name="bench")

        def cpu() -> dict[str, float]:
            return {k: sum(pr.cpu_times()[:2]) for k, pr in procs.items()}

        graph_rate("bench", spec, streams=a.streams, seconds=3.0)  # warm-up
        rows = []
        for _ in range(a.rounds):
            c0, w0 = cpu(), classifier.info.remote().result()["windows"]
            res = graph_rate("bench", spec, streams=a.streams, seconds=4.0)
            c1, w1 = cpu(), classifier.info.remote().result()["windows"]
            n = max(1, w1 - w0)
            row = {"windows": n, "windows_per_s": round(res["windows_per_s"], 1),
                   **{f"{k}_ms": round(1000 * (c1[k] - c0[k]) / n, 2) for k in c0}}
            rows.append(row)
            print(json.dumps(row), flush=True)
        print("MEDIAN " + json.dumps({k: round(float(np.median([r[k] for r in rows])), 2) for k in rows[0]}), flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
