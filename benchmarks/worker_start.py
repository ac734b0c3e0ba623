"""How long a local Ray's first tasks wait for worker processes, with and without the training setup hook.

``ensure_ray(..., train=True)`` starts a local Ray without the dashboard with a job ``runtime_env`` (the
``worker_process_setup_hook`` that drops Ray Train's state-API warning, see :mod:`bigsister_ray.runtime`). Ray
pre-starts no worker processes for a job with a runtime environment, so its first tasks wait for new ones. This
measures that cost: each mode (``plain``: the same local Ray without the hook; ``hook``) runs in a fresh
process, alternating, ``--rounds`` times: ``ray.init``, one empty task, three 1 s tasks at once, twenty empty
tasks; seconds for each, and how many worker processes ran the three.

    python benchmarks/worker_start.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def one(mode: str) -> dict:
    import ray

    from bigsister_ray.runtime import local_system_config

    kwargs = {}
    if mode == "hook":
        kwargs["runtime_env"] = {"worker_process_setup_hook": "bigsister_ray.runtime.quiet_worker_logs"}
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _system_config=local_system_config(2, 4), **kwargs)
    t1 = time.perf_counter()

    @ray.remote(num_cpus=0)
    def task(seconds: float) -> int:
        time.sleep(seconds)
        return os.getpid()

    ray.get(task.remote(0))
    t2 = time.perf_counter()
    pids = set(ray.get([task.remote(1.0) for _ in range(3)]))
    t3 = time.perf_counter()
    ray.get([task.remote(0) for _ in range(20)])
    t4 = time.perf_counter()
    ray.shutdown()
    return {"mode": mode, "init_s": round(t1 - t0, 2), "first_task_s": round(t2 - t1, 2),
            "three_1s_tasks_s": round(t3 - t2, 2), "workers_for_three": len(pids), "twenty_tasks_s": round(t4 - t3, 2)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--one", choices=("plain", "hook"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one:
        print("ROW " + json.dumps(one(a.one)), flush=True)
        return
    for _ in range(a.rounds):
        for mode in ("plain", "hook"):
            out = subprocess.run([sys.executable, __file__, "--one", mode], capture_output=True, text=True, timeout=300)
            row = next((ln[4:] for ln in out.stdout.splitlines() if ln.startswith("ROW ")), None)
            print(row or json.dumps({"mode": mode, "error": out.stderr[-500:]}), flush=True)


if __name__ == "__main__":
    main()
