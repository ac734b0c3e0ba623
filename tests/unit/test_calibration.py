"""Temperature scaling calibrates an over-confident model: T well above 1, a lower ECE and NLL after."""

from __future__ import annotations

import numpy as np
import pytest

from bigsister_ray.train import metrics as M


def _overconfident(n: int, accuracy: float, scale: float, seed: int, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Held-out logits of a model right on ``accuracy`` of ``n`` clips whose logits are ``scale`` times too sharp.

    The underlying (calibrated) model gives its top class a probability near ``accuracy``; multiplying its
    logits by ``scale`` keeps every decision and pushes every probability towards 0 or 1.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    correct = rng.permutation(n) < round(accuracy * n)  # exactly ``accuracy`` of the clips right
    pred = np.where(correct, y, (y + rng.integers(1, classes, size=n)) % classes)
    margin = np.log(accuracy / (1 - accuracy) * (classes - 1)) + rng.normal(0.0, 0.3, size=n)
    z = rng.normal(0.0, 0.1, size=(n, classes))
    z[np.arange(n), pred] += np.abs(margin)
    return z * scale, y


@pytest.mark.parametrize("n", [40, 200, 2000])
def test_overconfident_logits_get_a_temperature_far_from_one_and_a_lower_ece(n):
    logits, y = _overconfident(n, accuracy=0.7, scale=10.0, seed=n)
    assert (logits.argmax(1) == y).mean() == pytest.approx(0.7, abs=0.01)
    t = M.fit_temperature(logits, y)
    assert t > 2.0, t
    before = M.expected_calibration_error(M.softmax(logits), y)
    after = M.expected_calibration_error(M.softmax(logits, t), y)
    assert before > 0.2  # ~0.3: 99% confident, 70% right
    assert after < before / 2
    assert M.negative_log_likelihood(logits, y, t) < M.negative_log_likelihood(logits, y, 1.0)


def test_temperature_is_the_nll_minimum_on_a_large_set():
    """With thousands of clips the prior does not matter: the fit lands on the NLL minimum of a fine grid."""
    logits, y = _overconfident(5000, accuracy=0.7, scale=10.0, seed=11)
    t = M.fit_temperature(logits, y)
    grid = np.exp(np.linspace(np.log(0.05), np.log(50.0), 2001))
    nll = [M.negative_log_likelihood(logits, y, g) for g in grid]
    best = grid[int(np.argmin(nll))]
    assert t == pytest.approx(best, rel=0.05)
    assert 5.0 < t < 20.0  # the true over-sharpening is about 10x


def test_an_already_calibrated_model_keeps_a_temperature_near_one():
    logits, y = _overconfident(3000, accuracy=0.7, scale=1.0, seed=5)
    t = M.fit_temperature(logits, y)
    assert 0.7 < t < 1.4
    assert M.expected_calibration_error(M.softmax(logits, t), y) < M.expected_calibration_error(M.softmax(logits), y) + 0.01


def test_extreme_overconfidence_is_bounded_not_infinite():
    """A model with logits in the thousands gets a finite temperature within the search bounds."""
    logits, y = _overconfident(300, accuracy=0.7, scale=1000.0, seed=2)
    t = M.fit_temperature(logits, y, hi=20.0)
    assert np.isfinite(t) and 19.0 < t <= 20.0
    assert M.expected_calibration_error(M.softmax(logits, t), y) < M.expected_calibration_error(M.softmax(logits), y)
