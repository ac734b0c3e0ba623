"""cluster.yaml passes Ray's own cluster-launcher validation and keeps the properties docs/cluster.md promises.

Ray's validation is ``prepare_config`` (merges the provider's defaults, node types, docker) followed by
``validate_config`` (the JSON schema ``ray/autoscaler/ray-schema.json`` plus the cross-field rules), the same two
calls ``ray up`` makes before it talks to the cloud.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO / "cluster.yaml"


def _raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _validated(config: dict) -> dict:
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _pinned_ray_version() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        m = re.fullmatch(r"ray(\[[^\]]*\])?==([\w.]+)", dep.replace(" ", ""))
        if m:
            return m.group(2)
    raise AssertionError(f"pyproject.toml pins no ray==X.Y.Z among {deps}")


def test_ray_validation_accepts_cluster_yaml():
    prepared = _validated(_raw())
    assert prepared["head_node_type"] == "head"
    assert set(prepared["available_node_types"]) == {"head", "cpu_worker", "gpu_worker"}


def test_ray_validation_is_real_and_rejects_a_typo():
    bad = _raw()
    bad["available_node_types"]["gpu_worker"]["resourcez"] = bad["available_node_types"]["gpu_worker"].pop("resources")
    with pytest.raises(jsonschema.ValidationError):
        _validated(bad)
    too_many = _raw()
    too_many["available_node_types"]["cpu_worker"]["min_workers"] = too_many["max_workers"] + 1
    with pytest.raises(ValueError, match="max_workers"):
        _validated(too_many)


def test_images_pin_the_ray_version_of_pyproject():
    version = _pinned_ray_version()
    config = _validated(_raw())
    images = [config["docker"][k] for k in ("image", "head_image", "worker_image")]
    images += [t["docker"]["worker_image"] for t in config["available_node_types"].values() if "docker" in t]
    assert images
    for image in images:
        assert image.startswith(f"rayproject/ray:{version}-py311"), image
    assert config["available_node_types"]["gpu_worker"]["docker"]["worker_image"].endswith("-gpu")
    setup = "\n".join(config["setup_commands"])
    assert f"'{version}'" in setup, "setup_commands must fail fast when the image's Ray is not the pinned one"


def test_node_types_and_resources():
    types = _validated(_raw())["available_node_types"]
    assert types["head"]["resources"].get("CPU") == 0, "the head runs no data/train/serve work"
    gpu = types["gpu_worker"]["resources"]
    assert gpu.get("GPU", 0) >= 1 and gpu.get("accelerator", 0) >= 1
    assert types["cpu_worker"]["resources"].get("CPU", 0) >= 1
    assert "accelerator" not in types["cpu_worker"]["resources"] and "GPU" not in types["cpu_worker"]["resources"]


def test_setup_installs_the_project_and_mounts_it():
    config = _validated(_raw())
    mounts = config["file_mounts"]
    assert mounts["/home/ray/bigsister-ray"] == "."
    assert any("pip install" in c and "/home/ray/bigsister-ray" in c for c in config["setup_commands"])
    assert ".gitignore" in config["rsync_filter"], "data, runs and weights ignored by git must not be synced"


def test_dashboard_on_loopback_and_token_auth_on_every_node():
    config = _validated(_raw())
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in head
    for cmds in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        start = next(c for c in cmds if "ray start" in c)
        assert "RAY_AUTH_MODE=token" in start and "RAY_AUTH_TOKEN_PATH=" in start
    text = CLUSTER_YAML.read_text()
    assert "xoxb-" not in text.replace("xoxb-...", ""), "no Slack token in cluster.yaml"


def test_shared_storage_is_mounted_on_every_host_and_in_the_container():
    config = _validated(_raw())
    init = "\n".join(config["initialization_commands"])
    assert re.search(r"mount -t nfs4? .* /mnt/bigsister", init), "no shared file system mounted on the hosts"
    assert "-v /mnt/bigsister:/mnt/bigsister" in config["docker"]["run_options"], "the mount must reach the container"



def test_every_node_type_requires_imdsv2():
    """Instance metadata only with a session token (IMDSv2), whose reply does not leave the host's network stack
    (hop limit 1: Ray's launcher runs the container with --net=host)."""
    prepared = _validated(_raw())
    wanted = {"HttpEndpoint": "enabled", "HttpTokens": "required", "HttpPutResponseHopLimit": 1}
    for name, node_type in prepared["available_node_types"].items():
        assert node_type["node_config"].get("MetadataOptions") == wanted, name
    from ray.autoscaler._private.docker import docker_start_cmds

    assert "--net=host" in docker_start_cmds("ray", "img", {}, "bigsister", [], "bigsister", "/home/ray", "docker")


def test_imdsv2_check_is_real():
    raw = _raw()
    raw["available_node_types"]["gpu_worker"]["node_config"].pop("MetadataOptions")
    node_types = _validated(raw)["available_node_types"]
    assert "MetadataOptions" not in node_types["gpu_worker"]["node_config"]  # Ray does not add it for us
