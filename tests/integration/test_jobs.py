"""The stages as Ray Jobs: a real ``ray start --head`` with its dashboard on loopback, jobs through the Jobs API.

The head runs in its own process group with its own temp dir, its own HOME and its own token; it is stopped by
signalling the ``ray start --block`` process we started (never ``ray stop``, which stops every Ray on the machine,
the shared ``ray_session`` of this test process included).

Ray 2.60 and token authentication, as users meet it (docs/cluster.md "Security"): with a token in
``~/.ray/auth_token``, ``ray start --head`` turns token authentication on; a client without ``RAY_AUTH_MODE=token``
is then refused ("Authentication required"). Here the token lives in a temporary HOME, so ~/.ray is never touched;
the Jobs SDK client sends it as ``Authorization: Bearer``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests._serve_support import wait_for

REPO = Path(__file__).resolve().parents[2]
JOB_TIMEOUT_S = 420

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Head:
    address: str          # http://127.0.0.1:<dashboard port>: the Jobs API
    token: str
    env: dict[str, str]   # environment of a CLI user on this machine (temp HOME holding ~/.ray/auth_token)
    work: Path


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "BIGSISTER_"))}
    env.update(HOME=str(home), RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1")
    return env


def _wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except urllib.error.HTTPError:
            return  # the server answers (401 without a token is an answer)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    # Short temp root: Ray's unix sockets live under --temp-dir and paths over ~107 bytes break them.
    root = Path(tempfile.mkdtemp(prefix="bsjobs-", dir="/tmp"))
    home = root / "home"
    (home / ".ray").mkdir(parents=True)
    token = secrets.token_hex(32)
    (home / ".ray" / "auth_token").write_text(token)
    env = _clean_env(home)
    dash = _free_port()
    cmd = ["ray", "start", "--head", "--block", f"--port={_free_port()}", "--num-cpus=2", "--num-gpus=0",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--temp-dir={root / 'ray'}",
           f"--ray-client-server-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}",
           f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}",
           "--disable-usage-stats", "--include-dashboard=true"]
    log = (root / "ray-start.log").open("w")
    # No RAY_AUTH_MODE: the token in ~/.ray/auth_token alone turns authentication on (ray 2.60).
    # A test head has nothing to drain on SIGTERM (ray 2.60 waits up to 30 s by default).
    head_env = {**env, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "2"}
    proc = subprocess.Popen(cmd, env=head_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{dash}/api/version", timeout_s=120)
        yield Head(address=f"http://127.0.0.1:{dash}", token=token, env=env, work=root / "work")
    finally:
        proc.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # our own process group only
            proc.wait(timeout=30)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def client(head):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(head.address, headers={"Authorization": f"Bearer {head.token}"})


@pytest.fixture(scope="module")
def settings_file(head) -> Path:
    """Small clips and a tiny model, so a CPU job finishes in seconds."""
    head.work.mkdir(parents=True, exist_ok=True)
    path = head.work / "settings.yaml"
    path.write_text(yaml.safe_dump({
        "clip": {"frames": 8, "fps": 4.0, "size": 32, "stride": 4},
        "task": {"labels": ["normal", "fight", "assault"]},
        "data": {"clips_per_event": 2, "negatives_per_video": 1, "negative_margin_s": 0.5, "shard_clips": 8,
                 "split": [0.5, 0.5, 0.0]},
        "model": {"name": "tiny3d"},
        "train": {"workers": 1, "batch_size": 4, "cpus_per_worker": 1, "max_failures": 0, "augment": False},
    }))
    return path


def _runtime_env() -> dict:
    # The checkout as working_dir (what `ray job submit --working-dir .` uploads); no secrets in here: the
    # runtime_env is shown in the dashboard.
    return {"working_dir": str(REPO), "excludes": ["tests/", ".git/", "benchmarks/", "docs/"],
            "env_vars": {"OMP_NUM_THREADS": "1"}}


def _run(client, entrypoint: str) -> tuple[str, str]:
    from ray.job_submission import JobStatus

    job_id = client.submit_job(entrypoint=entrypoint, runtime_env=_runtime_env())
    deadline = time.monotonic() + JOB_TIMEOUT_S
    status = client.get_job_status(job_id)
    while not status.is_terminal() and time.monotonic() < deadline:
        time.sleep(1)
        status = client.get_job_status(job_id)
    if not status.is_terminal():
        client.stop_job(job_id)
    return status, client.get_job_logs(job_id)


def _need(script: str) -> None:
    if not (REPO / script).exists():
        pytest.skip(f"{script} does not exist yet")


def test_jobs_api_requires_the_token(head):
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{head.address}/api/jobs/", timeout=10)
    assert info.value.code == 401
    req = urllib.request.Request(f"{head.address}/api/jobs/", headers={"Authorization": f"Bearer {head.token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200 and isinstance(json.loads(resp.read()), list)
    bad = urllib.request.Request(f"{head.address}/api/jobs/", headers={"Authorization": "Bearer " + "0" * 64})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(bad, timeout=10)
    assert info.value.code == 403


def test_ray_cli_needs_ray_auth_mode_token(head):
    """The documented fix: a CLI user with the token in ~/.ray/auth_token sets RAY_AUTH_MODE=token."""
    cmd = ["ray", "job", "list", "--address", head.address]
    refused = subprocess.run(cmd, env=head.env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "Authentication required" in refused.stdout + refused.stderr
    allowed = subprocess.run(cmd, env={**head.env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=120)
    assert allowed.returncode == 0, allowed.stdout[-2000:] + allowed.stderr[-2000:]


@pytest.fixture(scope="module")
def prepared(head, client, settings_file) -> Path:
    """`bigsister synth` and jobs/prepare.py in one job, as a user would submit them."""
    from ray.job_submission import JobStatus

    _need("jobs/prepare.py")
    data, out = head.work / "aihub", head.work / "prepared"
    status, logs = _run(client, (
        f"bigsister synth --out {data} --videos 6 --seconds 4 --config {settings_file} && "
        f"python jobs/prepare.py --source aihub --root {data} --out {out} --config {settings_file}"))
    assert status == JobStatus.SUCCEEDED, logs[-4000:]
    return out


@pytest.fixture(scope="module")
def trained(head, client, settings_file, prepared) -> Path:
    """A one-epoch training job on the prepared dataset; the checkpoint it wrote."""
    from ray.job_submission import JobStatus

    _need("jobs/train.py")
    run = head.work / "runs" / "job"
    status, logs = _run(client, f"python jobs/train.py --data {prepared} --out {run} --epochs 1 --config {settings_file}")
    assert status == JobStatus.SUCCEEDED, logs[-4000:]
    checkpoints = sorted(run.rglob("model.pt"))
    assert checkpoints, f"no model.pt under {run}; job log:\n{logs[-3000:]}"
    return checkpoints[0]


def test_prepare_job_succeeds(prepared):
    from bigsister_ray.data.prepared import read_manifest

    manifest = read_manifest(prepared)
    assert manifest.clips_written > 0 and manifest.shards
    assert manifest.labels == ["normal", "fight", "assault"]
    assert all((prepared / s.path).exists() for s in manifest.shards)


def test_train_job_succeeds_and_writes_a_checkpoint(trained):
    from bigsister_ray.models.checkpoint import read_checkpoint_meta

    meta = read_checkpoint_meta(trained)
    assert meta.model_name == "tiny3d" and meta.labels == ["normal", "fight", "assault"]


def test_serve_deploy_of_serve_config_brings_the_app_up(head, trained):
    """`serve deploy deploy/serve_config.yaml` against this head (checkpoint, port and state paths adapted)."""
    checkpoint = trained
    config = yaml.safe_load((REPO / "deploy" / "serve_config.yaml").read_text())
    port = _free_port()
    config["http_options"]["port"] = port
    app = config["applications"][0]
    app["args"] = {**app.get("args", {}), "checkpoint": str(checkpoint), "settings": {
        "database": {"url": f"sqlite:///{head.work / 'serve.db'}"},
        "alerts": {"alert_file": str(head.work / "alerts.jsonl"), "notifier": "console"},
        "auth": {"generated_key_file": str(head.work / "api-key")},
        "serve": {"streams": {"media_root": str(head.work)}},
    }}
    path = head.work / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**head.env, "RAY_AUTH_MODE": "token"}
    out = subprocess.run(["serve", "deploy", str(path), "-a", head.address], env=env, capture_output=True, text=True,
                         timeout=120, cwd=head.work)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    answers: list[tuple[int | None, str]] = []

    def ready() -> bool:
        key_file = head.work / "api-key"  # /readyz needs a key: the one the Ingress generated
        headers = {"X-API-Key": key_file.read_text().strip()} if key_file.exists() else {}
        req = urllib.request.Request(f"http://127.0.0.1:{port}/readyz", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                answers.append((resp.status, resp.read().decode()))
        except urllib.error.HTTPError as err:
            answers.append((err.code, err.read().decode()))
        except OSError as err:
            answers.append((None, str(err)))
        return answers[-1][0] == 200

    try:
        wait_for(ready, timeout=180, interval=1, what="/readyz to answer 200")
    except AssertionError as err:
        raise AssertionError(f"{err}; last answers: {answers[-3:]}") from None
    status, body = answers[-1]
    assert json.loads(body).get("ready") is True


def test_a_failing_job_is_failed_with_its_error_in_the_logs(head, client, settings_file):
    from ray.job_submission import JobStatus

    _need("jobs/train.py")
    missing = head.work / "no-such-prepared-dataset"
    status, logs = _run(client, f"python jobs/train.py --data {missing} --out {head.work / 'runs' / 'bad'} "
                                f"--epochs 1 --config {settings_file}")
    assert status == JobStatus.FAILED, logs[-3000:]
    assert str(missing) in logs and "error" in logs.lower(), logs[-3000:]
