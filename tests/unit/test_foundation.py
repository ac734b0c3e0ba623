"""Labels, ClipSpec, the shared preprocessing and the settings tree."""

import numpy as np
import pytest

from bigsister_ray.clip import CLIP_PRESETS, ClipSpec, I3D_NORM, preprocess_frames, sample_indices, to_model_input, window_starts
from bigsister_ray.config import Settings, load_settings
from bigsister_ray.errors import ConfigError
from bigsister_ray.labels import Task, UnknownLabelError, aihub_folder_name, canonical_label


@pytest.mark.parametrize(
    "spelling,expected",
    [("01.폭행(assult)", "assault"), ("assult", "assault"), ("assault01", "assault"), ("10.데이트폭력및추행(datefight)", "datefight"),
     ("noFight", "normal"), ("Fight", "fight"), ("주취행동", "drunken"), ("theft", "burglary"), ("stop and go", None)],
)
def test_canonical_label(spelling, expected):
    if expected is None:
        with pytest.raises(UnknownLabelError, match="expected one of"):
            canonical_label(spelling)
    else:
        assert canonical_label(spelling) == expected


def test_folder_names_roundtrip():
    assert aihub_folder_name("assault") == "01.폭행(assult)"
    assert canonical_label(aihub_folder_name("drunken")) == "drunken"


def test_task_maps_and_drops():
    task = Task(labels=("fight", "normal"), mapping=(("assault", "fight"),))
    assert task.resolve("01.폭행(assult)") == "fight"
    assert task.resolve("swoon") is None
    with pytest.raises(ValueError, match="not one of the task labels"):
        Task(labels=("fight", "normal"), mapping=(("assault", "swoon"),))


def test_sample_indices_long_and_short():
    spec = ClipSpec(frames=16, fps=8, size=32, stride=8)
    idx = sample_indices(300, 30.0, spec, start_s=4.0, end_s=6.0)
    assert len(idx) == 16 and idx.min() >= 0 and idx.max() < 300
    assert np.all(np.diff(idx) > 0)
    # A 1 s video at 10 fps is shorter than a 2 s clip: looped, never dropped, always in range.
    short = sample_indices(10, 10.0, spec)
    assert len(short) == 16 and short.max() <= 9 and short.min() == 0


def test_preprocess_shapes_and_determinism():
    spec = ClipSpec(frames=4, fps=8, size=32, stride=4)
    frames = np.random.default_rng(0).integers(0, 255, (4, 90, 160, 3), dtype=np.uint8)
    a, b = preprocess_frames(frames, spec), preprocess_frames(frames.copy(), spec)
    assert a.shape == (4, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    crop = preprocess_frames(frames, spec.model_copy(update={"resize": "crop"}))
    assert crop.shape == (4, 32, 32, 3)
    with pytest.raises(ValueError, match="uint8"):
        preprocess_frames(frames.astype(np.float32), spec)


def test_to_model_input_range_and_layout():
    clips = np.zeros((2, 4, 8, 8, 3), dtype=np.uint8)
    clips[..., 0] = 255
    x = to_model_input(clips, I3D_NORM)
    assert tuple(x.shape) == (2, 3, 4, 8, 8) and str(x.dtype) == "torch.float32"
    assert float(x[:, 0].min()) == 1.0 and float(x[:, 1].max()) == -1.0


def test_window_starts():
    spec = ClipSpec(frames=8, fps=8, size=32, stride=4)
    assert window_starts(20, spec) == [0, 4, 8, 12]
    assert window_starts(5, spec) == [0]


def test_settings_defaults_and_presets():
    s = Settings()
    assert s.clip == CLIP_PRESETS["laptop"]
    assert load_settings(None, clip="i3d").clip.frames == 64


def test_mistyped_key_names_the_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"train\.epoch: unknown key"):
        load_settings(cfg)


def test_impossible_clipspec_names_the_key():
    with pytest.raises(ConfigError, match=r"clip.*stride"):
        load_settings(None, **{"clip": {"frames": 8, "fps": 8, "size": 112, "stride": 16}})


def test_env_nested(monkeypatch):
    monkeypatch.setenv("BIGSISTER_TRAIN__EPOCHS", "7")
    assert Settings().train.epochs == 7


def test_configuration_reference_is_current():
    """docs/configuration.md's reference is generated from the settings models; a field added or changed
    without `python -m bigsister_ray.reference docs/configuration.md` makes it stale."""
    from pathlib import Path

    from bigsister_ray.reference import REFERENCE_BEGIN, embed_reference

    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert embed_reference(doc) == doc, (
        "docs/configuration.md's reference is stale: run `python -m bigsister_ray.reference docs/configuration.md`")
    assert REFERENCE_BEGIN not in (root / "README.md").read_text(encoding="utf-8"), "one copy: docs/configuration.md"
    with pytest.raises(ValueError, match="expected one"):
        embed_reference("no markers here")
