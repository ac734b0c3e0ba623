"""The deployment files hold what KubeRay's CRDs and Ray Serve's schema require, and what docs/cluster.md promises.

KubeRay: no cluster here, so the fields the ray.io/v1 CRDs require (RayJob, RayService, the RayCluster spec they
embed, the pod templates) are written down below as a minimal JSON schema and checked with jsonschema, plus the
rules the operator enforces at admission (rayStartParams are strings, min <= replicas <= max, unique groups).
Serve: ``serveConfigV2`` and ``deploy/serve_config.yaml`` are validated with Ray's own ``ServeDeploySchema``, their
``args`` with the app builder's ``AppArgs``, their deployment names against the app's deployments.
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


def _serve_checks(config: dict, where: str, accelerator: bool = True) -> None:
    from ray.serve.schema import ServeDeploySchema

    from bigsister_ray.serve.app import AppArgs
    from bigsister_ray.serve.classifier import Classifier, ClassifierUserConfig

    schema = ServeDeploySchema.model_validate(config)  # Ray Serve's own validation
    known = {"Ingress", "Decoder", "Windower", "Classifier", "AlertManager"}
    assert len(schema.applications) == 1, where
    app = schema.applications[0]
    assert app.import_path == "bigsister_ray.serve.app:build_app", where
    AppArgs.model_validate(app.args)
    deployments = {d.name: d for d in app.deployments}
    assert set(deployments) <= known, f"{where}: unknown deployments {set(deployments) - known}"
    cls = deployments[Classifier.name]
    if accelerator:  # a cluster with accelerator nodes; deploy/serve_config.yaml also runs on a laptop's local Ray
        assert cls.ray_actor_options.resources.get("accelerator", 0) >= 1, f"{where}: Classifier must ask for `accelerator`"
    ClassifierUserConfig.model_validate(cls.user_config)
    for d in deployments.values():
        for field in ("max_ongoing_requests", "max_queued_requests", "health_check_period_s", "health_check_timeout_s"):
            assert field in d.model_fields_set, f"{where}: {d.name} sets no {field}"
    assert schema.http_options.request_timeout_s, f"{where}: no request timeout"


def test_rayservice_matches_the_crd_and_serves_the_app():
    svc = _load("rayservice.yaml")
    jsonschema.validate(svc, RAYSERVICE_SCHEMA)
    _cluster_checks(svc["spec"]["rayClusterConfig"], _common())
    config = yaml.safe_load(svc["spec"]["serveConfigV2"])
    _serve_checks(config, "rayservice.yaml serveConfigV2")
    assert config["http_options"]["host"] == "0.0.0.0", "in a pod Serve must listen beyond loopback (ClusterIP Service)"
    for app in config["applications"]:
        assert not (app.get("runtime_env") or {}).get("env_vars"), "no env (and so no secret) in runtime_env"


def test_serve_config_and_rayservice_stay_in_step():
    if not SERVE_CONFIG.exists():
        pytest.skip("deploy/serve_config.yaml does not exist yet")
    local = yaml.safe_load(SERVE_CONFIG.read_text())
    _serve_checks(local, "deploy/serve_config.yaml", accelerator=False)
    assert local["http_options"]["host"] == "127.0.0.1", "serve deploy on a laptop/VM: HTTP on loopback"
    k8s = yaml.safe_load(_load("rayservice.yaml")["spec"]["serveConfigV2"])
    a, b = local["applications"][0], k8s["applications"][0]
    assert (a["name"], a["import_path"], a.get("route_prefix", "/")) == (b["name"], b["import_path"], b.get("route_prefix", "/"))
    assert {d["name"] for d in a["deployments"]} == {d["name"] for d in b["deployments"]}


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
