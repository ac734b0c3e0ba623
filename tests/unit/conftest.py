"""Unit tier: never starts Ray."""

import pytest


@pytest.fixture(autouse=True)
def _forbid_ray(monkeypatch):
    import ray

    def _refuse(*args, **kwargs):
        raise RuntimeError("tests/unit must not start Ray; move this test to tests/integration")

    monkeypatch.setattr(ray, "init", _refuse)
