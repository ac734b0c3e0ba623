"""``prepare`` and ``detect`` where decord cannot be imported (no wheel for Linux aarch64 or macOS arm64).

Each command runs twice in its own process: as installed, and with a ``decord`` module on ``PYTHONPATH`` whose
import raises ImportError (and notes the process that tried, so the test knows the Ray workers saw it too). Both
runs must succeed and give the same clips (index, manifest fingerprint, every shard's frames) and the same
detection JSON: PyAV's frame count and fps are decord's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests._media import make_mp4
from tests._serve_support import TINY_SPEC, make_checkpoint

pytestmark = pytest.mark.slow

NO_DECORD = """\
import os
with open(os.environ["NO_DECORD_MARKER"], "a") as f:
    f.write(f"{os.getpid()}\\n")
raise ImportError("decord has no wheel for this platform")
"""


def _run(args: list[str], cwd: Path, without_decord: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if without_decord is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(without_decord), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["NO_DECORD_MARKER"] = str(without_decord / "imports.txt")
    proc = subprocess.run([sys.executable, "-m", "bigsister_ray.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _shard_frames(prepared: Path) -> dict[str, bytes]:
    frames = {}
    for shard in sorted((prepared / "shards").rglob("*.parquet")):
        table = pq.read_table(shard, columns=["clip_id", "frames"]).to_pydict()
        frames.update(zip(table["clip_id"], table["frames"]))
    return frames


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("no-decord")
    for i, (label, frames, fps) in enumerate([("fight", 40, 10.0), ("fight", 33, 12.0), ("noFight", 45, 10.0),
                                              ("noFight", 28, 8.0)]):
        make_mp4(root / "data" / label / f"v{i}.mp4", frames=frames, fps=fps)
    (root / "cfg.yaml").write_text("ray: {num_cpus: 2}\nclip: {frames: 8, fps: 4.0, size: 32, stride: 4}\n"
                                   "data: {split: [1.0, 0.0, 0.0]}\n")
    stub = root / "stub"
    stub.mkdir()
    (stub / "decord.py").write_text(NO_DECORD)
    return root


def test_the_stub_really_hides_decord(workspace):
    stub = workspace / "stub"
    env = {**os.environ, "PYTHONPATH": str(stub), "NO_DECORD_MARKER": str(workspace / "probe.txt")}
    code = "from bigsister_ray.video.files import decord_available; print(decord_available())"
    with_stub = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    without = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert (with_stub.stdout.strip(), without.stdout.strip()) == ("False", "True")  # the positive control


def test_prepare_gives_the_same_clips_without_decord(workspace):
    cfg = str(workspace / "cfg.yaml")
    common = ["prepare", "--source", "folders", "--root", str(workspace / "data"), "--config", cfg]
    _run([*common, "--out", str(workspace / "with")], workspace)
    stub = workspace / "stub"
    _run([*common, "--out", str(workspace / "without")], workspace, without_decord=stub)
    pids = set((stub / "imports.txt").read_text().split())
    assert len(pids) >= 2, "the Ray workers that decoded the clips did not run without decord"

    a, b = workspace / "with", workspace / "without"
    assert (a / "index.jsonl").read_text() == (b / "index.jsonl").read_text()
    ma, mb = json.loads((a / "manifest.json").read_text()), json.loads((b / "manifest.json").read_text())
    assert (ma["fingerprint"], ma["counts"]) == (mb["fingerprint"], mb["counts"])
    frames_a, frames_b = _shard_frames(a), _shard_frames(b)
    assert frames_a and frames_a.keys() == frames_b.keys()
    assert all(frames_a[k] == frames_b[k] for k in frames_a)


def test_detect_gives_the_same_result_without_decord(workspace):
    checkpoint = make_checkpoint(workspace / "ckpt" / "model.pt", spec=TINY_SPEC)
    video = make_mp4(workspace / "cam.mp4", frames=60, fps=10.0)
    args = ["detect", str(video), "--checkpoint", str(checkpoint)]
    with_decord = json.loads(_run(args, workspace).stdout)
    stub = workspace / "stub"
    without = json.loads(_run(args, workspace, without_decord=stub).stdout)
    assert with_decord["windows"] and without == with_decord
