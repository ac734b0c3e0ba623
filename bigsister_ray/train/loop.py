"""The per-worker training loop that Ray Train runs, and the pieces it is made of.

:func:`train_loop_per_worker` is what :class:`ray.train.torch.TorchTrainer` calls on every worker with a plain
dict (:class:`LoopConfig`, validated on the first line). Each epoch it

1. streams its own shard of the training clips (``ray.train.get_dataset_shard("train")``), decodes the raw
   bytes with :func:`bigsister_ray.data.prepared.frames_from_bytes`, augments the uint8 clips on the worker
   (:func:`augment_clips`: random crop resized back, horizontal flip, temporal jitter), normalises them with
   the model's :class:`~bigsister_ray.clip.Normalization` and the clip's input (frames, frame differences or
   both; :func:`bigsister_ray.clip.to_model_input`) and
   takes a step of a class-weighted cross-entropy (bf16 autocast on GPU);
2. scores its shard of the validation clips; confusion matrices and losses are summed over workers, so
   every worker computes the same accuracy and macro-F1 and takes the same early-stopping decision;
3. reports the metrics with a checkpoint (rank 0 writes it): ``model.pt`` (the self-describing checkpoint of
   :mod:`bigsister_ray.models.checkpoint`) plus ``train_state.pt`` (optimizer, scheduler, epoch, best score,
   patience) so a restarted worker group, or a rerun with the same name, continues at the next epoch.

:func:`run_epoch` is the same step used by the plain single-process loop in ``benchmarks/bench_train.py``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bigsister_ray.clip import ClipSpec, Normalization, input_channels

__all__ = [
    "FaultInjection",
    "LoopConfig",
    "EpochStats",
    "decode_batch",
    "augment_clips",
    "class_weights",
    "run_epoch",
    "WeightEMA",
    "epoch_metrics",
    "format_epoch",
    "train_loop_per_worker",
    "TRAIN_STATE_FILE",
    "HISTORY_FILE",
]

TRAIN_STATE_FILE = "train_state.pt"
HISTORY_FILE = "history.jsonl"


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


class FaultInjection(BaseModel):
    """Test hook: on the first attempt only, worker ``rank`` dies (``os._exit``) after ``after_batches``
    training batches of ``epoch``. ``marker`` (a file path) records that the fault already fired."""

    model_config = ConfigDict(extra="forbid")

    epoch: int = Field(ge=1)
    marker: str
    rank: int = 0
    after_batches: int = Field(1, ge=0)


class LoopConfig(BaseModel):
    """What the driver hands every worker (as a plain dict)."""

    model_config = ConfigDict(extra="forbid")

    settings: dict[str, Any]
    labels: list[str]
    clip: ClipSpec
    data_fingerprint: str | None = None
    class_weights: list[float] | None = None
    has_val: bool = True
    run_dir: str = Field(description="Where rank 0 appends history.jsonl (the run folder).")
    fault: FaultInjection | None = None


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


def _allreduce(values: np.ndarray, op: str = "sum") -> np.ndarray:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    t = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t.numpy()


def _append_history(run_dir: str, record: dict[str, Any]) -> None:
    """Add one JSON line to the run's history.jsonl (``run_dir`` a local folder or an ``s3://``/``gs://`` URI).

    Object stores have no append: the whole (small, one line per epoch) file is read and written back as one
    new object, so a reader sees either the old or the new version, never half a line. Only rank 0 writes.
    """
    from bigsister_ray import storage

    line = json.dumps(record) + "\n"
    if storage.is_remote(run_dir):
        path = storage.join(run_dir, HISTORY_FILE)
        try:
            before = storage.read_text(path)
        except FileNotFoundError:
            before = ""
        if before and not before.endswith("\n"):
            before += "\n"
        storage.write_text(path, before + line)
        return
    path = Path(run_dir) / HISTORY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(line)


def _run_name(run_dir: str) -> str:
    """The run folder's name (``s3://b/runs/r1?region=x`` -> ``r1``)."""
    from bigsister_ray import storage

    return storage.basename(run_dir)


def _iter_shard(name: str, batch_size: int, shuffle_buffer: int, seed: int) -> Iterator[dict[str, Any]]:
    import ray.train

    shard = ray.train.get_dataset_shard(name)
    if shard is None:
        return iter(())
    return iter(
        shard.iter_batches(
            batch_size=batch_size,
            batch_format="numpy",
            prefetch_batches=1,
            local_shuffle_buffer_size=max(shuffle_buffer, batch_size) if shuffle_buffer else None,
            local_shuffle_seed=seed if shuffle_buffer else None,
        )
    )


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point (runs on every worker). See the module docstring."""
    cfg = LoopConfig.model_validate(config)

    import ray.train
    import ray.train.torch
    import torch

    from bigsister_ray.config import Settings
    from bigsister_ray.models import build_model, get_model_spec
    from bigsister_ray.models.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint

    settings = Settings.model_validate(cfg.settings)
    tc = settings.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    threads = tc.torch_threads or max(1, int(math.floor(tc.cpus_per_worker)))
    torch.set_num_threads(threads)
    torch.manual_seed(tc.seed + rank)
    num_classes = len(cfg.labels)
    model_name = settings.model.name
    norm = get_model_spec(model_name).norm
    device = ray.train.torch.get_device()
    use_bf16 = tc.bf16 and device.type == "cuda"
    autocast_dtype = torch.bfloat16 if use_bf16 else None

    # --- model, optimizer, and the state to resume from -------------------------------------------------
    resume = ray.train.get_checkpoint()
    model = build_model(model_name, num_classes, dropout=settings.model.dropout,
                        weights=None if resume else settings.model.weights, in_channels=input_channels(cfg.clip.input))
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, tc.epochs), eta_min=tc.lr * 0.02)
    state: dict[str, Any] = {"epoch": 0, "best_score": -1.0, "best_epoch": None, "bad_epochs": 0, "stopped": False}
    saved: dict[str, Any] | None = None
    resumed_avg: dict[str, Any] | None = None
    if resume is not None:
        with resume.as_directory() as d:
            loaded = load_checkpoint(Path(d) / "model.pt")
            saved = torch.load(Path(d) / TRAIN_STATE_FILE, map_location="cpu", weights_only=False)
        if "model_raw" in saved:  # model.pt holds the weight average; the weights being trained are here
            model.load_state_dict(saved["model_raw"])
            resumed_avg = loaded.model.state_dict()
        else:
            model.load_state_dict(loaded.model.state_dict())
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scheduler.T_max = max(1, tc.epochs)  # a rerun may ask for more epochs than the first run
        state.update(saved["state"])
        if rank == 0:
            print(f"resuming from the checkpoint of epoch {state['epoch']} (best val macro-F1 so far "
                  f"{state['best_score']:.3f} at epoch {state['best_epoch']})", flush=True)
            _append_history(cfg.run_dir, {"event": "resumed", "from_epoch": state["epoch"], "time": time.time()})
    model = ray.train.torch.prepare_model(model)
    net = model.module if hasattr(model, "module") else model
    ema = WeightEMA(net, tc.ema_decay) if tc.ema_decay > 0 else None
    if ema is not None and saved is not None:
        if resumed_avg is not None:
            ema.module.load_state_dict(resumed_avg)
        ema.load_state_dict(saved.get("ema", {}))
    scored_net = ema.module if ema is not None else net  # what validation scores and the checkpoint holds
    weights = torch.tensor(cfg.class_weights, dtype=torch.float32, device=device) if cfg.class_weights else None
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    eval_loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng([tc.seed, rank, state["epoch"]])

    if state["stopped"]:
        if rank == 0:
            print(f"run already stopped early at epoch {state['epoch']}; nothing to do", flush=True)
        return

    for epoch in range(state["epoch"] + 1, tc.epochs + 1):
        epoch_start = time.perf_counter()
        if cfg.fault is not None and cfg.fault.epoch == epoch and not Path(cfg.fault.marker).exists():
            # Test hook: make sure the last checkpoint is committed before the fault fires, so the test
            # exercises "resume from the last checkpoint" rather than a race with its registration.
            ray.train.get_all_reported_checkpoints(
                consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED, timeout_s=120)
        def on_batch(i: int, _epoch: int = epoch) -> None:
            f = cfg.fault
            if f is not None and f.epoch == _epoch and f.rank == rank and i == f.after_batches:
                marker = Path(f.marker)
                if not marker.exists():
                    marker.parent.mkdir(parents=True, exist_ok=True)
                    marker.write_text(json.dumps({"epoch": _epoch, "rank": rank, "pid": os.getpid()}))
                    print(f"fault injection: worker {rank} exits during epoch {_epoch}", flush=True)
                    os._exit(1)

        train_stats = run_epoch(
            model, _iter_shard("train", tc.batch_size, tc.shuffle_buffer_clips, tc.seed * 1000 + epoch), cfg.clip, norm, num_classes,
            device=device, optimizer=optimizer, loss_fn=loss_fn, augment=tc.augment, color_jitter=tc.color_jitter, rng=rng,
            autocast_dtype=autocast_dtype, on_batch=on_batch,
            after_step=(lambda: ema.update(net)) if ema is not None else None,
        )
        scheduler.step()
        val_stats = run_epoch(
            scored_net, _iter_shard("val", tc.batch_size, 0, 0) if cfg.has_val else iter(()), cfg.clip, norm,
            num_classes, device=device, loss_fn=eval_loss_fn, autocast_dtype=autocast_dtype,
        )
        c = num_classes * num_classes
        summed = _allreduce(np.concatenate([
            train_stats.confusion.ravel(), val_stats.confusion.ravel(),
            [train_stats.loss_sum, train_stats.clips, val_stats.loss_sum, val_stats.clips],
        ]).astype(np.float64))
        seconds, data_wait, first_batch = (float(v) for v in _allreduce(
            np.array([train_stats.seconds, train_stats.data_wait_s, train_stats.first_batch_s]), op="max"))
        train_cm = summed[:c].reshape(num_classes, num_classes).round().astype(np.int64)
        val_cm = summed[c : 2 * c].reshape(num_classes, num_classes).round().astype(np.int64)
        t_loss, t_n, v_loss, v_n = summed[2 * c :]
        metrics: dict[str, Any] = {"epoch": epoch, **epoch_metrics("train", train_cm, t_loss, int(t_n), cfg.labels)}
        if cfg.has_val and v_n > 0:
            metrics.update(epoch_metrics("val", val_cm, v_loss, int(v_n), cfg.labels))
        metrics["clips_per_s"] = t_n / seconds if seconds > 0 else 0.0
        metrics["train_seconds"] = seconds
        metrics["train_data_wait_s"] = data_wait  # the slowest worker's wait for batches (first batch included)
        metrics["train_first_batch_s"] = first_batch
        metrics["val_seconds"] = val_stats.seconds
        metrics["lr"] = float(optimizer.param_groups[0]["lr"])
        if ema is not None:
            metrics["ema_steps"] = ema.steps  # steps averaged so far (continues across a resume)
        score = metrics.get("val_macro_f1", metrics["train_macro_f1"])
        metrics["score"] = score
        improved = score > state["best_score"] + 1e-9
        if improved:
            state.update(best_score=score, best_epoch=epoch, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        metrics["is_best"] = improved
        stop = state["bad_epochs"] >= tc.early_stopping_patience
        state.update(epoch=epoch, stopped=stop)

        if rank == 0:
            print(format_epoch(metrics, tc.epochs), flush=True)
            report_start = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                meta = CheckpointMeta(
                    model_name=model_name, labels=list(cfg.labels), clip=cfg.clip, norm=norm,
                    data_fingerprint=cfg.data_fingerprint,
                    metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float, bool))},
                    epoch=epoch, extra={"run": _run_name(cfg.run_dir), "world_size": world,
                                        **({"ema_decay": ema.decay} if ema is not None else {})},
                )
                save_checkpoint(Path(tmp) / "model.pt", scored_net.state_dict(), meta)
                train_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "state": dict(state)}
                if ema is not None:
                    train_state.update(model_raw=net.state_dict(), ema=ema.state_dict())
                torch.save(train_state, Path(tmp) / TRAIN_STATE_FILE)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
            _append_history(cfg.run_dir, {"event": "epoch", **metrics, "time": time.time(),
                                          "report_seconds": time.perf_counter() - report_start,
                                          "epoch_seconds": time.perf_counter() - epoch_start})
        else:
            ray.train.report(metrics, checkpoint=None)
        if stop:
            if rank == 0:
                print(f"early stopping: no better validation macro-F1 for {tc.early_stopping_patience} epochs "
                      f"(best {state['best_score']:.3f} at epoch {state['best_epoch']})", flush=True)
            break
