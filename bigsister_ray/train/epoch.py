"""One pass over batches of prepared clips: decode, augment, normalise, step or score, and the sums it returns.

:func:`run_epoch` is the step the per-worker training loop (:mod:`bigsister_ray.train.loop`) runs every epoch
and the plain single-process loops of ``benchmarks/bench_train.py`` and ``benchmarks/bench_fight_surv.py`` run
alone. It takes batches (dicts with ``frames`` bytes and ``label_idx``), decodes them (:func:`decode_batch`),
augments the uint8 clips on the worker (:func:`augment_clips`: random crop resized back, horizontal flip,
temporal jitter, optional colour jitter), normalises them into the model's input
(:func:`bigsister_ray.clip.to_model_input`) and trains or scores, summing losses and the confusion matrix into
:class:`EpochStats`. :class:`WeightEMA` keeps the average of the weights being trained; :func:`epoch_metrics`
and :func:`format_epoch` turn summed statistics into the metrics reported and the line logged per epoch.
Nothing here needs Ray.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from bigsister_ray.clip import ClipSpec, Normalization

__all__ = [
    "EpochStats",
    "decode_batch",
    "augment_clips",
    "class_weights",
    "run_epoch",
    "WeightEMA",
    "epoch_metrics",
    "format_epoch",
]


class WeightEMA:
    """An exponential moving average of a model's weights (``train.ema_decay``), updated after every step.

    Validation scores, and checkpoints hold, the averaged weights: on a small or noisy dataset the weights of one
    step swing from epoch to epoch, the average of the last few hundred steps does not. Floating-point buffers
    (BatchNorm running statistics) are averaged too; integer ones (``num_batches_tracked``) are copied. The
    decay ramps up as ``min(decay, (1 + n) / (10 + n))`` over the first steps so the random initial weights
    fade out quickly.
    """

    def __init__(self, model: Any, decay: float) -> None:
        import copy

        import torch

        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.steps = 0
        self.module = copy.deepcopy(model).eval()
        for p_ in self.module.parameters():
            p_.requires_grad_(False)
        self._torch = torch

    def update(self, model: Any) -> None:
        """Move the average towards ``model``'s current weights (same architecture)."""
        torch = self._torch
        d = min(self.decay, (1.0 + self.steps) / (10.0 + self.steps))
        self.steps += 1
        with torch.no_grad():
            for avg, cur in zip(self.module.state_dict().values(), model.state_dict().values()):
                if avg.dtype.is_floating_point:
                    avg.lerp_(cur.detach().to(avg.dtype), 1.0 - d)
                else:
                    avg.copy_(cur)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state.get("steps", 0))



@dataclass
class EpochStats:
    """Sums over one pass: loss, clips, confusion ``C[true, pred]``, seconds, and optionally the logits."""

    num_classes: int
    loss_sum: float = 0.0
    clips: int = 0
    seconds: float = 0.0
    data_wait_s: float = 0.0  # of ``seconds``, blocked waiting for the next batch (input-bound when large)
    first_batch_s: float = 0.0  # of ``data_wait_s``, until the first batch arrived (the pipeline starting)
    confusion: np.ndarray = field(default=None)  # type: ignore[assignment]
    logits: list[np.ndarray] | None = None
    targets: list[np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.confusion is None:
            self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)


def decode_batch(frames: Iterable[bytes], spec: ClipSpec) -> np.ndarray:
    """Shard bytes -> uint8 ``B x T x S x S x 3`` (one contiguous copy)."""
    from bigsister_ray.data.prepared import frames_from_bytes

    clips = [frames_from_bytes(bytes(b) if not isinstance(b, bytes) else b, spec) for b in frames]
    if not clips:
        return np.zeros((0, spec.frames, spec.size, spec.size, 3), dtype=np.uint8)
    return np.stack(clips)


def augment_clips(clips: np.ndarray, rng: np.random.Generator, crop_scale: float = 0.8, jitter: int | None = None,
                  color: float = 0.0):
    """Random augmentation of uint8 clips ``B x T x S x S x 3`` on the worker, before normalisation.

    Per clip: a random square crop of side ``U(crop_scale, 1) * S`` resized back to ``S`` (bilinear,
    antialiased, uint8 like :func:`bigsister_ray.clip.preprocess_frames`), a horizontal flip with p = 0.5,
    a temporal shift of up to ``jitter`` frames (default ``T // 8``, at least 1) that repeats the edge
    frame, and with ``color > 0`` a photometric jitter the same for every frame of the clip: brightness and
    contrast scaled by ``U(1 - color, 1 + color)`` and each RGB channel by ``U(1 - color/2, 1 + color/2)``
    (a new camera's exposure and white balance). Returns a uint8 torch tensor of the same shape.
    """
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(clips))
    if x.ndim != 5 or x.shape[-1] != 3 or x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 clips B x T x S x S x 3, got {tuple(x.shape)} {x.dtype}")
    b, t, h, w, _ = x.shape
    jitter = max(1, t // 8) if jitter is None else jitter
    out = torch.empty_like(x)
    for i in range(b):
        clip = x[i]
        if jitter > 0:
            shift = int(rng.integers(-jitter, jitter + 1))
            if shift:
                idx = torch.clamp(torch.arange(t) + shift, 0, t - 1)
                clip = clip[idx]
        if crop_scale < 1.0:
            side = float(rng.uniform(crop_scale, 1.0))
            ch, cw = max(1, int(round(h * side))), max(1, int(round(w * side)))
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            if (ch, cw) != (h, w):
                c = clip[:, top : top + ch, left : left + cw, :].permute(0, 3, 1, 2).contiguous()
                c = F.interpolate(c, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
                clip = c.permute(0, 2, 3, 1)
        if color > 0:
            f = clip.float()
            contrast, brightness = 1 + rng.uniform(-color, color), 1 + rng.uniform(-color, color)
            gains = torch.from_numpy(1 + rng.uniform(-color / 2, color / 2, size=3)).float()
            mean = f.mean()
            f = ((f - mean) * contrast + mean) * brightness * gains
            clip = f.clamp_(0, 255).round_().to(torch.uint8)
        if rng.random() < 0.5:
            clip = clip.flip(2)
        out[i] = clip
    return out


def class_weights(counts: dict[str, int], labels: list[str]) -> list[float]:
    """Inverse-frequency weights ``N / (C * n_c)`` for the weighted loss; a class without clips gets 1."""
    n = [int(counts.get(label, 0)) for label in labels]
    total, c = sum(n), len(labels)
    if total == 0:
        return [1.0] * c
    return [total / (c * k) if k > 0 else 1.0 for k in n]


def run_epoch(
    model: Any,
    batches: Iterable[dict[str, Any]],
    spec: ClipSpec,
    norm: Normalization,
    num_classes: int,
    *,
    device: Any = "cpu",
    optimizer: Any = None,
    loss_fn: Callable | None = None,
    augment: bool = False,
    color_jitter: float = 0.0,
    rng: np.random.Generator | None = None,
    autocast_dtype: Any = None,
    keep_logits: bool = False,
    on_batch: Callable[[int], None] | None = None,
    after_step: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> EpochStats:
    """One pass over ``batches`` (dicts with ``frames`` bytes and ``label_idx``): trains when an
    ``optimizer`` is given (model in train mode), otherwise scores under ``torch.no_grad`` in eval mode.
    ``on_batch(i)`` is called before batch ``i`` (the fault-injection hook); ``after_step()`` after each optimizer
    step (the weight average's update). ``clock`` times the epoch and the waits for data (seconds)."""
    import torch

    from bigsister_ray.clip import to_model_input

    training = optimizer is not None
    rng = rng or np.random.default_rng()
    loss_fn = loss_fn or torch.nn.CrossEntropyLoss()
    stats = EpochStats(num_classes, logits=[] if keep_logits else None, targets=[] if keep_logits else None)
    model.train(training)
    start = clock()
    device_type = torch.device(device).type
    it = iter(batches)
    with torch.set_grad_enabled(training):
        for i in itertools.count():
            waited = clock()
            batch = next(it, None)
            waited = clock() - waited
            stats.data_wait_s += waited
            if i == 0:
                stats.first_batch_s = waited
            if batch is None:
                break
            if on_batch is not None:
                on_batch(i)
            y_np = np.asarray(batch["label_idx"], dtype=np.int64)
            if y_np.size == 0:
                continue
            clips = decode_batch(batch["frames"], spec)
            x_u8 = augment_clips(clips, rng, color=color_jitter) if augment else torch.from_numpy(clips)
            x = to_model_input(x_u8, norm, spec.input).to(device, non_blocking=True)
            y = torch.from_numpy(y_np).to(device)
            if autocast_dtype is not None:
                with torch.autocast(device_type=device_type, dtype=autocast_dtype):
                    logits = model(x)
            else:
                logits = model(x)
            logits = logits.float()
            loss = loss_fn(logits, y)
            if training:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if after_step is not None:
                    after_step()
            pred = logits.detach().argmax(dim=1).cpu().numpy()
            stats.loss_sum += float(loss.detach()) * y_np.size
            stats.clips += int(y_np.size)
            np.add.at(stats.confusion, (y_np, pred), 1)
            if keep_logits:
                stats.logits.append(logits.detach().cpu().numpy())
                stats.targets.append(y_np)
    stats.seconds = clock() - start
    return stats


def epoch_metrics(prefix: str, confusion: np.ndarray, loss_sum: float, clips: int, labels: list[str]) -> dict[str, float]:
    """``{prefix}_loss``, ``_accuracy``, ``_macro_f1`` and ``_clips`` from summed epoch statistics."""
    from bigsister_ray.train.metrics import classification_report

    rep = classification_report(confusion, labels)
    return {
        f"{prefix}_loss": loss_sum / clips if clips else float("nan"),
        f"{prefix}_accuracy": rep["accuracy"],
        f"{prefix}_macro_f1": rep["macro_f1"],
        f"{prefix}_clips": float(clips),
    }


def format_epoch(m: dict[str, Any], epochs: int) -> str:
    """One log line per epoch: loss, accuracy, macro-F1 per split and clips/s."""
    parts = [f"epoch {int(m['epoch'])}/{epochs}"]
    for split in ("train", "val"):
        if f"{split}_loss" in m:
            parts.append(
                f"{split}: loss {m[f'{split}_loss']:.4f} acc {m[f'{split}_accuracy']:.3f} "
                f"macro-F1 {m[f'{split}_macro_f1']:.3f}"
            )
    rate = f"{m['clips_per_s']:.1f} clips/s"
    if m.get("train_seconds") and "train_data_wait_s" in m:
        rate += f" ({100 * m['train_data_wait_s'] / m['train_seconds']:.0f}% waiting for data)"
    parts.append(rate)
    if m.get("is_best"):
        parts.append("(best)")
    return " | ".join(parts)
