"""Driver for tests/integration/test_multinode.py, run in its own process (never next to the shared ``ray_session``).

Starts a local multi-node Ray cluster with ``ray.cluster_utils.Cluster`` -- a head with no GPU standing in for the
CPU serving pods (it offers the StreamShard's custom resource, as the RayService's ``cpu-serve`` group does) and
two nodes with the custom resource ``accelerator`` standing in for GPU nodes -- then runs the real stages:

1. ``prepare`` (Ray Data) on a synthetic AI-Hub dataset, one shard per task;
2. ``train`` (Ray Train) with ``train.worker_resources: {accelerator: 1}`` and ``placement_strategy: SPREAD``;
3. ``serve deploy`` of the cluster's Serve config (``serveConfigV2`` of ``deploy/k8s/rayservice.yaml``; checkpoint,
   ports and CPU/GPU sizes adapted to this machine, each deployment's custom ``resources`` kept), through the
   dashboard's REST API: first with a SQLite ``database.url``, which the app refuses on a cluster of several
   nodes (the application's status message is recorded); then, when a PostgreSQL URL is given, with that
   database, followed by ``GET /readyz`` and ``GET /shards``.

Where things ran is read back from Ray's state API (tasks and actors with their node ids) and written as JSON to
the file given as the first argument. A stage that raises is recorded with its traceback and stops the run.
Usage: ``python tests/integration/_multinode_driver.py OUT.json WORKDIR [POSTGRESQL_URL]``
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

REPO = Path(__file__).resolve().parents[2]
ACCELERATOR_NODES = 2
T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(work: Path) -> Any:
    from bigsister_ray.config import Settings

    return Settings(
        clip={"frames": 8, "fps": 4.0, "size": 32, "stride": 4},
        task={"labels": ["normal", "fight", "assault"]},
        data={"clips_per_event": 2, "negatives_per_video": 1, "negative_margin_s": 0.5, "shard_clips": 3,
              "split": (0.5, 0.5, 0.0)},
        model={"name": "tiny3d"},
        train={"workers": ACCELERATOR_NODES, "epochs": 1, "batch_size": 2, "cpus_per_worker": 1, "data_cpus": 0.1,
               "max_failures": 0, "augment": False, "worker_resources": {"accelerator": 1},
               "placement_strategy": "SPREAD"},
        database={"url": f"sqlite:///{work / 'incidents.db'}"},
        alerts={"alert_file": str(work / "alerts.jsonl"), "notifier": "console"},
    )


def _rayservice() -> dict[str, Any]:
    return yaml.safe_load((REPO / "deploy" / "k8s" / "rayservice.yaml").read_text())


def _shard_resources() -> dict[str, float]:
    """The custom resources the RayService's ``cpu-serve`` group offers (where its StreamShards go)."""
    groups = _rayservice()["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    raw = next(g for g in groups if g["groupName"] == "cpu-serve").get("rayStartParams", {}).get("resources")
    return yaml.safe_load(yaml.safe_load(raw)) if raw else {}


def _serve_config(checkpoint: str, work: Path, port: int, database_url: str) -> dict[str, Any]:
    """The cluster's Serve config (serveConfigV2 of deploy/k8s/rayservice.yaml), adapted to 1-CPU local nodes
    without GPUs; each deployment's custom ``resources`` (the Classifier's ``accelerator``, the StreamShard's
    resource of the CPU serving pods) kept as it is."""
    config = yaml.safe_load(_rayservice()["spec"]["serveConfigV2"])
    config["proxy_location"] = "HeadOnly"  # every node is this machine: one proxy, one port
    config["http_options"] = {**config.get("http_options", {}), "host": "127.0.0.1", "port": port}
    app = config["applications"][0]
    app["args"] = {
        "checkpoint": checkpoint,
        "settings": {
            "database": {"url": database_url},
            "alerts": {"alert_file": str(work / "serve-alerts.jsonl"), "notifier": "console"},
            "auth": {"generated_key_file": str(work / "api-key")},
            "serve": {"streams": {"media_root": str(work)}},
        },
    }
    for d in app["deployments"]:
        opts = d.setdefault("ray_actor_options", {})
        opts["num_cpus"] = 0
        opts["num_gpus"] = 0
        if d["name"] == "Classifier":  # one replica per accelerator node, and nowhere else
            n = ACCELERATOR_NODES
            d["autoscaling_config"] = {**d.get("autoscaling_config", {}), "min_replicas": n, "initial_replicas": n,
                                       "max_replicas": n}
    return config


def _poll(probe: Callable[[], T], done: Callable[[T], Any], deadline: float, interval_s: float) -> T:
    """``probe()`` every ``interval_s`` seconds until ``done(value)`` holds or ``deadline`` (``time.monotonic``) has
    passed; returns the last value. The driver records what it saw instead of failing, so the test shows the last
    state of a stage that timed out."""
    while True:
        value = probe()
        if done(value) or time.monotonic() >= deadline:
            return value
        time.sleep(interval_s)


def _app_settled(app_status: Any) -> bool:
    """A Serve application's status is final for this run: running, or failed to deploy or unhealthy."""
    return app_status is not None and app_status.status in ("RUNNING", "DEPLOY_FAILED", "UNHEALTHY")


def _settled_tasks(list_tasks: Any, api: str, name: str, timeout_s: float = 60.0) -> tuple[list[Any], float]:
    """The state API's tasks whose name contains ``name``, once every one of them has finished and has a node id.

    Task events reach the state API asynchronously: right after ``prepare`` returns, a finished task can still be
    listed without its node (CI once saw ``node_id`` None for one shard task). Poll until the record is whole, or
    return what there is after ``timeout_s`` so the test shows it. Also returns the seconds it waited."""
    start = time.monotonic()
    tasks = _poll(lambda: [t for t in list_tasks(address=api, detail=True, limit=10_000, raise_on_missing_output=False)
                           if name in (t.name or "")],
                  lambda found: found and all(t.node_id and t.state == "FINISHED" for t in found), start + timeout_s, 1.0)
    return tasks, round(time.monotonic() - start, 1)


def _dump(out: Path, result: dict[str, Any]) -> None:
    out.write_text(json.dumps(result, indent=1, default=str))


def _get(url: str, key_file: Path) -> tuple[int | None, str]:
    """GET ``url`` with the API key the Ingress generated (once it exists): (status, body); None when unreachable."""
    try:
        headers = {"X-API-Key": key_file.read_text().strip()} if key_file.exists() else {}
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as resp:
            return resp.status, resp.read().decode()[:4000]
    except urllib.error.HTTPError as err:  # 503 while a deployment is still starting
        return err.code, err.read().decode()[:4000]
    except OSError as err:  # proxy not listening yet
        return None, str(err)


def _deploy(config: dict[str, Any], config_file: Path, api: str) -> subprocess.CompletedProcess:
    config_file.write_text(yaml.safe_dump(config))
    serve_cli = Path(sys.executable).with_name("serve")  # the interpreter's own environment, activated or not
    return subprocess.run([str(serve_cli) if serve_cli.exists() else "serve", "deploy", str(config_file), "-a", api],
                          capture_output=True, text=True, timeout=120)


def main(out: Path, work: Path, database_url: str | None = None) -> None:
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors, list_tasks

    result: dict[str, Any] = {"stages": {}, "error": None}
    t0 = time.perf_counter()
    dash_port = _free_port()
    api = f"http://127.0.0.1:{dash_port}"  # state API and Serve REST API: the dashboard, on loopback
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": _shard_resources(), "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": dash_port})
    try:
        for _ in range(ACCELERATOR_NODES):
            cluster.add_node(num_cpus=1, resources={"accelerator": 1})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace="bigsister-multinode", log_to_driver=False)
        result["nodes"] = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
        result["stages"]["cluster_s"] = round(time.perf_counter() - t0, 1)
        _dump(out, result)

        from bigsister_ray import storage
        from bigsister_ray.data.pipeline import prepare
        from bigsister_ray.data.synth import synthesize
        from bigsister_ray.train.trainer import train

        settings = _settings(work)
        result["hosts"] = storage.cluster_hosts()
        storage.check_shared_storage(work, what="test work folder")  # one machine: local paths are shared

        # 1. preprocessing: one Ray Data task per shard, SPREAD over the nodes
        t = time.perf_counter()
        synthesize(work / "aihub", videos=8, seconds=4.0, seed=0, settings=settings, size=(96, 72))
        summary = prepare("aihub", work / "aihub", work / "prepared", settings, progress=None)
        tasks, waited = _settled_tasks(list_tasks, api, "process_shard")
        result["prepare"] = {"clips_written": summary.clips_written, "state_api_wait_s": waited,
                             "tasks": [{"name": t_.name, "state": t_.state, "node_id": t_.node_id} for t_ in tasks]}
        result["stages"]["prepare_s"] = round(time.perf_counter() - t, 1)
        _dump(out, result)

        # 2. training: workers ask for `accelerator` and are spread
        t = time.perf_counter()
        run = train(work / "prepared", work / "runs" / "spread", settings)
        workers = list_actors(address=api, filters=[("class_name", "=", "RayTrainWorker")], detail=True, limit=1000,
                              raise_on_missing_output=False)
        result["train"] = {"best_checkpoint": str(run.best_checkpoint),
                           "workers": [{"state": a.state, "node_id": a.node_id} for a in workers]}
        result["stages"]["train_s"] = round(time.perf_counter() - t, 1)
        _dump(out, result)

        # 3. serving: `serve deploy` of the cluster's Serve config through the dashboard
        t = time.perf_counter()
        http_port = _free_port()
        checkpoint = str(run.best_checkpoint)

        # 3a. with SQLite: refused on several nodes, with a message naming database.url
        sqlite = _serve_config(checkpoint, work, http_port, f"sqlite:///{work / 'serve.db'}")
        app_name = sqlite["applications"][0]["name"]
        deploy = _deploy(sqlite, work / "serve_config_sqlite.yaml", api)
        refused: dict[str, Any] = {"deploy_rc": deploy.returncode, "deploy_output": (deploy.stdout + deploy.stderr)[-3000:]}
        if deploy.returncode == 0:
            app_status = _poll(lambda: serve.status().applications.get(app_name), _app_settled,
                               time.monotonic() + 120, 1.0)
            if _app_settled(app_status):
                refused.update(app_status=getattr(app_status.status, "value", str(app_status.status)),
                               message=app_status.message[-3000:])
        result["sqlite_refused"] = refused
        result["stages"]["sqlite_refused_s"] = round(time.perf_counter() - t, 1)
        _dump(out, result)
        if database_url is None:
            return

        # 3b. with PostgreSQL: deployed, /readyz, and the shards where their resource is
        t = time.perf_counter()
        config = _serve_config(checkpoint, work, http_port, database_url)
        deploy = _deploy(config, work / "serve_config.yaml", api)
        result["serve"] = {"deploy_rc": deploy.returncode, "deploy_output": (deploy.stdout + deploy.stderr)[-3000:]}
        key_file = work / "api-key"  # /readyz needs a key: the one the Ingress generated
        status, body = None, ""
        app_status = None
        shards_status, shards_body = None, ""
        deadline = time.monotonic() + 180
        if deploy.returncode == 0:
            status, body = _poll(lambda: _get(f"http://127.0.0.1:{http_port}/readyz", key_file),
                                 lambda got: got[0] == 200, deadline, 2.0)
        if status == 200:
            # every replica started, not only the first
            app_status = _poll(lambda: serve.status().applications.get(app_name), _app_settled, deadline, 2.0)
            # a shard heartbeats within a lease interval
            shards_status, shards_body = _poll(
                lambda: _get(f"http://127.0.0.1:{http_port}/shards", key_file),
                lambda got: got[0] != 200 or json.loads(got[1])["shards"], deadline, 1.0)
        replicas = [a for a in list_actors(address=api, detail=True, limit=1000, raise_on_missing_output=False)
                    if (a.class_name or "").startswith("ServeReplica:")]
        result["serve"].update({
            "readyz_status": status, "readyz_body": body,
            "app_status": None if app_status is None else getattr(app_status.status, "value", str(app_status.status)),
            "shards_status": shards_status, "shards_body": shards_body,
            "replicas": [{"deployment": a.class_name.rsplit(":", 1)[-1], "state": a.state, "node_id": a.node_id}
                         for a in replicas],
        })
        result["stages"]["serve_s"] = round(time.perf_counter() - t, 1)
    except BaseException:  # recorded for the test to show, then the cluster is torn down
        result["error"] = traceback.format_exc()
    finally:
        _dump(out, result)
        try:
            if ray.is_initialized():
                serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
