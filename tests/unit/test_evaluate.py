"""Evaluation without Ray: a raw folders dataset scored directly, a prepared split, and refusals that say why."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bigsister_ray.clip import ClipSpec
from bigsister_ray.config import Settings
from tests._prepared import make_prepared, synthetic_clip

SPEC = ClipSpec(frames=8, fps=8.0, size=32, stride=4)
LABELS = ["fight", "normal"]


def _checkpoint(path: Path, spec: ClipSpec = SPEC, labels: list[str] = LABELS) -> Path:
    import torch

    from bigsister_ray.models import build_model, get_model_spec
    from bigsister_ray.models.checkpoint import CheckpointMeta, save_checkpoint

    torch.manual_seed(0)
    model = build_model("tiny3d", len(labels))
    meta = CheckpointMeta(model_name="tiny3d", labels=labels, clip=spec, norm=get_model_spec("tiny3d").norm, epoch=1)
    return save_checkpoint(path, model, meta)


def _settings() -> Settings:
    return Settings.model_validate({"task": {"labels": LABELS}, "clip": SPEC.model_dump(), "train": {"target_precision": 0.8}})


def test_evaluate_a_raw_folders_dataset_directly(tmp_path):
    from bigsister_ray.models.checkpoint import load_checkpoint, predict_proba
    from bigsister_ray.train.evaluate import evaluate
    from bigsister_ray.video.writer import write_mp4

    root = tmp_path / "raw"
    rng = np.random.default_rng(0)
    big = SPEC.model_copy(update={"size": 64, "frames": 16})
    clips = {}
    for k, label in enumerate(["fight", "noFight"]):
        for j in range(3):
            frames = synthetic_clip(k, big, rng)
            path = write_mp4(root / label / f"{label}{j}.mp4", list(frames), fps=8.0)
            clips[path.name] = k
    (root / "fight" / "broken.mp4").write_bytes(b"")  # one bad file: reported, the rest go on
    ckpt = _checkpoint(tmp_path / "ckpt" / "model.pt")
    res = evaluate(ckpt, root, tmp_path / "eval", _settings(), source="folders")
    m = json.loads(res.metrics_path.read_text())
    assert res.n == m["n"] == 6
    assert m["failed_inputs"] == 1 and "broken.mp4" in (tmp_path / "eval" / "failed_inputs.jsonl").read_text()
    assert m["labels"] == LABELS and m["source"] == "folders"
    assert [sum(r) for r in m["confusion"]] == [3, 3]
    # the same numbers as decoding the videos here and predicting with the checkpoint's own function
    from bigsister_ray.clip import preprocess_frames, sample_indices
    from bigsister_ray.video.files import decode_frames, probe

    loaded = load_checkpoint(ckpt)
    cm = np.zeros((2, 2), dtype=int)
    for name, k in clips.items():
        path = root / ("fight" if k == 0 else "noFight") / name
        info = probe(path)
        frames = preprocess_frames(decode_frames(path, sample_indices(info.num_frames, info.fps, SPEC)), SPEC)
        cm[k, int(predict_proba(loaded.model, frames, loaded.meta).argmax())] += 1
    assert m["confusion"] == cm.tolist()


def test_evaluate_a_prepared_split_calibrates_on_val_and_stores_it(tmp_path):
    from bigsister_ray.models.checkpoint import read_checkpoint_meta
    from bigsister_ray.train.evaluate import evaluate

    data = tmp_path / "prepared"
    make_prepared(data, labels=LABELS, counts={"train": 6, "val": 6, "test": 4}, spec=SPEC)
    ckpt = _checkpoint(tmp_path / "model.pt")
    res = evaluate(ckpt, data, tmp_path / "eval", _settings(), split="test")
    m = json.loads(res.metrics_path.read_text())
    assert m["n"] == 8 and np.asarray(m["confusion"]).sum() == 8
    meta = read_checkpoint_meta(ckpt)
    assert meta.temperature == pytest.approx(m["calibration"]["temperature"]) and meta.temperature != 1.0
    assert set(meta.thresholds) == {"fight"}  # the one abnormal class; normal gets none
    assert m["thresholds"]["fight"]["threshold"] == meta.thresholds["fight"]
    assert m["calibration"]["val_clips"] == 12


def test_evaluate_refuses_data_with_another_clip_spec(tmp_path):
    from bigsister_ray.errors import DataError
    from bigsister_ray.train.evaluate import evaluate

    data = tmp_path / "prepared"
    make_prepared(data, labels=LABELS, counts={"train": 2, "test": 2}, spec=SPEC)
    ckpt = _checkpoint(tmp_path / "model.pt", spec=SPEC.model_copy(update={"frames": 16}))
    with pytest.raises(DataError, match=r"clips are 8x32x32 but the checkpoint was trained on 16x32x32"):
        evaluate(ckpt, data, tmp_path / "eval", _settings(), split="test")


def test_evaluate_names_a_missing_split(tmp_path):
    from bigsister_ray.errors import DataError
    from bigsister_ray.train.evaluate import evaluate

    data = tmp_path / "prepared"
    make_prepared(data, labels=LABELS, counts={"train": 2, "val": 2}, spec=SPEC)
    with pytest.raises(DataError, match=r"no 'test' shards \(the manifest has splits \['train', 'val'\]\)"):
        evaluate(_checkpoint(tmp_path / "model.pt"), data, tmp_path / "eval", _settings(), split="test")
