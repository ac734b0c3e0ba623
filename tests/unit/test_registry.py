"""The model registry: every entry builds, records its input contract, runs a forward pass where feasible,
swaps its head when loading foreign weights; FLOP counting; Tiny3D learns a motion task."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bigsister_ray.models as models
from bigsister_ray.clip import CLIP_PRESETS, I3D_NORM, IMAGENET_NORM, KINETICS_NORM, ClipSpec
from bigsister_ray.errors import CheckpointError, ConfigError
from bigsister_ray.models import build_model, check_clip, get_model_spec, list_models, model_flops

ALL = ["i3d", "mc3_18", "mobilenet_tsm", "mobilenet_tsm_top", "mvit_v2_s", "r2plus1d_18", "r3d_18", "s3d", "swin3d_t", "tiny3d"]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_public_surface_is_pinned():
    assert sorted(models.__all__) == sorted([
        "CHECKPOINT_FILENAME", "CheckpointMeta", "InceptionI3d", "LoadReport", "LoadedCheckpoint", "MobileNetTSM",
        "ModelSpec", "Tiny3D", "build_model", "check_clip", "get_model_spec", "i3d", "list_models", "load_checkpoint",
        "load_weights", "mfu", "mobilenet_tsm", "model_flops", "predict_proba", "read_checkpoint_meta", "read_state_dict",
        "register_model", "resolve_checkpoint_path", "save_checkpoint", "tiny3d", "update_checkpoint_meta",
    ])
    for name in models.__all__:
        assert getattr(models, name) is not None


def test_list_and_specs():
    assert list_models() == ALL
    assert get_model_spec("i3d").norm == I3D_NORM
    assert get_model_spec("mobilenet_tsm").norm == get_model_spec("mobilenet_tsm_top").norm == IMAGENET_NORM
    for name in set(ALL) - {"i3d", "mobilenet_tsm", "mobilenet_tsm_top"}:
        assert get_model_spec(name).norm == KINETICS_NORM, name
    assert get_model_spec("i3d").min_frames == 8
    assert (get_model_spec("mvit_v2_s").fixed_frames, get_model_spec("mvit_v2_s").fixed_size) == (16, 224)


def test_unknown_model_names_the_choices():
    with pytest.raises(ConfigError, match=r"unknown model 'resnet50'; expected one of i3d, mc3_18"):
        build_model("resnet50", 3)


@pytest.mark.parametrize("name", ALL)
def test_head_prefix_exists_and_output_shape_on_meta_device(name):
    """Every entry builds with 3 classes; its recorded head prefix names the classifier; shapes flow through."""
    spec = get_model_spec(name)
    with torch.device("meta"):
        model = build_model(name, 3, dropout=0.2)
    head = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith(spec.head)}
    assert any(3 in shape[:1] for shape in head.values()), head
    frames, size = spec.fixed_frames or max(spec.min_frames, 8), spec.fixed_size or 32
    with torch.no_grad():
        y = model.eval()(torch.empty(2, 3, frames, size, size, device="meta"))
    assert tuple(y.shape) == (2, 3)
    assert any(isinstance(m, nn.Dropout) and m.p == 0.2 for m in model.modules()), "dropout not applied"


@pytest.mark.parametrize(("name", "frames", "size"), [
    ("tiny3d", 4, 32), ("r3d_18", 4, 32), ("mc3_18", 4, 32), ("r2plus1d_18", 4, 32), ("s3d", 8, 32),
    ("swin3d_t", 2, 32), ("i3d", 8, 32),
])
def test_real_forward_at_the_minimum_size(name, frames, size):
    spec = get_model_spec(name)
    assert frames >= spec.min_frames and size >= spec.min_size
    model = build_model(name, 4).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, frames, size, size))
    assert y.shape == (1, 4) and torch.isfinite(y).all()


def test_check_clip_says_what_fits():
    check_clip("tiny3d", CLIP_PRESETS["laptop"])
    check_clip("mvit_v2_s", ClipSpec(frames=16, size=224, stride=8))
    with pytest.raises(ConfigError, match=r"'mvit_v2_s'.*clip.size must be exactly 224 \(got 112\)"):
        check_clip("mvit_v2_s", CLIP_PRESETS["laptop"])
    with pytest.raises(ConfigError, match=r"clip.frames must be exactly 16 \(got 64\)"):
        check_clip("mvit_v2_s", CLIP_PRESETS["i3d"])
    with pytest.raises(ConfigError, match=r"'i3d'.*clip.frames must be >= 8 \(got 4\)"):
        check_clip("i3d", ClipSpec(frames=4, stride=4))


def test_foreign_weights_replace_the_head_and_keep_the_body(tmp_path):
    kinetics = build_model("mc3_18", 400)  # a "Kinetics" file: 400 outputs
    path = tmp_path / "mc3_18_kinetics.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in kinetics.state_dict().items()}}, path)  # DDP-wrapped
    ours = build_model("mc3_18", 3, weights=str(path))
    assert ours.fc.weight.shape == (3, 512)
    theirs = kinetics.state_dict()
    for k, v in ours.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(v, theirs[k]), k
    with pytest.raises(CheckpointError, match="does not fit|do not fit"):
        build_model("r3d_18", 3, weights=str(path))  # another architecture: every key reported, refused


def test_model_flops_matches_a_hand_count():
    conv = nn.Conv3d(3, 4, kernel_size=1, bias=False)
    clip = ClipSpec(frames=4, size=32, stride=4)
    assert model_flops(conv, clip) == 2 * 3 * 4 * (4 * 32 * 32)  # multiply-adds x 2 per output element
    assert model_flops(conv, clip, batch_size=3) == 3 * model_flops(conv, clip)
    assert conv.weight.device.type == "cpu"  # the original is untouched
    i3d_64 = model_flops("i3d", CLIP_PRESETS["i3d"], num_classes=400)
    assert 200e9 < i3d_64 < 240e9  # ~108 GMACs at 64 x 224 x 224 (published figure)
    assert model_flops("tiny3d", CLIP_PRESETS["laptop"]) < model_flops("i3d", CLIP_PRESETS["laptop"]) / 10
    assert model_flops("tiny3d", CLIP_PRESETS["laptop"], backward=True) > 2 * model_flops("tiny3d", CLIP_PRESETS["laptop"])


def _motion_clips(n: int, frames: int = 8, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright square moving right (class 0), left (class 1) or not at all (class 2), on noise.

    Every frame of every class has the same content statistics: only motion separates the classes.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, frames, size, size, generator=g) * 0.3
    y = torch.arange(n) % 3
    for i in range(n):
        start = int(torch.randint(4, size - 12, (1,), generator=g))
        row = int(torch.randint(0, size - 8, (1,), generator=g))
        step = (2, -2, 0)[int(y[i])]
        for t in range(frames):
            col = min(max(start + step * (t - frames // 2), 0), size - 8)
            x[i, :, t, row:row + 8, col:col + 8] = 1.0
    return (x - 0.45) / 0.225, y


def test_tiny3d_learns_motion():
    """Only motion separates the classes, so this passes only if the network models time. Fresh clips every
    step (no memorising noise); 80 steps of 12 clips at 8 x 32 x 32 reach 100% on held-out clips (3 seeds)."""
    torch.manual_seed(0)
    model = build_model("tiny3d", 3)
    assert 1e5 < sum(p.numel() for p in model.parameters()) < 1e6
    steps = 80
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=steps, pct_start=0.2)
    model.train()
    for step in range(steps):
        x, y = _motion_clips(12, seed=step + 1)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    xv, yv = _motion_clips(30, seed=10_000)
    with torch.no_grad():
        acc = (model(xv).argmax(1) == yv).float().mean().item()
    assert acc >= 0.9, f"held-out accuracy {acc:.2f} (chance is 0.33)"


def test_register_model_adds_and_refuses_duplicates():
    from bigsister_ray.models import registry

    spec = get_model_spec("tiny3d").model_copy(update={"name": "tiny3d_narrow"})
    builder = lambda n, p: models.Tiny3D(n, p, widths=(8, 16, 32, 48))  # noqa: E731
    registry.register_model(spec, builder)
    try:
        assert "tiny3d_narrow" in list_models()
        assert build_model("tiny3d_narrow", 2).head.fc.in_features == 256
        with pytest.raises(ValueError, match="already registered"):
            registry.register_model(spec, builder)
    finally:
        registry._REGISTRY.pop("tiny3d_narrow", None)
    assert list_models() == ALL
