"""Classification and calibration metrics, pure numpy (no torch, no Ray): the numbers evaluation reports.

Everything starts from integer class indices or a confusion matrix ``C[true, predicted]``:

* :func:`confusion_matrix`, :func:`classification_report` (accuracy, macro-F1, per-class P/R/F1/support);
* :func:`majority_baseline` and :func:`chance_baseline`: what a model must beat;
* :func:`softmax`, :func:`reliability_bins`, :func:`expected_calibration_error`, :func:`negative_log_likelihood`
  and :func:`fit_temperature` (temperature scaling on validation logits);
* :func:`threshold_for_precision`: the lowest score threshold at which one class's alerts reach a precision.

A class that is never predicted has precision 0 (not NaN), and one that never occurs has recall 0; both
count in the macro average, so a model that ignores a class is not flattered.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = [
    "confusion_matrix",
    "per_class_metrics",
    "classification_report",
    "majority_baseline",
    "chance_baseline",
    "softmax",
    "reliability_bins",
    "expected_calibration_error",
    "negative_log_likelihood",
    "fit_temperature",
    "threshold_for_precision",
]


def _as_labels(y: Any, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"expected {name} as a 1-D array of class indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"expected integer class indices for {name}, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """``C[i, j]`` = clips of true class ``i`` predicted as ``j`` (int64, ``num_classes x num_classes``)."""
    t, p = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    if num_classes < 1:
        raise ValueError(f"expected num_classes >= 1, got {num_classes}")
    for arr, name in ((t, "y_true"), (p, "y_pred")):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} holds indices outside [0, {num_classes}): min {arr.min()}, max {arr.max()}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _check_confusion(confusion: Any) -> np.ndarray:
    cm = np.asarray(confusion)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"expected a square confusion matrix, got shape {cm.shape}")
    if (cm < 0).any():
        raise ValueError("a confusion matrix cannot hold negative counts")
    return cm.astype(np.float64)


def per_class_metrics(confusion: Any) -> dict[str, np.ndarray]:
    """Arrays ``precision``, ``recall``, ``f1``, ``support`` (one entry per class) from ``C[true, pred]``."""
    cm = _check_confusion(confusion)
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def classification_report(confusion: Any, labels: Sequence[str]) -> dict[str, Any]:
    """JSON-ready summary: ``accuracy``, ``macro_f1``, ``weighted_f1``, ``balanced_accuracy``, ``n``,
    ``labels``, ``per_class`` ({label: {precision, recall, f1, support}}) and ``confusion`` (nested lists).

    ``macro_f1`` averages over every class in ``labels`` present in the data (support > 0) or predicted;
    a class absent from both does not count (it carries no information about the model).
    """
    cm = _check_confusion(confusion)
    if len(labels) != cm.shape[0]:
        raise ValueError(f"expected {cm.shape[0]} labels for a {cm.shape[0]}x{cm.shape[0]} confusion matrix, got {len(labels)}")
    n = cm.sum()
    pc = per_class_metrics(cm)
    seen = (pc["support"] > 0) | (cm.sum(axis=0) > 0)
    accuracy = float(np.trace(cm) / n) if n > 0 else 0.0
    macro_f1 = float(pc["f1"][seen].mean()) if seen.any() else 0.0
    weighted_f1 = float((pc["f1"] * pc["support"]).sum() / n) if n > 0 else 0.0
    present = pc["support"] > 0
    balanced = float(pc["recall"][present].mean()) if present.any() else 0.0
    return {
        "n": int(n),
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "weighted_f1": weighted_f1,
        "balanced_accuracy": balanced,
        "labels": list(labels),
        "per_class": {
            label: {
                "precision": float(pc["precision"][i]),
                "recall": float(pc["recall"][i]),
                "f1": float(pc["f1"][i]),
                "support": int(pc["support"][i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion": cm.astype(np.int64).tolist(),
    }


def majority_baseline(confusion: Any, labels: Sequence[str], majority: int | None = None) -> dict[str, Any]:
    """Scores of always predicting one class: ``majority`` (e.g. the training set's most frequent class),
    or the evaluated data's own most frequent class when None. Returns ``{label, accuracy, macro_f1}``."""
    cm = _check_confusion(confusion)
    support = cm.sum(axis=1)
    k = int(np.argmax(support)) if majority is None else int(majority)
    if not 0 <= k < cm.shape[0]:
        raise ValueError(f"majority class index {k} is outside [0, {cm.shape[0]})")
    base = np.zeros_like(cm)
    base[:, k] = support
    rep = classification_report(base, labels)
    return {"label": labels[k], "accuracy": rep["accuracy"], "macro_f1": rep["macro_f1"]}


def chance_baseline(confusion: Any, labels: Sequence[str]) -> dict[str, Any]:
    """Expected scores of guessing uniformly at random among the classes.

    Accuracy is ``1 / C``. For class ``i`` with prevalence ``p_i`` the expected confusion has precision
    ``p_i`` and recall ``1 / C``, so its F1 is ``2 p_i / (C p_i + 1)``; macro-F1 averages the classes present.
    """
    cm = _check_confusion(confusion)
    c = cm.shape[0]
    support = cm.sum(axis=1)
    n = support.sum()
    present = support > 0
    if n == 0:
        return {"accuracy": 1.0 / c, "macro_f1": 0.0}
    p = support / n
    f1 = 2 * p / (c * p + 1)
    return {"accuracy": 1.0 / c, "macro_f1": float(f1[present].mean())}


def softmax(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (float64, numerically stable)."""
    if not temperature > 0:
        raise ValueError(f"expected a positive temperature, got {temperature}")
    z = np.asarray(logits, dtype=np.float64) / temperature
    if z.ndim != 2:
        raise ValueError(f"expected logits shaped N x C, got {z.shape}")
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _check_probs(probs: Any, y_true: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    t = _as_labels(y_true, "y_true")
    if p.ndim != 2 or p.shape[0] != t.shape[0]:
        raise ValueError(f"expected probabilities N x C matching {t.shape[0]} labels, got shape {p.shape}")
    return p, t


def reliability_bins(probs: Any, y_true: Any, bins: int = 10) -> list[dict[str, float]]:
    """Top-label reliability: for each of ``bins`` equal-width confidence bins, ``lo``, ``hi``, ``count``,
    mean ``confidence`` and ``accuracy`` of the clips whose top probability falls in it (empty bins: count 0)."""
    p, t = _check_probs(probs, y_true)
    if bins < 1:
        raise ValueError(f"expected bins >= 1, got {bins}")
    conf = p.max(axis=1) if p.size else np.zeros(0)
    correct = (p.argmax(axis=1) == t).astype(np.float64) if p.size else np.zeros(0)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 goes to the first bin.
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    out = []
    for i in range(bins):
        m = idx == i
        count = int(m.sum())
        out.append({
            "lo": float(edges[i]),
            "hi": float(edges[i + 1]),
            "count": count,
            "confidence": float(conf[m].mean()) if count else 0.0,
            "accuracy": float(correct[m].mean()) if count else 0.0,
        })
    return out


def expected_calibration_error(probs: Any, y_true: Any, bins: int = 10) -> float:
    """ECE: the count-weighted mean of ``|accuracy - confidence|`` over the reliability bins."""
    rb = reliability_bins(probs, y_true, bins)
    n = sum(b["count"] for b in rb)
    if n == 0:
        return 0.0
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in rb) / n)


def negative_log_likelihood(logits: Any, y_true: Any, temperature: float = 1.0) -> float:
    """Mean cross-entropy of ``softmax(logits / temperature)`` against the true classes."""
    t = _as_labels(y_true, "y_true")
    z = np.asarray(logits, dtype=np.float64) / temperature
    if z.ndim != 2 or z.shape[0] != t.shape[0]:
        raise ValueError(f"expected logits N x C matching {t.shape[0]} labels, got shape {z.shape}")
    if t.size == 0:
        return 0.0
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(lse - z[np.arange(t.size), t]))


def fit_temperature(logits: Any, y_true: Any, lo: float = 0.05, hi: float = 20.0, iters: int = 60,
                    prior_sigma: float | None = 0.5) -> float:
    """The temperature ``T`` in ``[lo, hi]`` minimising the validation NLL of ``softmax(logits / T)``.
    Returns 1.0 for empty input.

    The search runs on ``log T``: a grid over the whole range finds the basin (the objective need not be
    unimodal once the prior is added), then a golden-section search inside the neighbouring grid cells
    refines it. Bounded on both sides, so a model whose logits are thousands of times too sharp gets ``hi``,
    never an overflow.

    ``prior_sigma`` guards against sharpening on little evidence: below T = 1 it adds
    ``(log T)^2 / (2 sigma^2)`` to the summed NLL (a half-Gaussian prior on ``log T``). With the few dozen
    clips of a small validation split, one borderline mistake no longer drives T to 0.05 and every probability
    to 0 or 1 (seen on the demo: the fight threshold came out at 0.20 and the model then alerted on
    everything), while thousands of clips still decide. Softening (T > 1) is left to the data: every confident
    mistake is several nats of evidence, an over-confident model is the usual case after training on a small
    set, and softer probabilities keep their order, so the precision thresholds fitted on them alert the same
    clips. ``None`` fits the plain maximum-likelihood temperature.

    When the validation clips are perfectly separated (every clip's true class has the largest logit), the NLL
    keeps falling as ``T -> 0`` and has no minimum: the search would run into ``lo`` and make every probability
    0 or 1, which says nothing about new data and pushes every precision threshold to 1.0 (no alert ever fires).
    Such a set cannot calibrate, so this returns 1.0 (the model's own probabilities) instead.
    """
    t = _as_labels(y_true, "y_true")
    if t.size == 0:
        return 1.0
    if not 0 < lo < hi:
        raise ValueError(f"expected temperature bounds 0 < lo < hi, got lo={lo}, hi={hi}")
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] != t.size:
        raise ValueError(f"expected logits N x C matching {t.size} labels, got shape {z.shape}")
    if bool(np.all(z.argmax(axis=1) == t)):
        return 1.0  # separable: NLL has no minimum (see above)

    def objective(log_t: float) -> float:
        total = t.size * negative_log_likelihood(z, t, math.exp(log_t))
        if prior_sigma and log_t < 0:
            total += log_t * log_t / (2 * prior_sigma**2)
        return total

    grid = np.linspace(math.log(lo), math.log(hi), 97)
    values = [objective(float(g)) for g in grid]
    i = int(np.argmin(values))
    a, b = float(grid[max(i - 1, 0)]), float(grid[min(i + 1, grid.size - 1)])
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = objective(c), objective(d)
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = objective(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = objective(d)
    best = (a + b) / 2
    if values[i] < objective(best):  # the refinement never does worse than the grid point it started from
        best = float(grid[i])
    return float(min(max(math.exp(best), lo), hi))


def threshold_for_precision(scores: Any, positive: Any, target: float) -> dict[str, Any]:
    """A threshold ``thr`` such that alerts ``scores >= thr`` reach ``precision >= target`` with the most recall.

    ``scores``: one class's probability per clip; ``positive``: whether each clip truly is that class.
    Returns ``{threshold, precision, recall, support, reached}``. The deepest qualifying cut keeps the most
    recall; the threshold is put halfway between the lowest score it alerts and the highest score it does not
    (the widest margin: the same alerts on these clips, but new clips a little below the lowest validation
    positive are not lost, which matters when the positives score 0.99 and the negatives 0.2). When no
    threshold reaches the target (or the class never occurs), ``reached`` is False and ``threshold`` is the
    lowest score of the cut with the best precision (ties: more recall), or None without positives.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive).astype(bool)
    if s.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"expected scores and positive as equal-length 1-D arrays, got {s.shape} and {y.shape}")
    if not 0 < target <= 1:
        raise ValueError(f"expected a target precision in (0, 1], got {target}")
    npos = int(y.sum())
    if npos == 0:
        return {"threshold": None, "precision": 0.0, "recall": 0.0, "support": 0, "reached": False}
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    k = np.arange(1, s.size + 1)
    # Only cut between different scores: all clips tied at a threshold are alerted together.
    last_of_run = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    precision = tp / k
    recall = tp / npos
    cand = np.flatnonzero(last_of_run)
    ok = cand[precision[cand] >= target - 1e-12]
    if ok.size:
        i = int(ok[np.argmax(recall[ok])])  # the deepest qualifying cut = lowest threshold, most recall
        reached = True
    else:
        best = precision[cand].max()
        tied = cand[np.isclose(precision[cand], best)]
        i = int(tied[np.argmax(recall[tied])])
        reached = False
    threshold = float(s_sorted[i])
    if reached and i + 1 < s_sorted.size:
        threshold = float((s_sorted[i] + s_sorted[i + 1]) / 2)  # s_sorted[i + 1] < s_sorted[i]: a cut between runs
    return {
        "threshold": threshold,
        "precision": float(precision[i]),
        "recall": float(recall[i]),
        "support": npos,
        "reached": reached,
    }
