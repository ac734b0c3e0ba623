"""Evaluation numbers against a confusion matrix and calibration figures computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from bigsister_ray.train import metrics as M

LABELS = ["fight", "assault", "normal"]
# Hand-built predictions:
#   true fight   (4): fight, fight, fight, normal      -> row [3, 0, 1]
#   true assault (3): assault, assault, fight         -> row [1, 2, 0]
#   true normal  (5): normal x4, fight                -> row [1, 0, 4]
Y_TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2]
Y_PRED = [0, 0, 0, 2, 1, 1, 0, 2, 2, 2, 2, 0]
CM = [[3, 0, 1], [1, 2, 0], [1, 0, 4]]


def test_confusion_matrix_matches_hand_count():
    cm = M.confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.tolist() == CM
    assert cm.dtype == np.int64


def test_classification_report_matches_hand_computation():
    rep = M.classification_report(M.confusion_matrix(Y_TRUE, Y_PRED, 3), LABELS)
    # accuracy = (3 + 2 + 4) / 12
    assert rep["accuracy"] == pytest.approx(0.75)
    assert rep["n"] == 12
    pc = rep["per_class"]
    # fight: predicted 5 times, 3 right; 4 true fights, 3 found.
    assert pc["fight"]["precision"] == pytest.approx(3 / 5)
    assert pc["fight"]["recall"] == pytest.approx(3 / 4)
    assert pc["fight"]["f1"] == pytest.approx(2 / 3)
    # assault: predicted twice, both right; 3 true, 2 found.
    assert pc["assault"]["precision"] == pytest.approx(1.0)
    assert pc["assault"]["recall"] == pytest.approx(2 / 3)
    assert pc["assault"]["f1"] == pytest.approx(0.8)
    assert pc["normal"]["precision"] == pytest.approx(4 / 5)
    assert pc["normal"]["recall"] == pytest.approx(4 / 5)
    assert pc["normal"]["f1"] == pytest.approx(0.8)
    assert [pc[k]["support"] for k in LABELS] == [4, 3, 5]
    assert rep["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0.8) / 3)
    assert rep["balanced_accuracy"] == pytest.approx((3 / 4 + 2 / 3 + 4 / 5) / 3)
    assert rep["weighted_f1"] == pytest.approx((4 * 2 / 3 + 3 * 0.8 + 5 * 0.8) / 12)
    assert rep["labels"] == LABELS and rep["confusion"] == CM


def test_never_predicted_class_scores_zero_not_nan():
    cm = [[2, 0], [1, 0]]  # class 1 occurs once and is never predicted
    rep = M.classification_report(cm, ["a", "b"])
    assert rep["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    # a: P = 2/3, R = 1 -> F1 = 0.8; macro over both classes = 0.4
    assert rep["macro_f1"] == pytest.approx(0.4)


def test_baselines_match_hand_computation():
    cm = np.array(CM)
    maj = M.majority_baseline(cm, LABELS)
    # always "normal": 5/12 right; normal F1 = 2 * (5/12) * 1 / (5/12 + 1) = 10/17; others 0.
    assert maj["label"] == "normal"
    assert maj["accuracy"] == pytest.approx(5 / 12)
    assert maj["macro_f1"] == pytest.approx((10 / 17) / 3)
    maj_train = M.majority_baseline(cm, LABELS, majority=0)
    assert maj_train["label"] == "fight" and maj_train["accuracy"] == pytest.approx(4 / 12)
    ch = M.chance_baseline(cm, LABELS)
    # F1_i = 2 p_i / (3 p_i + 1) with p = 4/12, 3/12, 5/12
    assert ch["accuracy"] == pytest.approx(1 / 3)
    assert ch["macro_f1"] == pytest.approx((1 / 3 + 0.5 / 1.75 + 10 / 27) / 3)


def test_chance_baseline_equals_expected_confusion_of_uniform_guessing():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=20000)
    guess = rng.integers(0, 4, size=y.size)
    rep = M.classification_report(M.confusion_matrix(y, guess, 4), list("abcd"))
    ch = M.chance_baseline(M.confusion_matrix(y, y, 4), list("abcd"))
    assert rep["accuracy"] == pytest.approx(ch["accuracy"], abs=0.01)
    assert rep["macro_f1"] == pytest.approx(ch["macro_f1"], abs=0.01)


def test_reliability_bins_and_ece_by_hand():
    probs = np.array([[0.93, 0.07], [0.82, 0.18], [0.36, 0.64], [0.29, 0.71]])
    y = np.array([0, 1, 1, 0])  # right, wrong, right, wrong
    bins = M.reliability_bins(probs, y, bins=10)
    assert len(bins) == 10 and sum(b["count"] for b in bins) == 4
    by_bin = {i: b for i, b in enumerate(bins) if b["count"]}
    assert sorted(by_bin) == [6, 7, 8, 9]
    assert by_bin[9]["confidence"] == pytest.approx(0.93) and by_bin[9]["accuracy"] == 1.0
    assert by_bin[8]["accuracy"] == 0.0
    # |1-.93| + |0-.82| + |1-.64| + |0-.71| over 4
    assert M.expected_calibration_error(probs, y, bins=10) == pytest.approx((0.07 + 0.82 + 0.36 + 0.71) / 4)
    # two bins: all four land in (0.5, 1]: |0.5 - mean conf|
    assert M.expected_calibration_error(probs, y, bins=2) == pytest.approx(abs(0.5 - (0.93 + 0.82 + 0.64 + 0.71) / 4))


def test_softmax_and_nll():
    logits = np.array([[0.0, np.log(3.0)]])
    assert M.softmax(logits)[0].tolist() == pytest.approx([0.25, 0.75])
    assert M.negative_log_likelihood(logits, [1]) == pytest.approx(-np.log(0.75))
    assert M.softmax(logits, temperature=1e9)[0].tolist() == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="positive temperature"):
        M.softmax(logits, temperature=0)


def test_fit_temperature_recovers_overconfidence():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(6000, 3)) * 1.5
    p = M.softmax(z)
    y = np.array([rng.choice(3, p=row) for row in p])
    overconfident = z * 3.0  # a model 3x too sharp: the right temperature is 3
    t = M.fit_temperature(overconfident, y)
    assert t == pytest.approx(3.0, rel=0.1)
    assert M.negative_log_likelihood(overconfident, y, t) < M.negative_log_likelihood(overconfident, y, 1.0)
    assert M.expected_calibration_error(M.softmax(overconfident, t), y) < M.expected_calibration_error(M.softmax(overconfident), y)


def test_threshold_for_precision():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    pos = [1, 1, 0, 1, 0, 0]
    r = M.threshold_for_precision(scores, pos, 0.75)  # cut after 0.6: 3 of 4 alerts right, all 3 positives found
    # halfway between the lowest alerted score (0.6) and the highest one left out (0.5)
    assert r == {"threshold": pytest.approx(0.55), "precision": 0.75, "recall": 1.0, "support": 3, "reached": True}
    r = M.threshold_for_precision(scores, pos, 0.9)
    assert r["threshold"] == pytest.approx(0.75) and r["recall"] == pytest.approx(2 / 3) and r["reached"]
    # the threshold alerts exactly the clips of the chosen cut
    s = np.asarray(scores)
    assert (s >= r["threshold"]).sum() == 2
    # unreachable: the best cut is reported with reached=False
    r = M.threshold_for_precision([0.9, 0.1], [0, 1], 0.9)
    assert r["threshold"] == 0.1 and r["precision"] == 0.5 and not r["reached"]
    # ties are alerted together: no cut between the two 0.9 scores
    r = M.threshold_for_precision([0.9, 0.9, 0.5], [1, 0, 1], 0.6)
    assert r["threshold"] == 0.5 and r["precision"] == pytest.approx(2 / 3)
    assert M.threshold_for_precision([0.3], [0], 0.9)["threshold"] is None
    # separated scores: the margin's middle, not the lowest positive (0.97), so windows scoring 0.9 still alert
    r = M.threshold_for_precision([0.99, 0.98, 0.97, 0.2, 0.1], [1, 1, 1, 0, 0], 0.9)
    assert r["threshold"] == pytest.approx(0.585) and r["recall"] == 1.0
    # the deepest cut includes every clip: nothing below it, the threshold is its lowest score
    assert M.threshold_for_precision([0.9, 0.8], [1, 1], 0.9)["threshold"] == 0.8


def test_fit_temperature_leaves_a_separable_validation_set_alone():
    """Perfectly separated validation logits have no NLL minimum: T would run to its lower bound, every
    probability would become 0 or 1 and every precision threshold 1.0. The demo's first calibrated checkpoint
    got T = 0.05 and a fight threshold of 0.9999999999997 that no window reached."""
    rng = np.random.default_rng(3)
    y = np.array([0] * 10 + [1] * 20)
    z = np.zeros((30, 2))
    z[np.arange(30), y] = rng.uniform(1.0, 4.0, size=30)  # the true class always has the larger logit
    assert M.fit_temperature(z, y) == 1.0
    z[0] = [0.0, 2.0]  # one mistake: a proper minimum exists again, inside the bounds
    t = M.fit_temperature(z, y)
    assert 0.05 < t < 20.0 and t != 1.0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="differ in length"):
        M.confusion_matrix([0, 1], [0], 2)
    with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
        M.confusion_matrix([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match="expected 2 labels"):
        M.classification_report([[1, 0], [0, 1]], ["a"])
    with pytest.raises(ValueError, match="integer class indices"):
        M.confusion_matrix([0.5], [0], 2)


def test_fit_temperature_prior_keeps_a_small_validation_set_from_sharpening_to_the_bound():
    """38 clips, one borderline mistake: the plain MLE sharpens hard (T = 0.29: a 3.5x sharper model on the
    evidence of one clip); the prior on log T keeps T nearer 1, while 6000 clips still recover a real 3x
    overconfidence (test above)."""
    rng = np.random.default_rng(5)
    y = np.array([0] * 10 + [1] * 28)
    z = np.zeros((38, 2))
    z[np.arange(38), y] = rng.uniform(2.0, 5.0, size=38)
    z[0] = [0.0, 0.02]  # wrong, by a hair
    mle = M.fit_temperature(z, y, prior_sigma=None)
    assert mle < 0.35
    t = M.fit_temperature(z, y)
    assert 0.5 < t <= 1.0 and t > 2 * mle
    assert M.softmax(z, t).max(axis=1).min() < 0.99  # probabilities stay probabilities
