"""The pieces of the training loop, without Ray: augmentation, class weights, one epoch of the shared step."""

from __future__ import annotations

import numpy as np
import pytest

from bigsister_ray.clip import ClipSpec
from bigsister_ray.train.loop import augment_clips, class_weights, decode_batch, format_epoch, run_epoch
from tests._prepared import synthetic_clip

SPEC = ClipSpec(frames=8, fps=8.0, size=32, stride=4)


def _batches(n: int, size: int, rng: np.random.Generator) -> list[dict]:
    """``n`` synthetic clips of alternating classes 0, 1, in batches of ``size`` as the shard iterator yields them."""
    clips = [synthetic_clip(k % 2, SPEC, rng) for k in range(n)]
    return [{"frames": [c.tobytes() for c in clips[i:i + size]], "label_idx": [k % 2 for k in range(i, i + size)]}
            for i in range(0, n, size)]


def test_augment_keeps_shape_and_dtype_and_changes_clips():
    rng = np.random.default_rng(0)
    clips = np.stack([synthetic_clip(k % 2, SPEC, rng) for k in range(6)])
    out = augment_clips(clips, np.random.default_rng(1))
    assert tuple(out.shape) == clips.shape and str(out.dtype) == "torch.uint8"
    assert not np.array_equal(out.numpy(), clips)  # something was cropped, flipped or shifted


def test_augment_flip_only_is_a_mirror_and_jitter_repeats_edge_frames():
    clip = np.arange(8 * 4 * 4 * 3, dtype=np.uint8).reshape(1, 8, 4, 4, 3)
    seen_flip = seen_same = False
    for seed in range(20):
        out = augment_clips(clip, np.random.default_rng(seed), crop_scale=1.0, jitter=0).numpy()
        if np.array_equal(out, clip[:, :, :, ::-1]):
            seen_flip = True
        elif np.array_equal(out, clip):
            seen_same = True
        else:
            pytest.fail("with crop and jitter off, a clip is either unchanged or mirrored")
    assert seen_flip and seen_same
    shifted = augment_clips(clip, np.random.default_rng(3), crop_scale=1.0, jitter=2).numpy()[0]
    # every output frame is one of the input frames, in order (a shift with the edge frame repeated)
    idx = [next(i for i in range(8) if np.array_equal(f, clip[0, i]) or np.array_equal(f, clip[0, i, :, ::-1])) for f in shifted]
    assert idx == sorted(idx) and max(idx) - min(idx) >= 5


def test_augment_rejects_float_clips():
    with pytest.raises(ValueError, match="uint8"):
        augment_clips(np.zeros((1, 8, 32, 32, 3), dtype=np.float32), np.random.default_rng(0))


def test_class_weights_are_inverse_frequency():
    w = class_weights({"fight": 10, "normal": 30}, ["fight", "normal"])
    assert w == pytest.approx([40 / (2 * 10), 40 / (2 * 30)])
    assert class_weights({"fight": 5}, ["fight", "normal"]) == pytest.approx([5 / (2 * 5), 1.0])  # absent class: 1
    assert class_weights({}, ["a", "b"]) == [1.0, 1.0]


def test_decode_batch_checks_the_clip_size():
    from bigsister_ray.errors import DataError

    rng = np.random.default_rng(0)
    clip = synthetic_clip(0, SPEC, rng)
    assert np.array_equal(decode_batch([clip.tobytes()], SPEC)[0], clip)
    with pytest.raises(DataError, match="expected 24576"):
        decode_batch([b"\0" * 100], SPEC)


def test_run_epoch_trains_and_scores_with_the_shared_step():
    import torch

    from bigsister_ray.models import build_model, get_model_spec

    torch.manual_seed(0)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    batches = _batches(32, 8, rng)
    model = build_model("tiny3d", 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    norm = get_model_spec("tiny3d").norm
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = run_epoch(model, batches, SPEC, norm, 2, optimizer=opt, augment=True, rng=rng)
    assert stats.clips == 32 and stats.confusion.sum() == 32 and stats.loss_sum > 0
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    scored = run_epoch(model, batches, SPEC, norm, 2, keep_logits=True)
    assert not model.training
    assert np.concatenate(scored.logits).shape == (32, 2) and np.concatenate(scored.targets).tolist() == [k % 2 for k in range(32)]
    line = format_epoch({"epoch": 1, "train_loss": 0.5, "train_accuracy": 0.75, "train_macro_f1": 0.7,
                         "val_loss": 0.6, "val_accuracy": 0.5, "val_macro_f1": 0.4, "clips_per_s": 12.5}, 3)
    assert line == ("epoch 1/3 | train: loss 0.5000 acc 0.750 macro-F1 0.700 | val: loss 0.6000 acc 0.500 "
                    "macro-F1 0.400 | 12.5 clips/s")


def test_run_epoch_measures_the_wait_for_data():
    import torch

    from bigsister_ray.models import build_model, get_model_spec

    torch.manual_seed(0)
    torch.set_num_threads(1)
    batches = _batches(16, 4, np.random.default_rng(0))

    now = [0.0]  # the epoch's clock: only the data source moves it

    def slow(first: float, each: float):
        for i, b in enumerate(batches):
            now[0] += first if i == 0 else each
            yield b
        now[0] += each  # the end of the data is waited for too

    model = build_model("tiny3d", 2, dropout=0.0)
    stats = run_epoch(model, slow(0.3, 0.1), SPEC, get_model_spec("tiny3d").norm, 2, clock=lambda: now[0])
    assert stats.clips == 16 and len(batches) == 4
    assert stats.first_batch_s == pytest.approx(0.3)
    assert stats.data_wait_s == pytest.approx(0.3 + 4 * 0.1) == pytest.approx(stats.seconds)  # steps take no time here
    quick = run_epoch(model, iter(batches), SPEC, get_model_spec("tiny3d").norm, 2)
    assert quick.data_wait_s < 0.1 < stats.data_wait_s - 0.5
    line = format_epoch({"epoch": 2, "train_loss": 0.5, "train_accuracy": 0.75, "train_macro_f1": 0.7, "clips_per_s": 8.0,
                         "train_seconds": 20.0, "train_data_wait_s": 5.0}, 3)
    assert line.endswith("| 8.0 clips/s (25% waiting for data)")


def test_color_jitter_changes_exposure_per_clip_not_per_frame():
    clip = np.full((1, 8, 16, 16, 3), 100, dtype=np.uint8)
    clip[0, :, :8] = 60  # some structure, for contrast to act on
    out = augment_clips(clip, np.random.default_rng(7), crop_scale=1.0, jitter=0, color=0.3).numpy()[0]
    assert not np.array_equal(out, clip[0]) and not np.array_equal(out, clip[0, :, :, ::-1])
    # one exposure and white balance for the whole clip: every frame got the same transform
    assert all(np.array_equal(out[0], f) for f in out)
    off = augment_clips(clip, np.random.default_rng(7), crop_scale=1.0, jitter=0, color=0.0).numpy()[0]
    assert np.array_equal(off, clip[0]) or np.array_equal(off, clip[0, :, :, ::-1])


def test_weight_ema_averages_floats_ramps_up_and_copies_integer_buffers():
    import torch

    from bigsister_ray.train.loop import WeightEMA

    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    ema = WeightEMA(model, decay=0.9)
    assert ema.module is not model and not any(p.requires_grad for p in ema.module.parameters())
    # step 1: decay min(0.9, 1/10) = 0.1, so the average moves 90% of the way to the new weights
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[1].running_mean.fill_(2.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update(model)
    assert torch.allclose(ema.module[0].weight, torch.full((2, 3), 0.9))
    assert torch.allclose(ema.module[1].running_mean, torch.full((2,), 1.8))
    assert int(ema.module[1].num_batches_tracked) == 7
    # once ramped up (steps >= 80: (1 + n) / (10 + n) >= 0.9), each step moves 10%
    ema.steps = 100
    before = ema.module[0].weight.clone()
    ema.update(model)
    assert torch.allclose(ema.module[0].weight, 0.9 * before + 0.1 * 1.0)
    # the average is its own copy: changing the model does not change it
    with torch.no_grad():
        model[0].weight.fill_(-5.0)
    assert torch.all(ema.module[0].weight > 0)
    assert ema.state_dict() == {"steps": 101, "decay": 0.9}
    with pytest.raises(ValueError, match="ema_decay"):
        WeightEMA(model, decay=1.0)


def test_run_epoch_calls_after_step_once_per_optimizer_step():
    import torch

    from bigsister_ray.models import build_model, get_model_spec

    batches = _batches(12, 4, np.random.default_rng(0))
    model = build_model("tiny3d", 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    calls = []
    run_epoch(model, batches, SPEC, get_model_spec("tiny3d").norm, 2, optimizer=opt, after_step=lambda: calls.append(1))
    assert len(calls) == 3
    run_epoch(model, batches, SPEC, get_model_spec("tiny3d").norm, 2, after_step=lambda: calls.append(1))
    assert len(calls) == 3, "scoring takes no step"
