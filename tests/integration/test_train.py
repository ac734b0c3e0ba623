"""Ray Train on a tiny prepared dataset: the loop learns, a killed worker resumes, evaluation is consistent.

One shared local Ray (2 CPUs). Clips are 8 x 32 x 32 so an epoch takes seconds on two cores.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bigsister_ray.clip import ClipSpec
from bigsister_ray.config import Settings
from tests._prepared import make_prepared

SPEC = ClipSpec(frames=8, fps=8.0, size=32, stride=4)
#: Enough epochs that the >95% training accuracy is reached with margin (8 sometimes stopped at 0.93).
EPOCHS = 12
EMA_DECAY = 0.9
REPO = Path(__file__).resolve().parents[2]


def _settings(**train) -> Settings:
    base = {"workers": 2, "batch_size": 4, "lr": 1e-2, "epochs": EPOCHS, "early_stopping_patience": 50,
            "max_failures": 2, "target_precision": 0.8}
    return Settings.model_validate({"train": {**base, **train}, "model": {"name": "tiny3d", "dropout": 0.0},
                                    "ray": {"num_cpus": 2}})


def _epochs(run_dir: Path) -> list[dict]:
    from bigsister_ray.train.trainer import read_history

    return [h for h in read_history(run_dir) if h["event"] == "epoch"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    # 3 classes, imbalanced (normal x1.5) so the weighted loss has something to do.
    make_prepared(root, labels=("fight", "assault", "normal"), counts={"train": 24, "val": 8, "test": 8},
                  spec=SPEC, imbalance={"normal": 1.5}, seed=3)
    return root


@pytest.fixture(scope="module")
def learned(ray_local, prepared, tmp_path_factory):
    """One EPOCHS-epoch run of tiny3d on 2 workers in which worker 1 is killed during epoch 2 (first attempt only).

    Shared by the tests below (a Ray Train start costs tens of seconds on two cores): the loop must learn
    *and* survive the kill, resuming from epoch 1's checkpoint."""
    from bigsister_ray.train.loop import FaultInjection, fault_drill
    from bigsister_ray.train.trainer import train

    base = tmp_path_factory.mktemp("runs")
    out, marker = base / "learn", base / "fault-fired"
    fault = FaultInjection(epoch=2, rank=1, after_batches=1, marker=str(marker))
    # With the weight average on: the resume must restore both the trained weights and their average.
    with fault_drill(fault):
        result = train(prepared, out, _settings(ema_decay=EMA_DECAY))
    return out, result, marker


def test_small_model_learns_past_95_percent_training_accuracy(learned):
    out, result, _ = learned
    epochs = _epochs(out)
    assert [e["epoch"] for e in epochs] == list(range(1, EPOCHS + 1))
    best_train = max(e["train_accuracy"] for e in epochs)
    assert best_train > 0.95, [round(e["train_accuracy"], 3) for e in epochs]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    # every epoch reports both splits and throughput; the two workers saw every training clip between them
    for e in epochs:
        assert {"train_loss", "train_macro_f1", "val_accuracy", "val_macro_f1", "clips_per_s"} <= set(e)
        assert e["train_clips"] == 24 * 2 + 36
        assert e["val_clips"] == 8 * 2 + 12
    assert result.last_epoch == EPOCHS


def test_killed_worker_resumes_from_the_last_checkpoint(learned):
    """Worker 1 died during epoch 2; the restarted group went on from epoch 1's checkpoint."""
    from bigsister_ray.train.trainer import read_history

    out, result, marker = learned
    assert marker.exists(), "the fault never fired: the test proves nothing"
    assert json.loads(marker.read_text())["epoch"] == 2
    events = [(h["event"], h.get("epoch", h.get("from_epoch"))) for h in read_history(out)]
    # epoch 1 ran once, the restarted group resumed from it, epochs 2.. followed: no restart at zero
    assert events == [("epoch", 1), ("resumed", 1)] + [("epoch", k) for k in range(2, EPOCHS + 1)], events
    assert result.resumed_from_epoch == 1 and result.epochs_this_call == EPOCHS
    # the weight average came back too: its step count goes on from epoch 1's (about doubles), not from zero
    steps = {e["epoch"]: e["ema_steps"] for e in _epochs(out)}
    assert steps[1] > 0 and steps[2] > 1.5 * steps[1], steps


def test_best_checkpoint_is_the_best_validation_epoch_and_is_calibrated(learned, prepared):
    from bigsister_ray.data.prepared import read_manifest
    from bigsister_ray.models.checkpoint import read_checkpoint_meta

    out, result, _ = learned
    assert result.best_checkpoint == out.resolve() / "best" / "model.pt"
    meta = read_checkpoint_meta(result.best_checkpoint)
    epochs = _epochs(out)
    best = max(e["val_macro_f1"] for e in epochs)
    assert meta.metrics["val_macro_f1"] == pytest.approx(best)
    assert meta.epoch == result.best_epoch
    assert meta.labels == ["fight", "assault", "normal"] and meta.clip == SPEC
    assert meta.data_fingerprint == read_manifest(prepared).fingerprint
    assert meta.extra["ema_decay"] == EMA_DECAY  # the checkpoint holds the weight average
    # fitted on validation (1.0 exactly when the validation clips are perfectly separated: no NLL minimum)
    assert meta.temperature > 0 and meta.metrics["calibration"]["temperature"] == pytest.approx(meta.temperature)
    assert set(meta.thresholds) <= {"fight", "assault"} and meta.thresholds
    assert all(0.0 <= t <= 1.0 for t in meta.thresholds.values())
    assert meta.metrics["calibration"]["val_clips"] == 28


def test_evaluate_matches_an_independent_prediction(learned, prepared, tmp_path):
    """metrics.json's confusion matrix equals one computed here with the models' own predict_proba."""
    import pyarrow.parquet as pq

    from bigsister_ray.data.prepared import frames_from_bytes, read_manifest
    from bigsister_ray.models.checkpoint import load_checkpoint, predict_proba
    from bigsister_ray.train.evaluate import evaluate

    out, result, _ = learned
    res = evaluate(result.best_checkpoint, prepared, tmp_path / "eval", _settings(), split="test")
    m = json.loads(res.metrics_path.read_text())
    for key in ("accuracy", "macro_f1", "labels", "per_class", "confusion", "baselines", "ece", "reliability", "thresholds"):
        assert key in m
    loaded = load_checkpoint(result.best_checkpoint)
    manifest = read_manifest(prepared)
    cm = np.zeros((3, 3), dtype=int)
    for path in manifest.shard_paths(prepared, "test"):
        t = pq.read_table(path).to_pydict()
        clips = np.stack([frames_from_bytes(b, manifest.clip) for b in t["frames"]])
        pred = predict_proba(loaded.model, clips, loaded.meta).argmax(axis=1)
        for y, p in zip(t["label_idx"], pred):
            cm[y, p] += 1
    assert m["confusion"] == cm.tolist()
    assert m["n"] == int(cm.sum()) == 8 * 2 + 12
    assert m["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    # majority baseline: always "normal" (the most frequent training class) on these test clips
    assert m["baselines"]["majority"]["label"] == "normal"
    assert m["baselines"]["majority"]["accuracy"] == pytest.approx(12 / 28)
    # always "normal": F1 2*(12/28)/(1 + 12/28) = 0.6 for normal, 0 for the two others
    assert res.majority_macro_f1 == m["baselines"]["majority"]["macro_f1"] == pytest.approx(0.6 / 3)
    assert m["baselines"]["chance"]["accuracy"] == pytest.approx(1 / 3)
    for name in ("confusion.png", "reliability.png"):
        assert (tmp_path / "eval" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "majority class" in report and "Calibration" in report and "Per class" in report


def test_a_rerun_with_the_same_name_resumes(learned, prepared, tmp_path):
    """Training again into the same folder continues at epoch EPOCHS + 1 instead of starting over. It trains in a
    copy of the shared run, so the other tests see that run as it was, in any order."""
    import shutil

    from bigsister_ray.train.trainer import train

    shared, _, _ = learned
    out = tmp_path / shared.name
    shutil.copytree(shared, out)
    # without the weight average this time: the trained weights (not their average) are what it continues from
    again = train(prepared, out, _settings(epochs=EPOCHS + 1))
    assert again.resumed_from_epoch == EPOCHS and again.epochs_this_call == 1 and again.last_epoch == EPOCHS + 1
    assert [e["epoch"] for e in _epochs(out)] == list(range(1, EPOCHS + 2))


def test_training_refuses_a_folder_that_is_not_a_prepared_dataset(ray_session, tmp_path):
    from bigsister_ray.errors import DataError
    from bigsister_ray.train.trainer import train

    with pytest.raises(DataError, match="bigsister prepare"):
        train(tmp_path / "nothing-here", tmp_path / "run", _settings())


@pytest.mark.slow
def test_cli_chain_synth_prepare_train_evaluate(tmp_path):
    """`bigsister synth` -> `prepare` -> `train --workers 2 --epochs 2` -> `evaluate`: metrics.json has the keys."""
    pytest.importorskip("bigsister_ray.data.synth")
    pytest.importorskip("bigsister_ray.data.pipeline")
    config = tmp_path / "settings.yaml"
    config.write_text(
        "ray: {num_cpus: 2}\n"
        "clip: {frames: 8, fps: 4.0, size: 32, stride: 4}\n"
        "task: {labels: [fight, assault, normal]}\n"
        "train: {batch_size: 4, lr: 0.01}\n"
    )
    exe = [sys.executable, "-m", "bigsister_ray.cli"]

    logs: dict[str, str] = {}

    def run(*args: str) -> str:
        proc = subprocess.run([*exe, *args, "--config", str(config)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        logs[args[0]] = proc.stderr
        return proc.stdout

    run("synth", "--out", str(tmp_path / "raw"), "--videos", "12", "--seconds", "4")
    run("prepare", "--source", "aihub", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "prepared"))
    out = run("train", "--data", str(tmp_path / "prepared"), "--out", str(tmp_path / "run"), "--workers", "2", "--epochs", "2")
    train_log = logs["train"]
    assert "best: epoch" in out
    # the local Ray has no dashboard, hence no state API: Ray Train's cleaner must not repeat its warning every second
    assert "Failed to query Ray Train Controller" not in out + train_log, train_log[-2000:]
    checkpoint = tmp_path / "run" / "best" / "model.pt"
    assert checkpoint.exists()
    split = "test"
    from bigsister_ray.data.prepared import read_manifest

    if not read_manifest(tmp_path / "prepared").shard_paths(tmp_path / "prepared", "test"):
        split = "val" if read_manifest(tmp_path / "prepared").shard_paths(tmp_path / "prepared", "val") else "train"
    run("evaluate", "--checkpoint", str(checkpoint), "--data", str(tmp_path / "prepared"), "--out", str(tmp_path / "eval"),
        "--split", split)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {"accuracy", "macro_f1", "labels", "per_class", "confusion"} <= set(metrics)
    assert metrics["labels"] == ["fight", "assault", "normal"]
    assert np.asarray(metrics["confusion"]).sum() == metrics["n"] > 0
    shutil.rmtree(tmp_path / "raw", ignore_errors=True)
