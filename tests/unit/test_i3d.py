"""I3D: the public checkpoint layout loads strictly (with and without num_batches_tracked), the forward pass
runs for T in {8, 16, 64} x sizes {32, 112, 224}, and foreign weights load with an audit (path and URL)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

from bigsister_ray.errors import CheckpointError
from bigsister_ray.models.i3d import I3D_BN_EPS, InceptionI3d, i3d
from bigsister_ray.models.weights import load_weights
from tests.conftest import I3D_LAYOUT, need_shared


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _read_layout() -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    layout = {}
    for line in need_shared(I3D_LAYOUT).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, shape, dtype = line.split("\t")
        layout[name] = (tuple(ast.literal_eval(shape)), getattr(torch, dtype.removeprefix("torch.")))
    return layout


def _random_state_dict(layout, *, with_counters: bool) -> dict[str, torch.Tensor]:
    """Random values of the listed shapes/dtypes, kept in ranges where BatchNorm stays finite."""
    g = torch.Generator().manual_seed(1)
    sd = {}
    for name, (shape, dtype) in layout.items():
        if name.endswith("num_batches_tracked"):
            if with_counters:
                sd[name] = torch.tensor(1000, dtype=dtype)
        elif name.endswith("running_var"):
            sd[name] = torch.rand(shape, generator=g, dtype=dtype) + 0.5
        elif name.endswith("bn.weight"):
            sd[name] = torch.rand(shape, generator=g, dtype=dtype) + 0.5
        elif name.endswith("conv3d.weight"):
            fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
            sd[name] = torch.randn(shape, generator=g, dtype=dtype) * (2.0 / fan_in) ** 0.5
        else:
            sd[name] = torch.randn(shape, generator=g, dtype=dtype) * 0.1
    return sd


def test_state_dict_names_shapes_dtypes_match_the_public_layout():
    layout = _read_layout()
    sd = InceptionI3d(num_classes=400).state_dict()
    assert list(sd) == list(layout), "names (and their order) differ from the public checkpoint layout"
    wrong = {k: (tuple(v.shape), v.dtype, layout[k]) for k, v in sd.items() if (tuple(v.shape), v.dtype) != layout[k]}
    assert not wrong


def test_layout_invariants_without_shared_files():
    model = InceptionI3d(num_classes=400)
    sd = model.state_dict()
    assert len(sd) == 344
    assert sum(k.endswith("num_batches_tracked") for k in sd) == 57
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    assert len(bns) == 57 and all(bn.eps == I3D_BN_EPS for bn in bns)
    assert model.logits.conv3d.bias is not None and model.logits.conv3d.kernel_size == (1, 1, 1)
    assert all(m.bias is None for n, m in model.named_modules() if isinstance(m, nn.Conv3d) and not n.startswith("logits"))


def test_layout_state_dict_loads_strictly_and_runs_at_every_size():
    layout = _read_layout()
    full = _random_state_dict(layout, with_counters=True)
    model = InceptionI3d(num_classes=400)
    model.load_state_dict(full, strict=True)
    model.eval()
    for name, value in model.state_dict().items():
        assert torch.equal(value, full[name]), name
    with torch.no_grad():
        for t in (8, 16, 64):
            for size in (32, 112, 224):
                y = model(torch.rand(1, 3, t, size, size) * 2 - 1)
                assert y.shape == (1, 400), (t, size)
                assert torch.isfinite(y).all(), (t, size)


def test_old_layout_without_counters_loads_via_the_audited_loader_only():
    layout = _read_layout()
    old = _random_state_dict(layout, with_counters=False)
    assert len(old) == 344 - 57
    model = InceptionI3d(num_classes=400)
    report = load_weights(model, old, head="logits.", strict=True)  # tolerates exactly the absent counters
    assert report.ok and len(report.filled_counters) == 57 and len(report.loaded) == 344 - 57
    assert not report.head_reinitialised
    sd = model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in old.items())
    assert all(int(sd[k]) == 0 for k in report.filled_counters)
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 8, 32, 32)).shape == (1, 400)


def test_only_the_counters_are_tolerated(tmp_path):
    sd = InceptionI3d(num_classes=400).state_dict()
    del sd["Mixed_4b.b1b.bn.running_mean"]  # a real tensor missing is an error, not a silent re-init
    with pytest.raises(CheckpointError, match=r"missing from the file \(1\): Mixed_4b.b1b.bn.running_mean"):
        load_weights(InceptionI3d(num_classes=400), sd, head="logits.", strict=True)


def test_same_padding_gives_ceil_sizes_and_matches_the_fixed_pool_at_224():
    model = InceptionI3d(num_classes=7).eval()
    with torch.no_grad():
        assert model.features(torch.zeros(1, 3, 8, 33, 47)).shape == (1, 1024, 1, 2, 2)
        x = torch.rand(1, 3, 16, 224, 224) * 2 - 1
        feats = model.features(x)
        assert feats.shape == (1, 1024, 2, 7, 7)
        # The original head: AvgPool3d((2, 7, 7), stride 1) then the 1x1x1 logits, averaged over time.
        original = model.logits(nn.AvgPool3d((2, 7, 7), stride=1)(feats)).flatten(2)
        ours = model.logits(model.dropout(nn.functional.avg_pool3d(
            nn.functional.adaptive_avg_pool3d(feats, (2, 1, 1)), (2, 1, 1), stride=1))).flatten(2)
        torch.testing.assert_close(ours, original, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model(x), original.mean(2), rtol=1e-4, atol=1e-5)


def test_rejects_input_that_is_not_b3thw():
    with pytest.raises(ValueError, match=r"B x 3 x T x H x W, got \(1, 8, 3, 32, 32\)"):
        InceptionI3d(num_classes=2)(torch.zeros(1, 8, 3, 32, 32))


def _kinetics_file(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    sd = InceptionI3d(num_classes=400).state_dict()
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}  # an old-style file:
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(sd, path, _use_new_zipfile_serialization=False)  # no counters, pre-1.6 (non-zip) serialization
    return path, sd


def test_builder_loads_a_file_and_replaces_the_head_keeping_the_rest(tmp_path):
    path, sd = _kinetics_file(tmp_path)
    model = i3d(num_classes=5, weights=str(path), dropout=0.3)
    assert model.logits.conv3d.weight.shape == (5, 1024, 1, 1, 1)
    assert model.dropout.p == 0.3
    own = model.state_dict()
    for k, v in sd.items():
        if not k.startswith("logits."):
            assert torch.equal(own[k], v), k


def test_audit_reports_every_missing_unexpected_and_misshaped_key(tmp_path):
    sd = InceptionI3d(num_classes=400).state_dict()
    sd["Mixed_5c.b0.conv3d.weight"] = torch.zeros(384, 832, 3, 1, 1)  # wrong shape
    del sd["Conv3d_2b_1x1.conv3d.weight"]  # missing
    sd["aux_logits.weight"] = torch.zeros(3)  # unexpected
    with pytest.raises(CheckpointError) as err:
        load_weights(InceptionI3d(num_classes=400), sd, head="logits.", strict=True)
    text = str(err.value)
    for needle in ("Conv3d_2b_1x1.conv3d.weight", "aux_logits.weight", "Mixed_5c.b0.conv3d.weight file(384, 832, 3, 1, 1)"):
        assert needle in text
    model = InceptionI3d(num_classes=400)
    before = model.Conv3d_2b_1x1.conv3d.weight.clone()
    report = load_weights(model, sd, head="logits.", strict=False)  # loads what fits
    assert report.missing == ["Conv3d_2b_1x1.conv3d.weight"]
    assert report.unexpected == ["aux_logits.weight"]
    assert [m[0] for m in report.mismatched] == ["Mixed_5c.b0.conv3d.weight"]
    assert torch.equal(model.Conv3d_1a_7x7.conv3d.weight, sd["Conv3d_1a_7x7.conv3d.weight"])
    assert torch.equal(model.Conv3d_2b_1x1.conv3d.weight, before)


def test_2d_kernels_are_inflated_and_reported():
    sd = InceptionI3d(num_classes=400).state_dict()
    w3 = sd["Conv3d_1a_7x7.conv3d.weight"]
    w2 = torch.randn(w3.shape[0], w3.shape[1], 7, 7)
    sd["Conv3d_1a_7x7.conv3d.weight"] = w2  # an ImageNet 2D kernel under the 3D name
    model = InceptionI3d(num_classes=400)
    report = load_weights(model, sd, head="logits.", strict=True)
    assert report.inflated == ["Conv3d_1a_7x7.conv3d.weight"] and "inflated" in report.summary()
    torch.testing.assert_close(model.Conv3d_1a_7x7.conv3d.weight, w2.unsqueeze(2).repeat(1, 1, 7, 1, 1) / 7)
    with pytest.raises(CheckpointError, match=r"Conv3d_1a_7x7.conv3d.weight file\(64, 3, 7, 7\)"):
        load_weights(InceptionI3d(num_classes=400), sd, head="logits.", strict=True, inflate=False)
