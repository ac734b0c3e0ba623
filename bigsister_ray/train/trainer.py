"""``bigsister train``: Ray Train (TorchTrainer) over the shards of a prepared dataset.

:func:`train` reads the prepared dataset's manifest (labels, ClipSpec, class counts, fingerprint), streams
the train and validation shards with ``ray.data.read_parquet`` (each worker gets its own split through
``ray.train.get_dataset_shard``: no worker, and not the driver, holds the dataset), and runs
:func:`bigsister_ray.train.loop.train_loop_per_worker` on ``train.workers`` workers.

The run lives in ``OUT`` (Ray's storage ``OUT.parent``, run name ``OUT.name``; with ``train.name`` set the
run is ``OUT/<name>``). ``DATA`` and ``OUT`` are local folders or ``s3://`` / ``gs://`` URIs
(:mod:`bigsister_ray.storage`): shards are streamed through the resolved pyarrow filesystem, Ray Train gets it as
its ``storage_filesystem``, and ``history.jsonl``, ``result.json`` and ``best/model.pt`` are written into the
remote run folder (``history.jsonl`` is rewritten whole per record: object stores have no append).

Starting a run whose folder already holds checkpoints resumes it at the next epoch (on a bucket too); a worker
that dies restarts from the last checkpoint (``train.max_failures`` times). After the run the best
epoch by validation macro-F1 is copied to ``OUT/best/model.pt`` and calibrated on validation (temperature
and per-class alert thresholds, :func:`bigsister_ray.train.evaluate.calibrate_checkpoint`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel, ConfigDict, Field

from bigsister_ray import storage
from bigsister_ray.config import Settings
from bigsister_ray.errors import BigSisterError, DataError
from bigsister_ray.runtime import ensure_ray
from bigsister_ray.train.loop import HISTORY_FILE, LoopConfig, armed_fault, class_weights, train_loop_per_worker

__all__ = ["TrainingError", "TrainResult", "train", "ensure_ray", "read_history", "shard_dataset", "BEST_DIR"]

BEST_DIR = "best"
SHARD_READ_COLUMNS = ("frames", "label_idx")
SHARD_READ_ROWS = 32


class TrainingError(BigSisterError):
    """The Ray Train run failed (after using up ``train.max_failures`` restarts)."""


class TrainResult(BaseModel):
    """What a training run produced."""

    model_config = ConfigDict(extra="forbid")

    name: str
    run_dir: Path | str = Field(description="The run folder: a Path, or a URI string for an object store.")
    best_checkpoint: Path | str | None = Field(description="OUT/best/model.pt (a Path, or a URI string).")
    best_epoch: int | None
    best_metrics: dict[str, Any]
    last_epoch: int
    epochs_this_call: int
    resumed_from_epoch: int | None
    stopped_early: bool
    calibration: dict[str, Any] | None
    wall_s: float

    def __str__(self) -> str:
        m = self.best_metrics
        score = ", ".join(f"{k} {m[k]:.3f}" for k in ("val_accuracy", "val_macro_f1", "train_accuracy") if k in m)
        lines = [
            f"run {self.name}: {self.epochs_this_call} epochs in {self.wall_s:.1f} s (last epoch {self.last_epoch}"
            + (f", resumed from epoch {self.resumed_from_epoch}" if self.resumed_from_epoch is not None else "")
            + (", stopped early" if self.stopped_early else "") + ")",
            f"best: epoch {self.best_epoch} ({score}) -> "
            + (storage.redact_uri(self.best_checkpoint) if self.best_checkpoint is not None else "None"),
        ]
        if self.calibration:
            lines.append(f"calibration on validation: temperature {self.calibration.get('temperature', 1.0):.3f}, "
                         f"thresholds {self.calibration.get('thresholds', {})}")
        return "\n".join(lines)


def read_history(run_dir: Path | str) -> list[dict[str, Any]]:
    """The run's ``history.jsonl`` (epochs and resume events, in order); [] when absent. ``run_dir`` may be a URI."""
    if storage.is_remote(run_dir):
        path: Path | str = storage.join(run_dir, HISTORY_FILE)
        try:
            text = storage.read_text(path)
        except FileNotFoundError:
            return []
    else:
        path = Path(run_dir) / HISTORY_FILE
        if not path.exists():
            return []
        text = path.read_text()
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{storage.redact_uri(path)}:{n}: not JSON ({err.msg}); the file was cut short, "
                                "delete that line") from err
    return out


def _read_shards(batch: Any, filesystem: Any = None) -> Iterator[Any]:
    """Ray Data UDF: a batch of shard paths -> pyarrow tables of (frames, label_idx), one row group at a time.

    The paths are local, or paths on ``filesystem`` (the pyarrow filesystem the driver resolved, e.g. S3)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in batch.column("path").to_pylist():
        try:
            pf = pq.ParquetFile(path, filesystem=filesystem)
        except OSError as err:
            where = path if filesystem is None else f"{filesystem.type_name}://{path}"
            raise DataError(f"{where}: cannot read shard ({err}); run `bigsister prepare` again") from err
        with pf:
            for rb in pf.iter_batches(batch_size=SHARD_READ_ROWS, columns=list(SHARD_READ_COLUMNS)):
                yield pa.Table.from_batches([rb])


def shard_dataset(paths: list[str], data_cpus: float, shuffle: bool, max_tasks: int = 2,
                  filesystem: Any = None) -> Any:
    """A Ray Data dataset of ``frames`` and ``label_idx`` streamed from prepared shards.

    Built from the list of shard paths (one block per shard) and a reading map task that reserves only
    ``data_cpus`` (default 0), at most ``max_tasks`` at once: Ray Data leaves the training workers' CPUs out of
    its budget, so with two workers on a two-core machine any read that asks for CPU is never scheduled
    (``read_parquet`` also first runs a file-listing task that asks for a whole CPU).
    ``shuffle`` randomises the shard order of every epoch; the workers add a local shuffle buffer.
    ``paths`` are local paths or, with ``filesystem`` (a pyarrow filesystem resolved on the driver, e.g. S3),
    paths on it: the filesystem (endpoint, region, options) travels with the read tasks, and credentials come
    from each node's own environment unless the URI it was resolved from carries them.
    """
    import ray.data

    ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=max(1, len(paths)))
    if shuffle:
        ds = ds.randomize_block_order()
    ds = ds.map_batches(_read_shards, batch_size=1, batch_format="pyarrow", num_cpus=data_cpus,
                        compute=ray.data.TaskPoolStrategy(size=max_tasks),
                        fn_kwargs={"filesystem": filesystem} if filesystem is not None else None)
    ds.context.enable_progress_bars = False  # one log line per epoch from the loop instead
    return ds


def _local_or_uri(location: str | Path) -> Path | str:
    """A local location as an absolute, resolved Path (``file://`` understood); a remote one as its URI string."""
    s = os.fspath(location)
    if storage.is_remote(s):
        return s
    if s.startswith("file://"):
        s = storage.resolve(s)[1]
    return Path(s).expanduser().resolve()


def _run_location(out: Path | str, settings: Settings) -> tuple[Path | str, str]:
    out = _local_or_uri(out)
    if settings.train.name:
        return out, settings.train.name
    if isinstance(out, str):
        return storage.parent(out), storage.basename(out)
    return out.parent, out.name


def _missing_shards(paths: list[str], filesystem: Any, base: str) -> list[str]:
    """The shard paths (on ``filesystem``, under the prepared folder ``base``) that do not exist."""
    import pyarrow.fs as pafs

    if isinstance(filesystem, pafs.LocalFileSystem):
        return [p for p in paths if not Path(p).exists()]
    selector = pafs.FileSelector(f"{base}/shards", recursive=True, allow_not_found=True)
    found = {i.path for i in filesystem.get_file_info(selector) if i.type == pafs.FileType.File}  # one listing
    return [p for p in paths if p not in found]


def train(data: Path | str, out: Path | str, settings: Settings) -> TrainResult:
    """Train ``settings.model.name`` on the prepared dataset ``data``; the run folder is ``out``.

    Both are local folders or ``s3://`` / ``gs://`` URIs. For a URI, the nodes take credentials from their own
    environment (instance profile, ``AWS_*`` / Google application-default credentials) and, for S3-compatible
    stores, the endpoint from ``AWS_ENDPOINT_URL_S3`` or ``?endpoint_override=`` in the URI.

    A fault drill armed with :func:`~bigsister_ray.train.loop.fault_drill` kills one worker once.
    Raises :class:`ConfigError` when the model cannot take the dataset's clips, :class:`DataError` when the
    dataset has no training shards, :class:`TrainingError` when the run fails for good.
    """
    import ray.data
    import ray.exceptions
    import ray.train
    from ray.train.torch import TorchTrainer

    from bigsister_ray.data.prepared import read_manifest
    from bigsister_ray.models import get_model_spec

    t0 = time.perf_counter()
    data = _local_or_uri(data)
    shown_data = storage.redact_uri(data)
    manifest = read_manifest(data)
    tc = settings.train
    spec = get_model_spec(settings.model.name)
    spec.check_clip(manifest.clip)
    data_fs, data_base = storage.resolve(data)
    if isinstance(data, str):  # object store: paths on its filesystem, resolved once here on the driver
        train_paths = [f"{data_base}/{sh.path}" for sh in manifest.shards if sh.split == "train"]
        val_paths = [f"{data_base}/{sh.path}" for sh in manifest.shards if sh.split == "val"]
        read_fs = data_fs
    else:
        train_paths = manifest.shard_paths(data, "train")
        val_paths = manifest.shard_paths(data, "val")
        read_fs = None
    if not train_paths:
        raise DataError(f"{shown_data}: the manifest lists no train shards (counts: {manifest.counts}); "
                        "prepare a dataset whose split fractions give the train split some groups")
    missing = _missing_shards(train_paths + val_paths, data_fs, data_base)
    if missing:
        raise DataError(f"{shown_data}: {len(missing)} shard(s) in the manifest are missing, e.g. "
                        f"{missing[0]}; run `bigsister prepare` again")
    if tc.workers * tc.batch_size > sum(manifest.counts.get("train", {}).values() or [0]) and manifest.counts.get("train"):
        print(f"warning: {tc.workers} workers x batch {tc.batch_size} exceeds the {sum(manifest.counts['train'].values())} "
              "training clips: each worker gets less than one batch per epoch", flush=True)
    if not val_paths:
        print("warning: no validation shards: the best checkpoint is chosen by training macro-F1 and is not calibrated", flush=True)

    run_storage, name = _run_location(out, settings)
    remote_run = isinstance(run_storage, str)
    run_dir: Path | str = storage.join(run_storage, name) if remote_run else run_storage / name
    shown_run = storage.redact_uri(run_dir)
    if not remote_run:
        run_dir.mkdir(parents=True, exist_ok=True)
    history_before = read_history(run_dir)
    last_before = max((h["epoch"] for h in history_before if h.get("event") == "epoch"), default=0)

    ensure_ray(settings, train=True, include_dashboard=False)
    storage.check_shared_storage(data, what="the prepared dataset")  # workers on every node read the shards
    storage.check_shared_storage(run_storage, what="the run folder")  # Ray Train writes checkpoints from the workers
    datasets = {"train": shard_dataset(train_paths, tc.data_cpus, shuffle=True, max_tasks=tc.data_read_tasks,
                                       filesystem=read_fs)}
    if val_paths:
        datasets["val"] = shard_dataset(val_paths, tc.data_cpus, shuffle=False, max_tasks=tc.data_read_tasks,
                                        filesystem=read_fs)

    weights = None
    if tc.balance == "weighted_loss":
        weights = class_weights(manifest.counts.get("train", {}), manifest.labels)
    loop_cfg = LoopConfig(
        settings=settings.for_workers().model_dump(mode="json"),  # the loop needs no secret (see for_workers)
        labels=list(manifest.labels),
        clip=manifest.clip,
        data_fingerprint=manifest.fingerprint,
        class_weights=weights,
        has_val=bool(val_paths),
        run_dir=str(run_dir),
        fault=armed_fault(),
    )
    resources = {"CPU": tc.cpus_per_worker, **tc.worker_resources}
    if tc.use_gpu:
        resources["GPU"] = 1.0
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_cfg.model_dump(mode="json"),
        scaling_config=ray.train.ScalingConfig(num_workers=tc.workers, use_gpu=tc.use_gpu, resources_per_worker=resources,
                                              placement_strategy=tc.placement_strategy),
        run_config=ray.train.RunConfig(
            name=name,
            # remote: storage_path on the explicit pyarrow filesystem, so the endpoint and options in the URI
            # reach the controller and the workers too
            **(storage.train_storage(run_storage) if remote_run else {"storage_path": str(run_storage)}),
            failure_config=ray.train.FailureConfig(max_failures=tc.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=tc.checkpoints_to_keep,
                checkpoint_score_attribute="score",
                checkpoint_score_order="max",
            ),
        ),
        datasets=datasets,
    )
    print(f"training {settings.model.name} on {shown_data} ({', '.join(f'{k}: {sum(v.values())}' for k, v in manifest.counts.items())} clips, "
          f"labels {manifest.labels}) with {tc.workers} worker(s) -> {shown_run}", flush=True)
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as err:
        raise TrainingError(f"training run {name} in {shown_run} failed: {err}") from err
    except ray.exceptions.RayError as err:  # the Ray cluster itself went away (raylet killed, node lost)
        raise TrainingError(
            f"training run {name} in {shown_run} was interrupted by a Ray failure ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); run the same command again: it resumes from the "
            "last checkpoint in that folder"
        ) from err
    if result.error is not None:
        raise TrainingError(f"training run {name} in {shown_run} failed: {result.error}") from result.error

    history = read_history(run_dir)
    new = history[len(history_before):]
    epochs_new = [h for h in new if h.get("event") == "epoch"]
    resumed = [h for h in new if h.get("event") == "resumed"]
    all_epochs = [h for h in history if h.get("event") == "epoch"]
    last_epoch = max((h["epoch"] for h in all_epochs), default=last_before)

    best_ckpt, best_metrics = None, {}
    candidates = [(c, m) for c, m in (result.best_checkpoints or []) if c is not None and "score" in m]
    if candidates:
        best_ckpt, best_metrics = max(candidates, key=lambda cm: (cm[1]["score"], -cm[1]["epoch"]))
    best_path: Path | str | None = None
    calibration = None
    out_loc = _local_or_uri(out)
    if best_ckpt is not None and isinstance(out_loc, Path):
        best_dir = out_loc / BEST_DIR
        best_dir.mkdir(parents=True, exist_ok=True)
        best_path = best_dir / "model.pt"
        with best_ckpt.as_directory() as d:
            shutil.copyfile(Path(d) / "model.pt", best_path.with_suffix(".pt.tmp"))
        best_path.with_suffix(".pt.tmp").replace(best_path)
        if val_paths:
            from bigsister_ray.train.evaluate import calibrate_checkpoint

            calibration = calibrate_checkpoint(best_path, data, settings)
    elif best_ckpt is not None:
        # object store: calibrate a local copy, then upload it whole to OUT/best/model.pt
        best_path = storage.join(out_loc, BEST_DIR, "model.pt")
        with tempfile.TemporaryDirectory(prefix="bigsister-best-") as tmp, best_ckpt.as_directory() as d:
            local = Path(tmp) / "model.pt"
            shutil.copyfile(Path(d) / "model.pt", local)
            if val_paths:
                from bigsister_ray.train.evaluate import calibrate_checkpoint

                calibration = calibrate_checkpoint(local, data, settings)
            storage.upload(local, best_path)
    stopped = bool(all_epochs) and last_epoch < tc.epochs  # fit() returned before the last epoch: early stopping
    res = TrainResult(
        name=name,
        run_dir=run_dir,
        best_checkpoint=best_path,
        best_epoch=int(best_metrics["epoch"]) if best_metrics else None,
        best_metrics={k: v for k, v in best_metrics.items() if isinstance(v, (int, float))},
        last_epoch=int(last_epoch),
        epochs_this_call=len(epochs_new),
        resumed_from_epoch=int(resumed[0]["from_epoch"]) if resumed else None,
        stopped_early=stopped,
        calibration=calibration,
        wall_s=time.perf_counter() - t0,
    )
    if remote_run:
        storage.write_text(storage.join(run_dir, "result.json"), res.model_copy(update={
            "run_dir": storage.redact_uri(run_dir), "best_checkpoint": storage.redact_uri(best_path) if best_path else None,
        }).model_dump_json(indent=2))
    else:
        (run_dir / "result.json").write_text(res.model_dump_json(indent=2))
    return res
