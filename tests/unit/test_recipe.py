"""The shipped recipe ``configs/fight-cpu.yaml`` loads through the settings loader and builds its model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bigsister_ray.clip import input_channels, to_model_input
from bigsister_ray.config import load_settings
from bigsister_ray.models import build_model, check_clip, get_model_spec

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "fight-cpu.yaml"
LIGHT = RECIPE.with_name("fight-cpu-light.yaml")

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture()
def no_weights_env(monkeypatch):
    monkeypatch.delenv("BIGSISTER_MODEL__WEIGHTS", raising=False)


def test_recipe_loads_and_builds_its_model(no_weights_env):
    s = load_settings(RECIPE)
    assert s.task.labels == ["fight", "normal"]
    assert s.task.to_task().resolve("noFight") == "normal" and s.task.to_task().resolve("fight") == "fight"
    assert s.model.name == "mobilenet_tsm_top" and s.model.weights is None
    assert s.clip.input in ("diff", "rgb+diff") and s.clip.frames <= 16 and s.clip.size <= 224
    assert s.data.clips_per_video > 1 and s.train.augment
    check_clip(s.model.name, s.clip)
    model = build_model(s.model.name, len(s.task.labels), dropout=s.model.dropout,
                        in_channels=input_channels(s.clip.input)).eval()
    clips = np.random.default_rng(0).integers(0, 256, size=(2, s.clip.frames, s.clip.size, s.clip.size, 3), dtype=np.uint8)
    with torch.no_grad():
        logits = model(to_model_input(clips, get_model_spec(s.model.name).norm, s.clip.input))
    assert tuple(logits.shape) == (2, 2)


def test_the_weights_come_from_the_environment(monkeypatch, tmp_path):
    """model.weights is the recipe's one site-specific value: BIGSISTER_MODEL__WEIGHTS sets it, and the
    recipe's model starts from that file."""
    from torchvision.models import mobilenet_v2

    torch.manual_seed(0)
    source = mobilenet_v2(weights=None)
    path = tmp_path / "mobilenet_v2.pt"
    torch.save(source.state_dict(), path)
    monkeypatch.setenv("BIGSISTER_MODEL__WEIGHTS", str(path))
    s = load_settings(RECIPE)
    assert s.model.weights == str(path)
    model = build_model(s.model.name, len(s.task.labels), dropout=s.model.dropout, weights=s.model.weights,
                        in_channels=input_channels(s.clip.input))
    assert torch.equal(model.features[5].conv[1][0].weight, source.features[5].conv[1][0].weight)
    assert RECIPE.read_text().count("weights:") == 0  # nothing in the file overrides the environment


def test_the_light_recipe_is_the_recipe_at_a_quarter_of_the_pixels(no_weights_env):
    """configs/fight-cpu-light.yaml differs from the recipe in the clip's size alone (so the two never drift
    apart), and that size is half the recipe's, a quarter of the pixels per frame."""
    recipe, light = load_settings(RECIPE), load_settings(LIGHT)
    assert light.clip.size * 2 == recipe.clip.size
    assert light.clip.model_copy(update={"size": recipe.clip.size}) == recipe.clip
    assert light.model_dump(exclude={"clip"}) == recipe.model_dump(exclude={"clip"})
    assert LIGHT.read_text().count("weights:") == 0
    check_clip(light.model.name, light.clip)
