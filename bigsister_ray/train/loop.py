"""The per-worker training loop that Ray Train runs, and the pieces it is made of.

:func:`train_loop_per_worker` is what :class:`ray.train.torch.TorchTrainer` calls on every worker with a plain
dict (:class:`LoopConfig`, validated on the first line). Each epoch it

1. streams its own shard of the training clips (``ray.train.get_dataset_shard("train")``), decodes the raw
   bytes with :func:`bigsister_ray.data.prepared.frames_from_bytes`, augments the uint8 clips on the worker
   (:func:`~bigsister_ray.train.epoch.augment_clips`: random crop resized back, horizontal flip, temporal
   jitter), normalises them with the model's :class:`~bigsister_ray.clip.Normalization` and the clip's input
   (frames, frame differences or both; :func:`bigsister_ray.clip.to_model_input`) and takes a step of a
   class-weighted cross-entropy (bf16 autocast on GPU);
2. scores its shard of the validation clips; confusion matrices and losses are summed over workers, so
   every worker computes the same accuracy and macro-F1 and takes the same early-stopping decision;
3. reports the metrics with a checkpoint (rank 0 writes it): ``model.pt`` (the self-describing checkpoint of
   :mod:`bigsister_ray.models.checkpoint`) plus ``train_state.pt`` (optimizer, scheduler, epoch, best score,
   patience) so a restarted worker group, or a rerun with the same name, continues at the next epoch.

The epoch itself (decode, augment, step, the sums) is :func:`bigsister_ray.train.epoch.run_epoch`, which the
plain single-process loops of the benchmarks run too; this module holds what is per worker: the configuration
the driver hands over, the model, optimizer and state to resume from, the sums over workers, the checkpoints and
the run's history. The epoch's names are importable from here as well.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bigsister_ray.clip import ClipSpec, input_channels
from bigsister_ray.train.epoch import (
    EpochStats,
    WeightEMA,
    augment_clips,
    class_weights,
    decode_batch,
    epoch_metrics,
    format_epoch,
    run_epoch,
)

__all__ = [
    "FaultInjection",
    "fault_drill",
    "armed_fault",
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


class FaultInjection(BaseModel):
    """Test hook: on the first attempt only, worker ``rank`` dies (``os._exit``) after ``after_batches``
    training batches of ``epoch``. ``marker`` (a file path) records that the fault already fired."""

    model_config = ConfigDict(extra="forbid")

    epoch: int = Field(ge=1)
    marker: str
    rank: int = 0
    after_batches: int = Field(1, ge=0)


_ARMED: FaultInjection | None = None


@contextmanager
def fault_drill(fault: FaultInjection) -> Iterator[FaultInjection]:
    """Fault drill: every run :func:`~bigsister_ray.train.trainer.train` starts inside the block hands ``fault`` to
    its workers (kept out of ``train``'s signature: production code never passes one)."""
    global _ARMED
    previous, _ARMED = _ARMED, fault
    try:
        yield fault
    finally:
        _ARMED = previous


def armed_fault() -> FaultInjection | None:
    """The drill armed by :func:`fault_drill` in this process, if any."""
    return _ARMED


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
    fault: FaultInjection | None = Field(None, description="The armed fault drill, if any (see fault_drill).")


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
