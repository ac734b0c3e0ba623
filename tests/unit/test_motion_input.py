"""Motion input: ``ClipSpec.input`` (rgb, diff, rgb+diff) made by the one ``to_model_input``, the same tensor in
training, evaluation and serving, and recorded in checkpoints (older checkpoints read as rgb)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from bigsister_ray.clip import IMAGENET_NORM, KINETICS_NORM, ClipSpec, input_channels, to_model_input
from bigsister_ray.models import CheckpointMeta, build_model, load_checkpoint, predict_proba, read_checkpoint_meta, save_checkpoint

pytestmark = pytest.mark.usefixtures("torch_one_thread")

LABELS = ["fight", "normal"]


def _clips(b: int = 2, t: int = 4, s: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(b, t, s, s, 3), dtype=np.uint8)


def test_default_is_rgb_and_unknown_modes_are_refused():
    assert ClipSpec().input == "rgb"
    assert [input_channels(m) for m in ("rgb", "diff", "rgb+diff")] == [3, 3, 6]
    with pytest.raises(ValidationError, match="input"):
        ClipSpec(input="flow")
    with pytest.raises(ValueError, match="unknown clip input 'flow'"):
        to_model_input(_clips(), KINETICS_NORM, "flow")


def test_diff_is_the_difference_of_consecutive_normalised_frames():
    clips = _clips(t=5)
    rgb = to_model_input(clips, IMAGENET_NORM)
    mean = torch.tensor(IMAGENET_NORM.mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_NORM.std).view(1, 3, 1, 1, 1)
    expected = (torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 255 - mean) / std
    torch.testing.assert_close(rgb, expected)  # rgb unchanged: the normalised frames
    diff = to_model_input(clips, IMAGENET_NORM, "diff")
    assert diff.shape == rgb.shape and diff.dtype == torch.float32 and diff.is_contiguous()
    assert torch.equal(diff[:, :, 0], torch.zeros_like(diff[:, :, 0]))  # the first frame has no predecessor
    torch.testing.assert_close(diff[:, :, 1:], rgb[:, :, 1:] - rgb[:, :, :-1])
    both = to_model_input(clips, IMAGENET_NORM, "rgb+diff")
    assert tuple(both.shape) == (2, 6, 5, 32, 32)
    assert torch.equal(both[:, :3], rgb) and torch.equal(both[:, 3:], diff)
    # a still scene is all zeros as diff, whatever the camera's colours
    still = np.repeat(_clips(b=1, t=1), 4, axis=1)
    assert torch.count_nonzero(to_model_input(still, KINETICS_NORM, "diff")) == 0
    # one clip T x H x W x 3 works too
    assert tuple(to_model_input(clips[0], IMAGENET_NORM, "rgb+diff").shape) == (1, 6, 5, 32, 32)


class _Recorder(nn.Module):
    """Logits of zeros; keeps every input it was given."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.classes = classes
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return torch.zeros(x.shape[0], self.classes) * self.scale


@pytest.mark.parametrize("mode", ["rgb", "diff", "rgb+diff"])
def test_training_evaluation_and_serving_give_the_model_the_same_tensor(mode):
    from bigsister_ray.train.evaluate import _forward
    from bigsister_ray.train.loop import run_epoch

    spec = ClipSpec(frames=4, fps=4, size=32, stride=4, input=mode)
    clips = _clips(b=3, t=4, s=32, seed=7)
    meta = CheckpointMeta(model_name="mobilenet_tsm", labels=LABELS, clip=spec, norm=IMAGENET_NORM)

    train_model = _Recorder(2)  # the training loop: shard bytes -> decode -> to_model_input
    batch = {"frames": np.array([c.tobytes() for c in clips], dtype=object), "label_idx": np.array([0, 1, 0])}
    run_epoch(train_model, [batch], spec, IMAGENET_NORM, 2, augment=False)
    serve_model = _Recorder(2)  # the Classifier and `bigsister detect`
    predict_proba(serve_model, clips, meta)
    eval_model = _Recorder(2)  # `bigsister evaluate`
    _forward(eval_model, clips, meta, torch.device("cpu"), bf16=False)

    trained, served, evaluated = train_model.seen[0], serve_model.seen[0], eval_model.seen[0]
    assert trained.shape[1] == input_channels(mode)
    assert torch.equal(trained, served) and torch.equal(trained, evaluated)


def test_checkpoint_records_the_input_and_serves_with_it(tmp_path):
    spec = ClipSpec(frames=4, fps=4, size=32, stride=4, input="rgb+diff")
    model = build_model("mobilenet_tsm", 2, in_channels=6).eval()
    meta = CheckpointMeta(model_name="mobilenet_tsm", labels=LABELS, clip=spec, norm=IMAGENET_NORM)
    path = save_checkpoint(tmp_path / "run", model, meta)
    assert read_checkpoint_meta(path).clip == spec and read_checkpoint_meta(path).clip.input == "rgb+diff"
    loaded = load_checkpoint(path)
    assert loaded.model.features[0][0].weight.shape[1] == 6
    clips = _clips(b=2, t=4, s=32)
    probs = predict_proba(loaded.model, clips, loaded.meta)
    with torch.no_grad():
        direct = torch.softmax(model(to_model_input(clips, IMAGENET_NORM, "rgb+diff")), 1).numpy()
    np.testing.assert_allclose(probs, direct, rtol=1e-5, atol=1e-6)


def test_a_checkpoint_written_before_the_input_field_reads_as_rgb(tmp_path):
    spec = ClipSpec(frames=4, fps=4, size=32, stride=4)
    model = build_model("tiny3d", 2)
    path = save_checkpoint(tmp_path, model, CheckpointMeta(model_name="tiny3d", labels=LABELS, clip=spec, norm=KINETICS_NORM))
    payload = torch.load(path, weights_only=True)
    del payload["meta"]["clip"]["input"]  # what older versions wrote
    torch.save(payload, path)
    meta = read_checkpoint_meta(path)
    assert meta.clip.input == "rgb" and meta.clip == spec
    assert load_checkpoint(path).meta.clip.input == "rgb"


def test_tiny3d_takes_rgb_plus_diff():
    model = build_model("tiny3d", 2, in_channels=6).eval()
    with torch.no_grad():
        assert tuple(model(to_model_input(_clips(t=4), KINETICS_NORM, "rgb+diff")).shape) == (2, 2)
