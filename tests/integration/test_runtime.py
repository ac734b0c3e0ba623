"""A local Ray started by our commands keeps its idle worker processes (``ray.idle_workers``).

Each check runs in its own Python process with its own local Ray, so the session's shared Ray is untouched.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# One CPU, held by an actor (as a training worker holds every CPU of its node). Three 0-CPU tasks then run at
# once, each waiting until all three have started, so three worker processes exist however loaded the machine;
# after 3 s idle (Ray's idle-kill threshold is 1 s) count those alive.
_SCRIPT = textwrap.dedent("""
    import json, os, sys, tempfile, time
    import ray
    from bigsister_ray.config import Settings
    from bigsister_ray.runtime import ensure_ray

    if sys.argv[1] == "ray-default":  # Ray's own default, for comparison
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    else:
        settings = Settings.model_validate({"ray": {"num_cpus": 1, "idle_workers": int(sys.argv[1])}})
        assert ensure_ray(settings, include_dashboard=False, log_to_driver=False)
        assert not ensure_ray(settings)  # already up: nothing started, nothing to shut down

    @ray.remote(num_cpus=1)
    class Hold:
        def ping(self):
            return os.getpid()

    @ray.remote(num_cpus=0)
    def work(meeting):
        open(os.path.join(meeting, str(os.getpid())), "w").close()
        deadline = time.monotonic() + 120
        while len(os.listdir(meeting)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)  # polls the rendezvous folder
        return os.getpid()

    hold = Hold.remote()
    ray.get(hold.ping.remote())
    meeting = tempfile.mkdtemp()
    pids = set(ray.get([work.remote(meeting) for _ in range(3)]))
    time.sleep(3.0)

    def alive(pid):
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False

    print("RESULT " + json.dumps({"workers": len(pids), "alive": sum(alive(p) for p in pids)}), flush=True)
    ray.shutdown()
""")


def _idle_workers_alive(idle_workers: int | str) -> dict[str, int]:
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(idle_workers)], cwd=REPO, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.mark.timeout(400)
def test_local_ray_keeps_idle_workers_that_ray_would_kill():
    kept = _idle_workers_alive(16)
    assert kept["workers"] == 3, kept
    assert kept["alive"] == 3, f"idle workers were killed although ray.idle_workers=16: {kept}"
    # Ray's own default: the same idle workers are killed within 3 s.
    default = _idle_workers_alive("ray-default")
    assert default["alive"] < default["workers"], f"Ray kept every idle worker without the setting: {default}"


# A worker logs on the logger of Ray Train's placement-group cleaner: its state-API warning, then another warning.
_LOG_SCRIPT = textwrap.dedent("""
    import logging, sys, time
    import ray
    from bigsister_ray.config import Settings
    from bigsister_ray.runtime import PG_CLEANER_LOGGER, STATE_API_ABSENT, ensure_ray

    if sys.argv[1] == "ray-default":
        ray.init(address="local", num_cpus=1, include_dashboard=False)
    else:
        assert ensure_ray(Settings.model_validate({"ray": {"num_cpus": 1}}), train=True, include_dashboard=False)

    @ray.remote(num_cpus=0)
    def cleaner_logs():
        log = logging.getLogger(PG_CLEANER_LOGGER)
        log.warning(STATE_API_ABSENT + ". State API may be temporarily unavailable. Continuing to monitor.")
        log.warning("Failed to clean up placement group: boom")
        return True

    assert ray.get(cleaner_logs.remote())
    time.sleep(2.0)  # worker logs reach the driver asynchronously
    ray.shutdown()
""")


def _worker_log(mode: str) -> str:
    proc = subprocess.run([sys.executable, "-c", _LOG_SCRIPT, mode], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.timeout(400)
def test_local_ray_without_dashboard_drops_only_the_state_api_warning():
    from bigsister_ray.runtime import STATE_API_ABSENT

    ours = _worker_log("ensure_ray")
    assert "Failed to clean up placement group: boom" in ours, ours[-3000:]  # other warnings still reach the driver
    assert STATE_API_ABSENT not in ours, ours[-3000:]
    plain = _worker_log("ray-default")  # without the setup hook the warning is printed
    assert STATE_API_ABSENT in plain and "boom" in plain, plain[-3000:]
