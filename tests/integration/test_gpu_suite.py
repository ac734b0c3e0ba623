"""benchmarks/gpu_suite.py runs end to end on a CPU at tiny sizes, so that a GPU machine only has to start it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from bigsister_ray.config import load_settings
from tests.conftest import REPO


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the decode section needs ffmpeg (Debian: ffmpeg)")
def test_gpu_suite_runs_every_section_at_tiny_sizes(tmp_path):
    out = tmp_path / "suite.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--tiny", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = json.loads(out.read_text())
    modes = {(row["model"], row["mode"]) for row in got["models"]}
    recipe = load_settings(REPO / "configs" / "fight-cpu.yaml").model.name  # the CPU recipe's model, whatever it is
    assert modes == {("i3d", "train"), ("i3d", "infer"), (recipe, "train"), (recipe, "infer")}
    assert got["serving"]["model"] == recipe
    assert all(row["clips_per_s"] > 0 and row["gflops_per_clip"] > 0 for row in got["models"])
    assert got["serving"]["windows_per_s"] > 0 and got["serving"]["cameras_per_classifier"] >= 1
    assert got["decode"]["cpu"]["frames"] == 25  # one second at 25 fps, every frame decoded
    # Without a GPU the NVDEC side says why it did not run instead of failing the suite.
    assert "error" in got["decode"]["nvdec"] or got["decode"]["nvdec"]["frames"] == 25
