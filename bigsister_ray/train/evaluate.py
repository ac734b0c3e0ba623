"""``bigsister evaluate``: honest numbers for a checkpoint, and its calibration for alerting.

:func:`evaluate` scores one split of a prepared dataset (or, with ``source=``, a raw ``aihub``/``folders``/
``manifest`` dataset decoded directly) and writes into ``out``:

* ``metrics.json``: ``accuracy``, ``macro_f1``, ``labels``, ``per_class`` (precision, recall, F1, support),
  ``confusion`` (rows = true class), ``baselines`` (majority class and uniform chance on the same clips),
  ``ece`` (after temperature scaling) and ``ece_uncalibrated``, ``reliability`` bins, ``temperature`` and the
  per-class alert ``thresholds`` with the precision and recall they give on these clips;
* ``report.md``, ``confusion.png`` and ``reliability.png``.

When the prepared dataset has a validation split, :func:`calibrate_checkpoint` first fits the temperature
(validation NLL) and, for each abnormal class, the lowest threshold whose alerts reach
``train.target_precision`` on validation, and stores both in the checkpoint (``update_checkpoint_meta``), so
serving and ``bigsister detect`` use them with nothing else. Shards are streamed batch by batch with pyarrow;
nothing holds the dataset.

The checkpoint, the prepared dataset and ``out`` may each be a local path or an ``s3://`` / ``gs://`` URI
(:mod:`bigsister_ray.storage`): a remote checkpoint is calibrated on a local copy and uploaded back whole
(:func:`~bigsister_ray.models.checkpoint.checkpoint_file`), shards are read through the store's pyarrow
filesystem, and the report is written to a local temporary folder and uploaded file by file. A raw dataset
(``source=``) is decoded from files, so it must be a local or mounted path.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from pydantic import BaseModel, ConfigDict

from bigsister_ray import storage
from bigsister_ray.config import Settings
from bigsister_ray.errors import CheckpointError, DataError

__all__ = [
    "EvalResult",
    "evaluate",
    "calibrate_checkpoint",
    "predict_prepared",
    "predict_source",
    "plot_confusion",
    "plot_reliability",
]


class EvalResult(BaseModel):
    """Where the report went and the headline numbers."""

    model_config = ConfigDict(extra="forbid")

    out_dir: Path | str
    metrics_path: Path | str
    report_path: Path | str
    split: str
    n: int
    accuracy: float
    macro_f1: float
    majority_accuracy: float
    majority_macro_f1: float
    ece: float

    def __str__(self) -> str:
        return (f"{self.split}: {self.n} clips, accuracy {self.accuracy:.3f}, macro-F1 {self.macro_f1:.3f} "
                f"(majority class {self.majority_accuracy:.3f}, macro-F1 {self.majority_macro_f1:.3f}), ECE {self.ece:.3f}\n"
                f"report: {storage.redact_uri(self.report_path)}\nmetrics: {storage.redact_uri(self.metrics_path)}")


def _label_map(data_labels: list[str], model_labels: list[str], where: str) -> np.ndarray:
    """Index map from the dataset's label_idx to the model's output index (-1: class unknown to the model)."""
    lut = np.array([model_labels.index(x) if x in model_labels else -1 for x in data_labels], dtype=np.int64)
    if (lut < 0).all():
        raise DataError(f"{where}: none of the dataset's classes {data_labels} is among the checkpoint's labels {model_labels}")
    return lut


def _device(settings: Settings) -> Any:
    import torch

    return torch.device("cuda" if settings.train.use_gpu and torch.cuda.is_available() else "cpu")


def _forward(model: Any, clips: np.ndarray, meta: Any, device: Any, bf16: bool) -> np.ndarray:
    import torch

    from bigsister_ray.clip import to_model_input

    x = to_model_input(clips, meta.norm, meta.clip.input).to(device)
    with torch.inference_mode():
        if bf16 and device.type == "cuda":
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                logits = model(x)
        else:
            logits = model(x)
    return logits.float().cpu().numpy()


def _prepared_location(data: str | Path) -> Path | str:
    """A prepared dataset's location: a Path for a local folder, the URI string for an object store."""
    return os.fspath(data) if storage.is_remote(data) else Path(data).expanduser()


def _iter_prepared(data: Path | str, split: str, batch_size: int) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    from bigsister_ray.data.prepared import read_manifest

    manifest = read_manifest(data)
    paths = manifest.shard_paths(data, split)
    if not paths:
        have = sorted({s.split for s in manifest.shards})
        raise DataError(f"{storage.redact_uri(data)}: no {split!r} shards (the manifest has splits {have}); "
                        "pass --split with one of them")
    fs, base = None, ""
    if storage.is_remote(data):
        fs, base = storage.resolve(data)  # once: one filesystem for every shard
        paths = [f"{base}/{sh.path}" for sh in manifest.shards if sh.split == split]
    for path in paths:
        try:
            pf = pq.ParquetFile(path, filesystem=fs)
        except OSError as err:
            where = path if fs is None else f"{fs.type_name}://{path}"
            raise DataError(f"{where}: cannot read shard ({err}); run `bigsister prepare` again") from err
        with pf:
            for batch in pf.iter_batches(batch_size=batch_size, columns=["clip_id", "label_idx", "frames"]):
                yield batch.to_pydict()


def predict_prepared(model: Any, meta: Any, data: Path | str, split: str, settings: Settings,
                     batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Logits ``N x C``, true model-label indices ``N`` and clip ids of one split of a prepared dataset.

    Clips whose class the checkpoint does not know are left out (reported by the caller via the count)."""
    from bigsister_ray.data.prepared import frames_from_bytes, read_manifest

    manifest = read_manifest(data)
    if manifest.clip.frames != meta.clip.frames or manifest.clip.size != meta.clip.size:
        raise DataError(
            f"{storage.redact_uri(data)}: clips are {manifest.clip.frames}x{manifest.clip.size}x{manifest.clip.size} but the checkpoint "
            f"was trained on {meta.clip.frames}x{meta.clip.size}x{meta.clip.size}: prepare the data with the checkpoint's clip spec"
        )
    lut = _label_map(manifest.labels, meta.labels, storage.redact_uri(data))
    device = _device(settings)
    model.to(device).eval()
    logits, targets, ids = [], [], []
    for batch in _iter_prepared(data, split, batch_size or max(8, settings.train.batch_size)):
        y = lut[np.asarray(batch["label_idx"], dtype=np.int64)]
        keep = np.flatnonzero(y >= 0)
        if keep.size == 0:
            continue
        clips = np.stack([frames_from_bytes(batch["frames"][i], manifest.clip) for i in keep])
        logits.append(_forward(model, clips, meta, device, settings.train.bf16))
        targets.append(y[keep])
        ids.extend(batch["clip_id"][i] for i in keep)
    c = len(meta.labels)
    if not logits:
        return np.zeros((0, c), np.float32), np.zeros(0, np.int64), []
    return np.concatenate(logits), np.concatenate(targets), ids


def predict_source(model: Any, meta: Any, source: str, root: Path, settings: Settings,
                   batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str], list[dict[str, Any]]]:
    """Logits, targets and clip ids of every clip of a raw dataset (all splits: it is evaluation data),
    decoded with the checkpoint's ClipSpec; plus the inputs that failed (``InputError`` dicts)."""
    from bigsister_ray.data.index import build_index
    from bigsister_ray.data.readers import read_source
    from bigsister_ray.data.clips import iter_clip_frames

    dumped = settings.model_dump(mode="python")
    dumped["clip"] = meta.clip.model_dump()
    dumped["task"] = {**dumped["task"], "labels": list(meta.labels)}
    eval_settings = Settings.model_validate(dumped)
    videos, errors = read_source(source, Path(root), eval_settings)
    clips = build_index(videos, eval_settings)
    by_video: dict[str, list[Any]] = {}
    for c in clips:
        by_video.setdefault(c.video, []).append(c)
    device = _device(settings)
    model.to(device).eval()
    bs = batch_size or max(8, settings.train.batch_size)
    logits, targets, ids, pending, pending_y, pending_ids = [], [], [], [], [], []
    failed = [e.model_dump() for e in errors]

    def flush() -> None:
        if pending:
            logits.append(_forward(model, np.stack(pending), meta, device, settings.train.bf16))
            targets.append(np.array(pending_y, dtype=np.int64))
            ids.extend(pending_ids)
            pending.clear(), pending_y.clear(), pending_ids.clear()

    for video in videos:
        for clip, frames in iter_clip_frames(video, by_video.get(video.path, []), meta.clip):
            if not isinstance(frames, np.ndarray):
                failed.append(frames.model_dump())
                continue
            if clip.label not in meta.labels:
                continue
            pending.append(frames)
            pending_y.append(meta.labels.index(clip.label))
            pending_ids.append(clip.clip_id)
            if len(pending) >= bs:
                flush()
    flush()
    c = len(meta.labels)
    if not logits:
        return np.zeros((0, c), np.float32), np.zeros(0, np.int64), [], failed
    return np.concatenate(logits), np.concatenate(targets), ids, failed


def calibrate_checkpoint(checkpoint: Path | str, data: Path | str, settings: Settings) -> dict[str, Any]:
    """Fit the temperature and per-abnormal-class thresholds on the ``val`` split; store them in the checkpoint.

    Returns ``{temperature, thresholds, detail, val_clips, ece_before, ece_after}``. ``detail[label]`` says
    whether the target precision was reached; a class without validation clips gets no threshold (alerting
    then falls back to the configured default). ``checkpoint`` and ``data`` may be URIs (a remote checkpoint
    is updated on a local copy and uploaded back)."""
    from bigsister_ray.models.checkpoint import checkpoint_file

    if storage.is_remote(checkpoint):
        with checkpoint_file(checkpoint, write_back=True) as local:
            return calibrate_checkpoint(local, data, settings)
    from bigsister_ray.labels import NORMAL
    from bigsister_ray.models.checkpoint import load_checkpoint, update_checkpoint_meta
    from bigsister_ray.train import metrics as M

    data = _prepared_location(data)
    loaded = load_checkpoint(checkpoint)
    meta = loaded.meta
    logits, y, _ = predict_prepared(loaded.model, meta, data, "val", settings)
    if y.size == 0:
        raise DataError(f"{storage.redact_uri(data)}: the val split has no clips of the checkpoint's classes {meta.labels}; cannot calibrate")
    temperature = M.fit_temperature(logits, y)
    probs = M.softmax(logits, temperature)
    target = settings.train.target_precision
    thresholds: dict[str, float] = {}
    detail: dict[str, Any] = {}
    for k, label in enumerate(meta.labels):
        if label == NORMAL:
            continue
        r = M.threshold_for_precision(probs[:, k], y == k, target)
        detail[label] = r
        if r["threshold"] is not None:
            thresholds[label] = float(min(1.0, max(0.0, r["threshold"])))
    ece_before = M.expected_calibration_error(M.softmax(logits), y)
    ece_after = M.expected_calibration_error(probs, y)
    calibration = {
        "temperature": temperature,
        "thresholds": thresholds,
        "target_precision": target,
        "detail": detail,
        "val_clips": int(y.size),
        "ece_before": ece_before,
        "ece_after": ece_after,
    }
    update_checkpoint_meta(
        checkpoint,
        temperature=temperature,
        thresholds=thresholds,
        metrics={**meta.metrics, "calibration": calibration},
    )
    return calibration


def plot_confusion(confusion: np.ndarray, labels: list[str], path: Path, title: str) -> Path:
    """Confusion matrix PNG: counts, and colour by row-normalised recall."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    size = max(4.0, 0.7 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_reliability(bins: list[dict[str, float]], path: Path, title: str) -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal, with clip counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    centres = [(b["lo"] + b["hi"]) / 2 for b in bins]
    width = bins[0]["hi"] - bins[0]["lo"] if bins else 0.1
    acc = [b["accuracy"] if b["count"] else 0.0 for b in bins]
    ax.bar(centres, acc, width=width * 0.9, color="tab:blue", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    for c, b in zip(centres, bins):
        if b["count"]:
            ax.plot(c, b["confidence"], "r.", markersize=8)
            ax.text(c, min(0.97, b["accuracy"] + 0.02), str(b["count"]), ha="center", fontsize=7)
    ax.plot([], [], "r.", label="mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _fmt(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def _report_md(m: dict[str, Any]) -> str:
    labels = m["labels"]
    b = m["baselines"]
    lines = [
        f"# Evaluation: {m['split']}",
        "",
        f"- checkpoint: `{m['checkpoint']}` (model `{m['model_name']}`, epoch {m.get('checkpoint_epoch')})",
        f"- data: `{m['data']}`" + (f" (raw `{m['source']}` dataset)" if m.get("source") else ""),
        f"- clips scored: {m['n']}" + (f"; inputs that failed: {m['failed_inputs']}" if m.get("failed_inputs") else ""),
        f"- temperature: {m['temperature']:.3f} (softmax(logits / T), fitted on validation)",
        "",
        "## Against the baselines",
        "",
        "| | accuracy | macro-F1 |",
        "|---|---|---|",
        f"| **model** | **{m['accuracy']:.3f}** | **{m['macro_f1']:.3f}** |",
        f"| majority class (`{b['majority']['label']}`, most frequent in training) | {b['majority']['accuracy']:.3f} | {b['majority']['macro_f1']:.3f} |",
        f"| chance (uniform guess over {len(labels)} classes, expected) | {b['chance']['accuracy']:.3f} | {b['chance']['macro_f1']:.3f} |",
        "",
        "## Per class",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for label in labels:
        pc = m["per_class"][label]
        lines.append(f"| {label} | {pc['precision']:.3f} | {pc['recall']:.3f} | {pc['f1']:.3f} | {pc['support']} |")
    lines += ["", "## Confusion matrix (rows: true, columns: predicted)", "", "| | " + " | ".join(labels) + " |",
              "|---|" + "---|" * len(labels)]
    for label, row in zip(labels, m["confusion"]):
        lines.append(f"| **{label}** | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "![confusion matrix](confusion.png)", "", "## Calibration", "",
              f"Expected calibration error (10 bins): {m['ece']:.3f} with the temperature, "
              f"{m['ece_uncalibrated']:.3f} without.", "", "![reliability diagram](reliability.png)", ""]
    if m["thresholds"]:
        lines += [
            f"## Alert thresholds (target precision {m['target_precision']:.2f}, chosen on validation)",
            "",
            "| class | threshold | validation precision | validation recall | here: precision | here: recall | alerts |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, t in m["thresholds"].items():
            v = t.get("validation") or {}
            lines.append(f"| {label} | {t['threshold']:.3f} | {_fmt(v.get('precision', '-'))} | {_fmt(v.get('recall', '-'))} "
                         f"| {t['precision']:.3f} | {t['recall']:.3f} | {t['alerts']} |")
        unreached = [k for k, t in m["thresholds"].items() if (t.get("validation") or {}).get("reached") is False]
        if unreached:
            lines += ["", f"Target precision not reached on validation for: {', '.join(unreached)} "
                          "(the threshold with the best validation precision is stored)."]
        lines.append("")
    return "\n".join(lines)


def evaluate(checkpoint: Path | str, data: Path | str, out: Path | str, settings: Settings, split: str = "test",
             source: str | None = None) -> EvalResult:
    """Score ``checkpoint`` on ``split`` of the prepared dataset ``data`` (or on the raw dataset at ``data``
    when ``source`` is ``aihub``/``folders``/``manifest``) and write the report into ``out``.

    ``checkpoint``, a prepared ``data`` and ``out`` may be ``s3://`` / ``gs://`` URIs; a raw ``data`` must be a
    local or mounted path. The calibration fitted on validation is stored back into the checkpoint, wherever
    it lives."""
    from bigsister_ray.models.checkpoint import checkpoint_file

    if source is not None:
        from bigsister_ray.data.pipeline import check_local_root

        check_local_root(data, what="--data (a raw dataset, with --source)")
    with checkpoint_file(checkpoint, write_back=True) as local_checkpoint:
        shown = storage.redact_uri(checkpoint) if storage.is_remote(checkpoint) else str(local_checkpoint)
        if not storage.is_remote(out):
            return _evaluate(local_checkpoint, shown, data, Path(out).expanduser(), settings, split, source)
        with tempfile.TemporaryDirectory(prefix="bigsister-eval-") as tmp:
            res = _evaluate(local_checkpoint, shown, data, Path(tmp), settings, split, source)
            uploaded = {}
            for f in sorted(Path(tmp).iterdir()):  # one whole upload per file: none appears half-written
                uploaded[f.name] = storage.join(out, f.name)
                storage.upload(f, uploaded[f.name])
    return res.model_copy(update={"out_dir": os.fspath(out), "metrics_path": uploaded["metrics.json"],
                                  "report_path": uploaded["report.md"]})


def _evaluate(checkpoint: Path, shown_checkpoint: str, data: Path | str, out: Path, settings: Settings, split: str,
              source: str | None) -> EvalResult:
    """:func:`evaluate` with a local checkpoint file and a local output folder."""
    from bigsister_ray.labels import NORMAL
    from bigsister_ray.models.checkpoint import load_checkpoint, read_checkpoint_meta
    from bigsister_ray.train import metrics as M

    t0 = time.perf_counter()
    data = Path(data).expanduser() if source is not None else _prepared_location(data)
    calibration = None
    train_counts: dict[str, int] = {}
    failed: list[dict[str, Any]] = []
    if source is None:
        from bigsister_ray.data.prepared import read_manifest

        manifest = read_manifest(data)
        train_counts = manifest.counts.get("train", {})
        if manifest.shard_paths(data, "val") and split != "val":
            calibration = calibrate_checkpoint(checkpoint, data, settings)
        loaded = load_checkpoint(checkpoint)
        meta = loaded.meta
        logits, y, _ = predict_prepared(loaded.model, meta, data, split, settings)
    else:
        loaded = load_checkpoint(checkpoint)
        meta = loaded.meta
        logits, y, _, failed = predict_source(loaded.model, meta, source, data, settings)
    if y.size == 0:
        raise DataError(f"{storage.redact_uri(data)}: no clips of the checkpoint's classes {meta.labels} in "
                        f"{source or split!r}: nothing to evaluate")
    meta = read_checkpoint_meta(checkpoint)
    labels = list(meta.labels)
    probs = M.softmax(logits, meta.temperature)
    pred = probs.argmax(axis=1)
    cm = M.confusion_matrix(y, pred, len(labels))
    report = M.classification_report(cm, labels)
    train_support = [train_counts.get(label, 0) for label in labels]
    majority = int(np.argmax(train_support)) if sum(train_support) > 0 else None
    thresholds: dict[str, Any] = {}
    val_detail = (meta.metrics.get("calibration") or {}).get("detail", {})
    for label, thr in meta.thresholds.items():
        k = labels.index(label)
        alerts = probs[:, k] >= thr
        tp = int((alerts & (y == k)).sum())
        thresholds[label] = {
            "threshold": thr,
            "precision": tp / int(alerts.sum()) if alerts.any() else 0.0,
            "recall": tp / int((y == k).sum()) if (y == k).any() else 0.0,
            "alerts": int(alerts.sum()),
            "validation": val_detail.get(label),
        }
    metrics: dict[str, Any] = {
        **report,
        "split": source or split,
        "checkpoint": shown_checkpoint,
        "model_name": meta.model_name,
        "checkpoint_epoch": meta.epoch,
        "data": storage.redact_uri(data),
        "source": source,
        "failed_inputs": len(failed),
        "baselines": {
            "majority": M.majority_baseline(cm, labels, majority),
            "chance": M.chance_baseline(cm, labels),
        },
        "temperature": meta.temperature,
        "ece": M.expected_calibration_error(probs, y),
        "ece_uncalibrated": M.expected_calibration_error(M.softmax(logits), y),
        "reliability": M.reliability_bins(probs, y),
        "nll": M.negative_log_likelihood(logits, y, meta.temperature),
        "target_precision": settings.train.target_precision,
        "thresholds": thresholds,
        "abnormal_labels": [x for x in labels if x != NORMAL],
        "calibration": calibration,
        "seconds": None,
    }
    out.mkdir(parents=True, exist_ok=True)
    plot_confusion(cm, labels, out / "confusion.png", f"{meta.model_name} on {source or split} (n={int(y.size)})")
    plot_reliability(metrics["reliability"], out / "reliability.png", f"reliability (ECE {metrics['ece']:.3f})")
    metrics["seconds"] = time.perf_counter() - t0
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2, default=str))
    if failed:
        (out / "failed_inputs.jsonl").write_text("".join(json.dumps(f, default=str) + "\n" for f in failed))
    report_path = out / "report.md"
    report_path.write_text(_report_md(metrics))
    return EvalResult(
        out_dir=out, metrics_path=metrics_path, report_path=report_path, split=source or split, n=int(y.size),
        accuracy=report["accuracy"], macro_f1=report["macro_f1"],
        majority_accuracy=metrics["baselines"]["majority"]["accuracy"],
        majority_macro_f1=metrics["baselines"]["majority"]["macro_f1"], ece=metrics["ece"])
