"""The deployment files hold what KubeRay's CRDs and Ray Serve's schema require, and what docs/cluster.md promises.

KubeRay: no cluster here, so the fields the ray.io/v1 CRDs require (RayJob, RayService, the RayCluster spec they
embed, the pod templates) are written down below as a minimal JSON schema and checked with jsonschema, plus the
rules the operator enforces at admission (rayStartParams are strings, min <= replicas <= max, unique groups).
Serve: ``serveConfigV2`` and ``deploy/serve_config.yaml`` are validated with Ray's own ``ServeDeploySchema``, their
``args`` with the app builder's ``AppArgs``, their deployment names against the deployments of the graph that
``build_app`` binds (built here from a tiny checkpoint, without Ray), and the StreamShard's options against the
``serve.shards`` settings the app reads. The RayService requires its database Secret.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
SERVE_CONFIG = REPO / "deploy" / "serve_config.yaml"
IMAGE_ROOT = "/home/ray/bigsister-ray"  # WORKDIR of deploy/Dockerfile.*

_CONTAINER = {"type": "object", "required": ["name", "image"],
              "properties": {"name": {"type": "string", "minLength": 1}, "image": {"type": "string", "minLength": 1}}}
_POD_TEMPLATE = {
    "type": "object", "required": ["spec"],
    "properties": {"spec": {"type": "object", "required": ["containers"],
                            "properties": {"containers": {"type": "array", "minItems": 1, "items": _CONTAINER}}}},
}
_START_PARAMS = {"type": "object", "additionalProperties": {"type": "string"}}  # map[string]string in the CRD
_CLUSTER_SPEC = {
    "type": "object", "required": ["headGroupSpec"],
    "properties": {
        "rayVersion": {"type": "string"},
        "headGroupSpec": {"type": "object", "required": ["template"],
                          "properties": {"template": _POD_TEMPLATE, "rayStartParams": _START_PARAMS}},
        "workerGroupSpecs": {"type": "array", "items": {
            "type": "object", "required": ["groupName", "template"],
            "properties": {"groupName": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                           "replicas": {"type": "integer", "minimum": 0},
                           "minReplicas": {"type": "integer", "minimum": 0},
                           "maxReplicas": {"type": "integer", "minimum": 0},
                           "template": _POD_TEMPLATE, "rayStartParams": _START_PARAMS}}},
        "authOptions": {"type": "object", "properties": {"mode": {"enum": ["disabled", "token"]}}},
    },
}
_METADATA = {"type": "object", "required": ["name"],
             "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 47}}}
RAYJOB_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"}, "kind": {"const": "RayJob"}, "metadata": _METADATA,
        "spec": {"type": "object", "required": ["entrypoint", "rayClusterSpec"], "properties": {
            "entrypoint": {"type": "string", "minLength": 1},
            "runtimeEnvYAML": {"type": "string"},
            "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
            "shutdownAfterJobFinishes": {"type": "boolean"},
            "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
            "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
            "backoffLimit": {"type": "integer", "minimum": 0},
            "rayClusterSpec": _CLUSTER_SPEC}},
    },
}
RAYSERVICE_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"}, "kind": {"const": "RayService"}, "metadata": _METADATA,
        "spec": {"type": "object", "required": ["serveConfigV2", "rayClusterConfig"], "properties": {
            "serveConfigV2": {"type": "string", "minLength": 1},
            "upgradeStrategy": {"type": "object", "properties": {"type": {"enum": ["NewCluster", "NewClusterWithIncrementalUpgrade", "None"]}}},
            "rayClusterConfig": _CLUSTER_SPEC}},
    },
}


def _pinned_ray() -> str:
    for dep in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        m = re.fullmatch(r"ray(\[[^\]]*\])?==([\w.]+)", dep.replace(" ", ""))
        if m:
            return m.group(2)
    raise AssertionError("pyproject.toml pins no ray version")


def _load(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


def _groups(cluster: dict) -> list[dict]:
    return [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]


def _cluster_checks(cluster: dict, common: list[dict]) -> None:
    assert cluster["rayVersion"] == _pinned_ray()
    assert cluster.get("authOptions", {}).get("mode") == "token", "Ray token authentication must be on"
    names = [g["groupName"] for g in cluster["workerGroupSpecs"]]
    assert len(names) == len(set(names)), f"duplicate worker groups {names}"
    for g in cluster["workerGroupSpecs"]:
        assert g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"], g["groupName"]
    assert cluster["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", "keep work off the head"
    policy = next(d for d in common if d["kind"] == "NetworkPolicy")
    claim = next(d for d in common if d["kind"] == "PersistentVolumeClaim")["metadata"]["name"]
    config_map = next(d for d in common if d["kind"] == "ConfigMap")["metadata"]["name"]
    accel = []
    for g in _groups(cluster):
        pod = g["template"]
        labels = pod.get("metadata", {}).get("labels", {})
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items(), "pods outside the NetworkPolicy"
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        assert volumes["shared"]["persistentVolumeClaim"]["claimName"] == claim
        assert volumes["config"]["configMap"]["name"] == config_map
        for c in pod["spec"]["containers"]:
            tag = c["image"].rsplit(":", 1)[-1]
            assert tag.endswith(("-cpu", "-cuda")), c["image"]
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            assert mounts <= volumes.keys(), f"{c['name']} mounts {mounts - volumes.keys()} with no volume"
            gpus = c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
            if gpus:
                assert tag.endswith("-cuda"), f"a GPU pod needs the CUDA image, got {c['image']}"
                accel.append(g)
    assert accel, "no GPU worker group"
    for g in accel:
        assert yaml.safe_load(yaml.safe_load(g["rayStartParams"]["resources"]))["accelerator"] >= 1


def _common() -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / "common.yaml").read_text()) if d]


def test_common_manifests_and_settings_configmap():
    from bigsister_ray.config import Settings

    docs = _common()
    assert {d["kind"] for d in docs} == {"PersistentVolumeClaim", "ConfigMap", "NetworkPolicy"}
    for d in docs:
        assert d["apiVersion"] in ("v1", "networking.k8s.io/v1") and d["metadata"]["name"]
    assert next(d for d in docs if d["kind"] == "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    settings = Settings(**yaml.safe_load(cm["data"]["config.yaml"]))  # a typo in the ConfigMap fails here
    assert settings.alerts.slack.token is None and str(settings.alerts.slack.token_file).startswith("/var/run/secrets/")
    ports = {p["port"] for rule in next(d for d in docs if d["kind"] == "NetworkPolicy")["spec"]["ingress"] for p in rule.get("ports", [])}
    assert 8265 in ports and 6379 not in ports


def test_rayjob_matches_the_crd_and_runs_the_stages():
    job = _load("rayjob-train.yaml")
    jsonschema.validate(job, RAYJOB_SCHEMA)
    spec = job["spec"]
    assert spec["submissionMode"] == "K8sJobMode" and spec["shutdownAfterJobFinishes"] is True
    _cluster_checks(spec["rayClusterSpec"], _common())
    env = yaml.safe_load(spec.get("runtimeEnvYAML") or "{}") or {}
    for key in (env.get("env_vars") or {}):
        assert not re.search(r"TOKEN|SECRET|PASSWORD|KEY|DATABASE", key, re.I), f"secret-looking {key} in runtime_env"
    scripts = re.findall(rf"python {IMAGE_ROOT}/(jobs/\w+\.py)", spec["entrypoint"])
    assert scripts[:2] == ["jobs/prepare.py", "jobs/train.py"], spec["entrypoint"]


@pytest.mark.parametrize(
    "path, value",
    [(("spec", "entrypoint"), None), (("spec", "rayClusterSpec", "headGroupSpec", "template"), None),
     (("spec", "rayClusterSpec", "headGroupSpec", "rayStartParams", "num-cpus"), 0),
     (("apiVersion",), "ray.io/v1alpha1"), (("metadata", "name"), "Bigsister_Train")],
)
def test_the_crd_schema_rejects_what_kuberay_rejects(path, value):
    job = _load("rayjob-train.yaml")
    node = job
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(job, RAYJOB_SCHEMA)


def test_rayjob_entrypoint_options_exist_in_the_job_scripts():
    entry = _load("rayjob-train.yaml")["spec"]["entrypoint"]
    for command in entry.split("&&"):
        script = re.search(rf"{IMAGE_ROOT}/(jobs/\w+\.py)", command).group(1)
        path = REPO / script
        if not path.exists():
            pytest.skip(f"{script} (used by deploy/k8s/rayjob-train.yaml) does not exist yet")
        out = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=120, cwd=REPO)
        assert out.returncode == 0, out.stderr[-2000:]
        for flag in re.findall(r"(--[a-z][a-z0-9-]*)", command):
            assert flag in out.stdout, f"{script} has no option {flag} (see `python {script} --help`)"


@pytest.fixture(scope="module")
def graph_deployments(tmp_path_factory) -> set[str]:
    """Names of the deployments ``build_app`` binds (the app is built, not run: no Ray)."""
    from ray.serve._private.build_app import build_app as build_serve_app

    from bigsister_ray.serve.app import AppArgs, build_app
    from tests._serve_support import make_checkpoint

    tmp = tmp_path_factory.mktemp("graph")
    ckpt = make_checkpoint(tmp / "ckpt")
    app = build_app(AppArgs(checkpoint=ckpt, settings={"database": {"url": f"sqlite:///{tmp / 'db.sqlite'}"}}))
    return {d.name for d in build_serve_app(app, name="bigsister").deployments}


def _configmap_settings():
    from bigsister_ray.config import Settings

    cm = next(d for d in _common() if d["kind"] == "ConfigMap")
    return Settings(**yaml.safe_load(cm["data"]["config.yaml"]))


def _serve_checks(config: dict, where: str, graph: set[str], settings, accelerator: bool = True) -> dict:
    """Checks one Serve config against Ray's schema and the app; returns its deployments by name."""
    from ray.serve.schema import ServeDeploySchema

    from bigsister_ray.serve.app import AppArgs, deployment_options
    from bigsister_ray.serve.classifier import Classifier, ClassifierUserConfig

    schema = ServeDeploySchema.model_validate(config)  # Ray Serve's own validation
    assert len(schema.applications) == 1, where
    app = schema.applications[0]
    assert app.import_path == "bigsister_ray.serve.app:build_app", where
    AppArgs.model_validate(app.args)
    deployments = {d.name: d for d in app.deployments}
    assert set(deployments) == graph, f"{where}: deployments {sorted(deployments)}, build_app binds {sorted(graph)}"
    cls = deployments[Classifier.name]
    if accelerator:  # a cluster with accelerator nodes; deploy/serve_config.yaml also runs on a laptop's local Ray
        assert cls.ray_actor_options.resources.get("accelerator", 0) >= 1, f"{where}: Classifier must ask for `accelerator`"
    ClassifierUserConfig.model_validate(cls.user_config)
    for d in deployments.values():
        for field in ("max_ongoing_requests", "max_queued_requests", "health_check_period_s", "health_check_timeout_s"):
            assert field in d.model_fields_set, f"{where}: {d.name} sets no {field}"
    assert schema.http_options.request_timeout_s, f"{where}: no request timeout"

    # The StreamShard's options are what build_app derives from serve.shards (the config's values win over it).
    shard, sh = deployments["StreamShard"], settings.serve.shards
    derived = deployment_options(settings)["StreamShard"]
    scaling = shard.autoscaling_config
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (sh.min_shards, sh.max_shards), \
        f"{where}: StreamShard replicas {scaling['min_replicas']}..{scaling['max_replicas']}, serve.shards says {sh.min_shards}..{sh.max_shards}"
    assert scaling["policy"]["policy_function"] == derived["autoscaling_config"]["policy"]["policy_function"], \
        f"{where}: the shard count must follow the streams (shard_count_policy)"
    assert "num_replicas" not in shard.model_fields_set, f"{where}: a fixed num_replicas would stop the shard count following the streams"
    assert shard.ray_actor_options.num_cpus == sh.num_cpus, f"{where}: StreamShard num_cpus differs from serve.shards.num_cpus"
    assert shard.model_dump(exclude_unset=True).get("max_replicas_per_node") == derived.get("max_replicas_per_node"), \
        f"{where}: StreamShard max_replicas_per_node differs from serve.shards.max_per_node ({sh.max_per_node})"
    assert shard.ray_actor_options.resources.get("accelerator", 0) == 0, f"{where}: shards belong on CPU nodes"
    return deployments


def _start_resources(group: dict) -> dict:
    raw = group.get("rayStartParams", {}).get("resources")
    return yaml.safe_load(yaml.safe_load(raw)) if raw else {}


def test_rayservice_matches_the_crd_and_serves_the_app(graph_deployments):
    svc = _load("rayservice.yaml")
    jsonschema.validate(svc, RAYSERVICE_SCHEMA)
    cluster = svc["spec"]["rayClusterConfig"]
    _cluster_checks(cluster, _common())
    config = yaml.safe_load(svc["spec"]["serveConfigV2"])
    settings = _configmap_settings()  # args.config is the ConfigMap, mounted at /etc/bigsister/config.yaml
    assert config["applications"][0]["args"]["config"] == "/etc/bigsister/config.yaml"
    deployments = _serve_checks(config, "rayservice.yaml serveConfigV2", graph_deployments, settings)
    assert config["http_options"]["host"] == "0.0.0.0", "in a pod Serve must listen beyond loopback (ClusterIP Service)"
    for app in config["applications"]:
        assert not (app.get("runtime_env") or {}).get("env_vars"), "no env (and so no secret) in runtime_env"

    # Shards go where their custom resource is offered: the CPU serving pods, never the head or a GPU pod.
    asks = {k: v for k, v in deployments["StreamShard"].ray_actor_options.resources.items() if v}
    assert asks, "StreamShard must ask for a custom resource that only the CPU serving pods offer"
    offering = [g for g in _groups(cluster) if all(_start_resources(g).get(k, 0) >= v for k, v in asks.items())]
    assert offering and all("groupName" in g and "accelerator" not in _start_resources(g) for g in offering), \
        f"StreamShard's {asks} must be offered by CPU worker groups only"
    for g in offering:
        per_pod = min(_start_resources(g)[k] // v for k, v in asks.items())
        assert per_pod == settings.serve.shards.max_per_node, \
            f"{g['groupName']} holds {per_pod} shards per pod, serve.shards.max_per_node is {settings.serve.shards.max_per_node}"


def test_rayservice_requires_the_database_secret():
    """Every Ray pod takes database.url from the Secret, and a missing Secret or key stops the pod from starting
    (no ``optional: true``), instead of each node falling back to its own SQLite file."""
    cluster = _load("rayservice.yaml")["spec"]["rayClusterConfig"]
    for g in _groups(cluster):
        for c in g["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in c.get("env", [])}
            ref = env.get("BIGSISTER_DATABASE__URL", {}).get("valueFrom", {}).get("secretKeyRef")
            assert ref, f"{g.get('groupName', 'head')}: BIGSISTER_DATABASE__URL must come from a Secret"
            assert ref.get("optional", False) is False, "the database Secret must be required (no optional: true)"
            assert "value" not in env["BIGSISTER_DATABASE__URL"], "no database URL written in the manifest"


def test_serve_config_and_rayservice_stay_in_step(graph_deployments):
    if not SERVE_CONFIG.exists():
        pytest.skip("deploy/serve_config.yaml does not exist yet")
    from bigsister_ray.serve.app import AppArgs

    local = yaml.safe_load(SERVE_CONFIG.read_text())
    args = AppArgs.model_validate(local["applications"][0]["args"])
    assert args.config is None, "deploy/serve_config.yaml runs without a settings file; its settings are in args"
    _serve_checks(local, "deploy/serve_config.yaml", graph_deployments, args.to_settings(), accelerator=False)
    assert local["http_options"]["host"] == "127.0.0.1", "serve deploy on a laptop/VM: HTTP on loopback"
    k8s = yaml.safe_load(_load("rayservice.yaml")["spec"]["serveConfigV2"])
    a, b = local["applications"][0], k8s["applications"][0]
    assert (a["name"], a["import_path"], a.get("route_prefix", "/")) == (b["name"], b["import_path"], b.get("route_prefix", "/"))
    assert {d["name"] for d in a["deployments"]} == {d["name"] for d in b["deployments"]}


def test_graph_is_ingress_shards_and_classifier(graph_deployments):
    assert graph_deployments == {"Ingress", "StreamShard", "Classifier"}


def test_dockerfiles_pin_ray_and_install_the_project():
    version = _pinned_ray()
    for name, base in (("Dockerfile.cpu", f"rayproject/ray:{version}-py311"), ("Dockerfile.cuda", f"rayproject/ray:{version}-py311-gpu")):
        text = (REPO / "deploy" / name).read_text()
        froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
        assert froms == [base], f"{name}: FROM {froms}, expected {base}"
        assert re.search(r"pip install [^\n]*\"\.(\[[^\]]*\])?\"", text), f"{name} does not install the project"
        assert f"'{version}'" in text, f"{name} must fail the build when the installed ray is not {version}"
        for src in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+?)\s+\S+$", text, re.M):
            for part in src.split():
                assert (REPO / part).exists(), f"{name}: COPY {part} does not exist in the repository"
        assert not re.search(r"^(ENV|ARG)\s+[^\n]*(TOKEN|SECRET|PASSWORD)", text, re.M | re.I), f"{name} bakes a secret"
        assert re.findall(r"^USER\s+(\S+)", text, re.M)[-1:] == ["ray"], f"{name} must run as the unprivileged ray user"


def test_media_must_be_shared_when_serving_spans_machines(tmp_path):
    from bigsister_ray.config import Settings
    from bigsister_ray.errors import ConfigError
    from bigsister_ray.serve.app import check_media_for_cluster

    mounts = ("/dev/nvme0n1p1 / ext4 rw 0 0\n"
              "fs-0123.efs.us-west-2.amazonaws.com:/ /mnt/bigsister nfs4 rw,relatime,vers=4.1,hard 0 0\n")
    local = Settings(incidents={"media_dir": str(tmp_path / "evidence")})
    with pytest.raises(ConfigError, match=r"incidents.media_dir .* local disk.*BIGSISTER_INCIDENTS__MEDIA_DIR"):
        check_media_for_cluster(local, ["10.0.0.1", "10.0.0.2"], mounts_text=mounts)
    check_media_for_cluster(local, ["10.0.0.1"], mounts_text=mounts)  # one machine: its own disk is shared
    shared = Settings(incidents={"media_dir": "/mnt/bigsister/evidence"})
    check_media_for_cluster(shared, ["10.0.0.1", "10.0.0.2"], mounts_text=mounts)
    cm = next(d for d in _common() if d["kind"] == "ConfigMap")  # the KubeRay settings pass on several pods
    settings = Settings(**yaml.safe_load(cm["data"]["config.yaml"]))
    check_media_for_cluster(settings, ["10.0.0.1", "10.0.0.2"], mounts_text=mounts)
