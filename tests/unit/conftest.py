"""Unit tier: never starts Ray."""

import pytest


@pytest.fixture(autouse=True)
def _forbid_ray(monkeypatch):
    import ray

    def _refuse(*args, **kwargs):
        raise RuntimeError("tests/unit must not start Ray; move this test to tests/integration")

    monkeypatch.setattr(ray, "init", _refuse)


@pytest.fixture()
def torch_one_thread():
    """One torch thread and a fixed seed for the test; the thread count is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)
