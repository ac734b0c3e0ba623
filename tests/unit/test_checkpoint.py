"""Self-describing checkpoints: round trip, weights_only loading, predict_proba, and clear errors for a missing
file, a foreign file, a file with code in it, and a meta/weights mismatch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bigsister_ray.clip import CLIP_PRESETS, KINETICS_NORM, ClipSpec, to_model_input
from bigsister_ray.errors import CheckpointError
from bigsister_ray.models import (
    CheckpointMeta,
    build_model,
    load_checkpoint,
    predict_proba,
    read_checkpoint_meta,
    save_checkpoint,
    update_checkpoint_meta,
)
from bigsister_ray.models.checkpoint import CHECKPOINT_FORMAT, FORMAT_VERSION

LABELS = ["normal", "fight", "assault"]
CLIP = ClipSpec(frames=8, fps=8.0, size=32, stride=4)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _meta(**kw) -> CheckpointMeta:
    base = dict(model_name="tiny3d", labels=LABELS, clip=CLIP, norm=KINETICS_NORM, data_fingerprint="sha256:abc",
                metrics={"val": {"macro_f1": np.float64(0.75), "confusion": np.eye(3, dtype=np.int64)}},
                thresholds={"fight": 0.8, "assault": 0.6}, temperature=1.5, epoch=4)
    return CheckpointMeta(**{**base, **kw})


def _trained_ish_model():
    model = build_model("tiny3d", len(LABELS))
    with torch.no_grad():  # non-default values everywhere, so a load that drops anything shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn_like(b) * 0.1)
    return model


def test_round_trip_restores_weights_meta_and_eval_mode(tmp_path):
    model = _trained_ish_model()
    meta = _meta()
    path = save_checkpoint(tmp_path / "run" / "epoch_4", model, meta)  # a directory gets model.pt
    assert path == tmp_path / "run" / "epoch_4" / "model.pt"
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp files left
    loaded = load_checkpoint(path.parent)
    assert loaded.meta == meta.model_copy(update={"metrics": {"val": {"macro_f1": 0.75, "confusion": np.eye(3).tolist()}}})
    assert not loaded.model.training
    theirs = model.state_dict()
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, theirs[k]), k
    assert read_checkpoint_meta(path) == loaded.meta


def test_file_is_plain_data_loadable_with_weights_only(tmp_path):
    path = save_checkpoint(tmp_path / "model.pt", _trained_ish_model(), _meta())
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT and raw["format_version"] == FORMAT_VERSION
    assert raw["meta"]["clip"] == CLIP.model_dump(mode="json")
    assert raw["meta"]["norm"]["mean"] == list(KINETICS_NORM.mean)
    assert raw["meta"]["thresholds"] == {"fight": 0.8, "assault": 0.6}
    assert all(isinstance(v, torch.Tensor) for v in raw["state_dict"].values())


def test_predict_proba_is_softmax_of_logits_over_temperature(tmp_path):
    model = _trained_ish_model()
    path = save_checkpoint(tmp_path, model, _meta(temperature=2.5))
    loaded = load_checkpoint(path)
    clips = np.random.default_rng(0).integers(0, 256, (3, CLIP.frames, CLIP.size, CLIP.size, 3), dtype=np.uint8)
    probs = predict_proba(loaded.model, clips, loaded.meta)
    assert probs.shape == (3, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    with torch.no_grad():
        logits = model.eval()(to_model_input(clips, KINETICS_NORM)).numpy().astype(np.float64)
    z = logits / 2.5
    expected = np.exp(z - z.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-6)
    one = predict_proba(loaded.model, torch.from_numpy(clips[0]), loaded.meta)  # a single T x S x S x 3 tensor
    np.testing.assert_allclose(one[0], probs[0], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match=r"expected uint8 clips B x 8 x 32 x 32 x 3 .*got \(3, 8, 64, 64, 3\)"):
        predict_proba(loaded.model, np.zeros((3, 8, 64, 64, 3), np.uint8), loaded.meta)


def test_missing_empty_and_directory_without_model(tmp_path):
    with pytest.raises(CheckpointError, match=r"absent\.pt does not exist"):
        load_checkpoint(tmp_path / "absent.pt")
    with pytest.raises(CheckpointError, match="has no model.pt"):
        load_checkpoint(tmp_path)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty \(0 bytes\)"):
        read_checkpoint_meta(tmp_path / "empty.pt")


def test_foreign_files_are_refused_by_name(tmp_path):
    plain = tmp_path / "rgb_imagenet.pt"
    torch.save(build_model("tiny3d", 3).state_dict(), plain)  # someone else's state dict
    with pytest.raises(CheckpointError, match=r"rgb_imagenet.pt is not a bigsister-ray checkpoint.*model.weights"):
        load_checkpoint(plain)
    junk = tmp_path / "notes.pt"
    junk.write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes.pt is not a readable bigsister-ray checkpoint"):
        load_checkpoint(junk)


class _Boom:
    ran = False

    def __reduce__(self):
        return (_set_ran, ())


def _set_ran():
    _Boom.ran = True
    return "pwned"


def test_a_file_with_code_in_it_never_runs(tmp_path):
    evil = tmp_path / "model.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "format_version": 1, "meta": _Boom(), "state_dict": {}}, evil)
    with pytest.raises(CheckpointError, match="weights_only=True failed"):
        load_checkpoint(evil)
    assert not _Boom.ran


def test_meta_weights_mismatch_is_refused_at_save_and_at_load(tmp_path):
    model = build_model("tiny3d", 3)
    with pytest.raises(CheckpointError, match=r"do not match the meta .*4 labels.*head.fc.weight weights\(3, 256\) vs model\(4, 256\)"):
        save_checkpoint(tmp_path, model, _meta(labels=LABELS + ["trespass"]))
    assert not (tmp_path / "model.pt").exists()
    save_checkpoint(tmp_path, model, _meta(labels=LABELS + ["trespass"]), validate=False)  # e.g. an old bug
    with pytest.raises(CheckpointError, match=r"checkpoint .*model.pt: the weights do not match the meta"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, model, _meta(model_name="r3d_18"), validate=False)
    with pytest.raises(CheckpointError, match=r"missing \(\d+\): layer1.*unexpected \(\d+\): stages.*shape mismatches"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, model, _meta(model_name="resnet9000"), validate=False)
    with pytest.raises(CheckpointError, match=r"unknown model 'resnet9000'"):
        load_checkpoint(tmp_path)


def test_newer_format_and_invalid_meta_are_refused(tmp_path):
    path = save_checkpoint(tmp_path, build_model("tiny3d", 3), _meta())
    raw = torch.load(path, weights_only=True)
    torch.save({**raw, "format_version": FORMAT_VERSION + 1}, path)
    with pytest.raises(CheckpointError, match=r"format_version 2; this bigsister-ray reads up to 1"):
        read_checkpoint_meta(path)
    torch.save({**raw, "meta": {**raw["meta"], "temperature": -1.0}}, path)
    with pytest.raises(CheckpointError, match=r"invalid meta: temperature"):
        read_checkpoint_meta(path)


def test_update_meta_keeps_weights_and_validates(tmp_path):
    model = _trained_ish_model()
    path = save_checkpoint(tmp_path, model, _meta())
    new = update_checkpoint_meta(path, thresholds={"fight": 0.55}, metrics={"test": {"accuracy": 0.9}})
    assert new.thresholds == {"fight": 0.55} and read_checkpoint_meta(path) == new
    assert new.labels == LABELS and new.temperature == 1.5
    theirs = model.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in load_checkpoint(path).model.state_dict().items())
    with pytest.raises(CheckpointError, match=r"thresholds for classes not in labels: \['robbery'\]"):
        update_checkpoint_meta(path, thresholds={"robbery": 0.5})
    with pytest.raises(CheckpointError, match=r"unknown meta fields \['treshold'\]"):
        update_checkpoint_meta(path, treshold=0.5)
    assert read_checkpoint_meta(path) == new  # failed updates changed nothing


def test_meta_validation():
    with pytest.raises(ValueError, match="duplicates"):
        _meta(labels=["a", "a", "b"], thresholds={})
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        _meta(thresholds={"fight": 1.5})
    with pytest.raises(ValueError, match="extra"):
        CheckpointMeta(model_name="tiny3d", labels=LABELS, clip=CLIP, norm=KINETICS_NORM, colour="red")
    assert _meta().num_classes == 3 and math.isclose(_meta().temperature, 1.5)


def test_non_json_meta_is_refused_with_the_reason(tmp_path):
    with pytest.raises(CheckpointError, match="JSON-able, got object"):
        save_checkpoint(tmp_path, build_model("tiny3d", 3), _meta(extra={"thing": object()}))


def test_i3d_checkpoint_with_the_laptop_clip(tmp_path):
    """A real registry model other than tiny3d round-trips (i3d at the laptop ClipSpec, [-1, 1] norm)."""
    from bigsister_ray.clip import I3D_NORM

    model = build_model("i3d", 2)
    meta = CheckpointMeta(model_name="i3d", labels=["normal", "fight"], clip=CLIP_PRESETS["laptop"], norm=I3D_NORM)
    loaded = load_checkpoint(save_checkpoint(tmp_path, model, meta))
    assert loaded.meta.norm == I3D_NORM
    clips = np.zeros((1, 16, 112, 112, 3), np.uint8)
    assert predict_proba(loaded.model, clips, loaded.meta).shape == (1, 2)


def test_our_checkpoint_can_start_a_new_run_with_other_labels(tmp_path):
    """model.weights may point at one of our checkpoints: the body is kept, the head resized for the new labels."""
    model = _trained_ish_model()
    path = save_checkpoint(tmp_path, model, _meta())
    finetune = build_model("tiny3d", 5, weights=str(path))
    assert finetune.head.fc.weight.shape == (5, 256)
    theirs = model.state_dict()
    for k, v in finetune.state_dict().items():
        if not k.startswith("head.fc."):
            assert torch.equal(v, theirs[k]), k


def test_predict_proba_follows_the_model_dtype(tmp_path):
    """A model cast to bf16 for serving gets bf16 input; probabilities still come back float32, summing to 1."""
    loaded = load_checkpoint(save_checkpoint(tmp_path, _trained_ish_model(), _meta()))
    clips = np.random.default_rng(1).integers(0, 256, (2, CLIP.frames, CLIP.size, CLIP.size, 3), dtype=np.uint8)
    full = predict_proba(loaded.model, clips, loaded.meta)
    half = predict_proba(loaded.model.to(torch.bfloat16), clips, loaded.meta)
    assert half.dtype == np.float32
    np.testing.assert_allclose(half.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(half, full, atol=0.05)
