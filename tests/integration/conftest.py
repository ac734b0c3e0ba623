"""Integration tier: one shared local Ray (2 pinned CPUs) for the whole session, cleaned after each test."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_local():
    import ray

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    if ray.is_initialized():
        ray.shutdown()
    # address="local": always a new local Ray, never a cluster that happens to run on this host.
    ctx = ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="bigsister-tests")
    yield ctx
    try:
        from ray import serve

        serve.shutdown()
    except Exception:  # Serve was never started in this session
        pass
    ray.shutdown()


@pytest.fixture()
def ray_session(ray_local):
    """Per test: the shared Ray; named actors and Serve apps a test left behind are removed after it."""
    import ray

    yield ray_local
    try:
        from ray import serve

        apps = list(serve.status().applications)
    except Exception:  # no Serve controller running
        apps = []
    for name in apps:
        serve.delete(name)
    assert ray.is_initialized()
