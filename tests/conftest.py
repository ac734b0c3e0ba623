"""Shared fixtures: isolate env, RNG and settings; locate ../shared; skip GPU tests without a GPU."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings as hypothesis_settings

# Property tests draw the same examples on every run, so a suite's result depends on the code alone; the examples
# that once found a bug are pinned with @example. ``HYPOTHESIS_PROFILE=explore`` draws fresh
# examples to hunt for new bugs (run it before a release, not in CI).
hypothesis_settings.register_profile("default", derandomize=True)
hypothesis_settings.register_profile("explore", derandomize=False, max_examples=1000)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIGHT_SURV = SHARED / "data" / "fight-surv"
AIHUB_FIXTURE = SHARED / "fixtures" / "aihub"
I3D_LAYOUT = SHARED / "fixtures" / "i3d_rgb_kinetics400_layout.tsv"


@pytest.fixture(autouse=True)
def _isolate_env(monkeypatch):
    """No BIGSISTER_* from the developer's shell leaks into a test; RNGs restored afterwards."""
    for key in list(os.environ):
        if key.startswith("BIGSISTER_"):
            monkeypatch.delenv(key, raising=False)
    py_state, np_state = random.getstate(), np.random.get_state()
    yield
    random.setstate(py_state)
    np.random.set_state(np_state)


#: Backend parameter values that mean "this case runs on the test PostgreSQL server" (marker ``postgres``).
POSTGRES_PARAMS = frozenset({"postgres", "postgresql"})


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:  # torch missing or broken: no GPU either way
        has_gpu = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)
        # A case of a store test parametrized by backend that runs on PostgreSQL (tests/_postgres.py).
        callspec = getattr(item, "callspec", None)
        if callspec is not None and POSTGRES_PARAMS & {v for v in callspec.params.values() if isinstance(v, str)}:
            item.add_marker(pytest.mark.postgres)


def need_shared(path: Path) -> Path:
    """Skip the calling test when ../shared (or the given part of it) is absent, as in a user's fresh clone."""
    if not path.exists():
        pytest.skip(f"{path} is absent (it exists beside the checkout in CI, not in a fresh clone)")
    return path
