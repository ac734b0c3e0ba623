"""Secrets set through the environment stay secret across Ray and do not break it.

With API keys, a Slack token and a database password in ``BIGSISTER_*`` variables, ``prepare`` and ``train``
(tiny) succeed, and none of the secret strings appears in what Ray shows about its tasks and actors
(``ray.util.state`` with detail) nor in any file under the Ray session folder (logs, runtime-env files).

Runs in its own Python process with its own local Ray (with the dashboard, which the state API needs), so the
session's shared Ray and environment are untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_SCRIPT = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    import ray
    from ray.util import state
    from bigsister_ray.clip import ClipSpec
    from bigsister_ray.config import Settings
    from bigsister_ray.data.pipeline import prepare
    from bigsister_ray.runtime import ensure_ray
    from bigsister_ray.train.trainer import train
    from tests._media import aihub_pair
    from tests._prepared import make_prepared

    work, marker = Path(sys.argv[1]), sys.argv[2]
    settings = Settings(  # reads BIGSISTER_* like every command
        ray={"num_cpus": 2}, clip={"frames": 8, "fps": 4.0, "size": 32, "stride": 4},
        data={"clips_per_event": 2, "negatives_per_video": 1, "negative_margin_s": 0.5, "shard_clips": 4,
              "split": (0.5, 0.5, 0.0)},
        model={"name": "tiny3d", "dropout": 0.0},
        train={"workers": 1, "batch_size": 4, "epochs": 1, "lr": 1e-2},
    )
    secrets = [settings.auth.keys[0].key.get_secret_value(), settings.alerts.slack.token.get_secret_value(),
               settings.database.url.split(":")[2].split("@")[0]]
    assert ensure_ray(settings, include_dashboard=True, log_to_driver=False)

    root = work / "aihub"
    for i, event in enumerate(["fight", "fight", "assult", "assult"]):
        folder = root / ("02.싸움(fight)" if event == "fight" else "01.폭행(assult)") / f"place_{i:02d}" / "s1"
        aihub_pair(folder, f"{i + 1}-1_cam01_{event}01_place{i:02d}_day_summer", event=event, seconds=6,
                   start=2.0, length=2.0)
    summary = prepare("aihub", root, work / "prepared-aihub", settings, progress=None)
    prepared = make_prepared(work / "prepared", labels=("fight", "normal"), counts={"train": 8, "val": 4},
                             spec=ClipSpec(frames=8, fps=8.0, size=32, stride=4))
    result = train(work / "prepared", work / "runs", settings)

    @ray.remote(num_cpus=0)
    def say(text):
        print(text, flush=True)
        return text

    ray.get(say.remote(marker))  # positive control for the log scan below
    api = "http://" + ray._private.worker.get_dashboard_url()  # this Ray's, not another one on the host
    shown = json.dumps({
        "tasks": [str(t) for t in state.list_tasks(address=api, detail=True, limit=10000)],
        "actors": [str(a) for a in state.list_actors(address=api, detail=True, limit=10000)],
        "jobs": [str(j) for j in state.list_jobs(address=api, detail=True)],
    })
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    print("RESULT " + json.dumps({"secrets": secrets, "state": shown, "session": str(session),
                                  "prepared": summary.clips_written if hasattr(summary, "clips_written") else str(summary),
                                  "last_epoch": result.last_epoch}), flush=True)
    ray.shutdown()
""")


def _files_containing(folder: Path, needles: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in folder.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            data = path.read_bytes()
        except OSError:  # sockets and files Ray removed meanwhile
            continue
        hits = [n for n in needles if n.encode() in data]
        if hits:
            found[str(path.relative_to(folder))] = hits
    return found


@pytest.mark.timeout(600)
def test_prepare_and_train_with_secrets_in_the_environment(tmp_path):
    api_key, slack, db_pw = (f"apikey-{uuid.uuid4().hex}", f"xoxb-{uuid.uuid4().hex}", f"dbpw{uuid.uuid4().hex}")
    marker = f"log-scan-marker-{uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIGSISTER_")}
    env.update({
        "BIGSISTER_AUTH__KEYS": json.dumps([{"name": "ops", "key": api_key, "scope": "write"}]),
        "BIGSISTER_ALERTS__SLACK__TOKEN": slack,
        "BIGSISTER_DATABASE__URL": f"postgresql+psycopg://bigsister:{db_pw}@127.0.0.1:1/bigsister",
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    })
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path), marker], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[len("RESULT "):])
    # the secrets really were configured, and both stages ran
    assert sorted(result["secrets"]) == sorted([api_key, slack, db_pw])
    assert result["last_epoch"] == 1
    assert result["prepared"]
    printed = "\n".join(ln for ln in proc.stdout.splitlines() if not ln.startswith("RESULT ")) + proc.stderr
    assert [s for s in (api_key, slack, db_pw) if s in printed] == [], "secrets in the commands' output"
    state = result["state"]
    assert "train_loop_per_worker" in state or "TrainController" in state or "RayTrainWorker" in state, state[:2000]
    leaked = [s for s in (api_key, slack, db_pw) if s in state]
    assert leaked == [], "secrets in Ray's task/actor state"
    session = Path(result["session"])
    files = _files_containing(session, [marker, api_key, slack, db_pw])
    assert any(marker in hits for hits in files.values()), "the log scan saw no worker log"
    leaked_files = {path: [h for h in hits if h != marker] for path, hits in files.items() if set(hits) - {marker}}
    assert leaked_files == {}, f"secrets in files under the Ray session folder: {sorted(leaked_files)}"
