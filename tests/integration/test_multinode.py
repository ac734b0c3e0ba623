"""A local multi-node Ray cluster (ray.cluster_utils.Cluster) shows placement by resource.

A head with no GPU (standing in for the CPU serving pods: it offers the StreamShard's custom resource) and two
nodes carrying the custom resource ``accelerator`` (standing in for the GPU node type of cluster.yaml) run the
real stages; Ray's state API says where each task and actor ran:

* preprocessing (Ray Data ``prepare``) runs on every node;
* Ray Train workers (``train.worker_resources: {accelerator: 1}``, ``placement_strategy: SPREAD``) run one per
  accelerator node, never on the head;
* the cluster's Serve config (serveConfigV2 of deploy/k8s/rayservice.yaml, deployed with ``serve deploy``) with a
  SQLite ``database.url`` is refused, with a message saying to set database.url to PostgreSQL;
* with PostgreSQL (``BIGSISTER_TEST_POSTGRES_URL``; ``eval "$(bash .ci/start_postgres.sh)"`` starts a throwaway
  server, each run gets a fresh database) the app runs: the Classifier only on accelerator nodes, the
  StreamShards only where their resource is (never on an accelerator node), ``/readyz`` answers 200 and
  ``/shards`` lists the live shard on its node. Without that URL these serving checks skip.

The cluster lives in a subprocess (tests/integration/_multinode_driver.py) with its own HOME and Ray token: the
shared ``ray_session`` of this test process is never initialised next to it, and ~/.ray is never touched.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests._postgres import PG_URL, PG_URL_ENV, fresh_postgres

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("_multinode_driver.py")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def observed(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("multinode")
    home, work = tmp / "home", tmp / "work"
    home.mkdir()
    work.mkdir()
    token = tmp / "ray_auth_token"
    token.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "BIGSISTER_"))}
    env.update(HOME=str(home), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
               RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1",
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="2",
               PYTHONPATH=str(REPO))
    out = tmp / "observed.json"
    database = [fresh_postgres("bigsister_multinode")] if PG_URL else []  # passed as an argument: env drops BIGSISTER_*
    proc = subprocess.run([sys.executable, str(DRIVER), str(out), str(work), *database], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    if not out.exists():
        pytest.fail(f"the multi-node driver wrote nothing (rc {proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    result = json.loads(out.read_text())
    print(f"multi-node stage times (s): {result.get('stages')}")  # shown with -s or -rA
    if result["error"]:
        pytest.fail(f"the multi-node run failed:\n{result['error']}\n--- driver output ---\n{proc.stderr[-3000:]}")
    return result


def _accelerator_nodes(observed: dict) -> set[str]:
    return {node for node, res in observed["nodes"].items() if res.get("accelerator", 0) >= 1}


def test_cluster_has_cpu_and_accelerator_nodes(observed):
    nodes = observed["nodes"]
    assert len(nodes) == 3 and len(_accelerator_nodes(observed)) == 2
    assert len(observed["hosts"]) == 1, "the nodes share this machine (and its disk), so local paths pass the storage check"


def test_preprocessing_uses_every_node(observed):
    tasks = observed["prepare"]["tasks"]
    assert observed["prepare"]["clips_written"] > 0
    assert len(tasks) >= len(observed["nodes"]), f"fewer shard tasks than nodes: {tasks}"
    used = {t["node_id"] for t in tasks}
    assert used == set(observed["nodes"]), f"preprocessing ran on {len(used)} of {len(observed['nodes'])} nodes: {tasks}"


def test_training_workers_spread_over_accelerator_nodes(observed):
    workers = observed["train"]["workers"]
    assert len(workers) == 2, workers
    nodes = [w["node_id"] for w in workers]
    assert len(set(nodes)) == 2, f"SPREAD put both workers on one node: {nodes}"
    assert set(nodes) <= _accelerator_nodes(observed), "a training worker ran on a node without `accelerator`"
    assert Path(observed["train"]["best_checkpoint"]).exists()


def test_sqlite_is_refused_on_several_nodes(observed):
    refused = observed["sqlite_refused"]
    assert refused["deploy_rc"] == 0, refused["deploy_output"]  # the config is accepted; building the app fails
    assert refused.get("app_status") == "DEPLOY_FAILED", refused
    assert "database.url" in refused["message"] and "postgresql://" in refused["message"], refused["message"]


def _serving(observed: dict) -> dict:
    if not PG_URL:
        pytest.skip(f"{PG_URL_ENV} is not set: a Serve app on several nodes needs PostgreSQL "
                    "(eval \"$(bash .ci/start_postgres.sh)\" starts a throwaway server)")
    return observed["serve"]


def _alive_by_deployment(serve: dict) -> dict[str, list[str]]:
    by_deployment: dict[str, list[str]] = {}
    for r in serve["replicas"]:
        if r["state"] == "ALIVE":
            by_deployment.setdefault(r["deployment"], []).append(r["node_id"])
    return by_deployment


def test_classifier_runs_only_on_accelerator_nodes_and_the_app_is_ready(observed):
    serve = _serving(observed)
    assert serve["deploy_rc"] == 0, serve["deploy_output"]
    assert serve["readyz_status"] == 200, serve["readyz_body"]
    assert serve["app_status"] == "RUNNING", serve
    by_deployment = _alive_by_deployment(serve)
    assert set(by_deployment) == {"Ingress", "StreamShard", "Classifier"}, by_deployment
    classifier = by_deployment["Classifier"]
    assert len(classifier) == 2, classifier
    assert set(classifier) == _accelerator_nodes(observed), "Classifier replicas must sit on the accelerator nodes only"


def test_stream_shards_stay_off_accelerator_nodes_and_report_in_shards(observed):
    serve = _serving(observed)
    shards = _alive_by_deployment(serve).get("StreamShard", [])
    assert len(shards) == 1, f"no streams registered: serve.shards.min_shards (1) shards, got {shards}"
    assert not set(shards) & _accelerator_nodes(observed), "a StreamShard ran on an accelerator node"
    assert serve["shards_status"] == 200, serve["shards_body"]
    listed = json.loads(serve["shards_body"])
    assert [s["node_id"] for s in listed["shards"]] == shards, listed
    assert listed["streams"] == 0 and listed["unowned"] == [], listed
