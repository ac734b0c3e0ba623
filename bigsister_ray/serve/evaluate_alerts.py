"""Alert-level evaluation: what the operator will live with, not per-clip accuracy.

``bigsister evaluate-alerts`` replays long annotated videos (AI Hub layout; by default synthetic ones of
several minutes with known events) through a checkpoint and the alert rules, and reports:

* event precision (alerts that overlap a true event of their class) and event recall (true events that got
  an alert of their class),
* false alarms per camera-hour (alerts that overlap no true event of their class),
* median time to alert (from the annotated start of the event to the end of the window that opened it),

for the configured rules, and for a sweep over thresholds x k-of-n, plotted as a trade-off curve. Windows are
scored once per video; the sweep only replays the rules (:func:`run_rules`, :func:`score_detections`: pure).
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from bigsister_ray.alerts.rules import RuleEngine, WindowScore
from bigsister_ray.config import AlertRule, AlertsConfig, Settings
from bigsister_ray.errors import DataError

__all__ = [
    "GroundTruth",
    "Detection",
    "AlertMetrics",
    "AlertEvalSummary",
    "run_rules",
    "score_detections",
    "sweep_rules",
    "evaluate_alerts",
    "DEFAULT_THRESHOLDS",
    "DEFAULT_KN",
]

log = logging.getLogger(__name__)

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_KN: tuple[tuple[int, int], ...] = ((1, 1), (2, 3), (3, 5), (4, 6))


@dataclass(frozen=True)
class GroundTruth:
    """An annotated event in one video (seconds)."""

    video: str
    label: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Detection:
    """An incident the rules opened: ``alert_s`` is when the alert would have gone out (stream seconds)."""

    video: str
    label: str
    start_s: float
    end_s: float
    alert_s: float
    peak_score: float


@dataclass
class AlertMetrics:
    """Event-level figures of one rule setting over a set of videos."""

    detections: int
    true_positives: int
    false_alarms: int
    events: int
    events_found: int
    precision: float | None
    recall: float | None
    f1: float | None
    false_alarms_per_hour: float
    median_time_to_alert_s: float | None
    hours: float


@dataclass
class AlertEvalSummary:
    """What :func:`evaluate_alerts` wrote and found."""

    out: Path
    report: Path
    metrics_json: Path
    plot: Path
    videos: int
    hours: float
    events: int
    current: AlertMetrics
    sweep: list[dict[str, Any]] = field(default_factory=list)

    def __str__(self) -> str:
        c = self.current

        def pct(x: float | None) -> str:
            return "n/a" if x is None else f"{100 * x:.1f}%"

        tta = "n/a" if c.median_time_to_alert_s is None else f"{c.median_time_to_alert_s:.1f} s"
        return (f"alert evaluation: {self.videos} videos, {self.hours * 60:.1f} camera-minutes, {self.events} events\n"
                f"  configured rules: precision {pct(c.precision)}, recall {pct(c.recall)}, "
                f"{c.false_alarms_per_hour:.2f} false alarms per camera-hour, median time to alert {tta}\n"
                f"  report: {self.report}\n  plot:   {self.plot}")


def run_rules(
    windows_by_video: Mapping[str, Sequence[WindowScore]],
    labels: Sequence[str],
    alerts: AlertsConfig,
    thresholds: Mapping[str, float] | None = None,
) -> list[Detection]:
    """Replay each video's windows through a fresh :class:`RuleEngine`; one Detection per incident."""
    out: list[Detection] = []
    for video, windows in windows_by_video.items():
        engine = RuleEngine(labels, alerts, thresholds)
        opened: dict[str, float] = {}
        closed = []
        for w in sorted(windows, key=lambda w: (w.start_s, w.end_s)):
            for ev in engine.update(video, w):
                if ev.kind == "opened":
                    opened[ev.key] = w.end_s
                elif ev.kind == "closed":
                    closed.append(ev)
        closed.extend(engine.flush(video))
        for ev in closed:
            out.append(Detection(video, ev.label, ev.start_s, ev.end_s, opened.get(ev.key, ev.end_s), ev.peak_score))
    return out


def _overlaps(d: Detection, t: GroundTruth, tolerance_s: float) -> bool:
    return d.video == t.video and d.label == t.label and d.start_s < t.end_s + tolerance_s and d.end_s > t.start_s - tolerance_s


def score_detections(detections: Sequence[Detection], truths: Sequence[GroundTruth], hours: float,
                     tolerance_s: float = 0.0) -> AlertMetrics:
    """Match detections to true events of the same class and video that they overlap (± ``tolerance_s``)."""
    if hours <= 0:
        raise ValueError(f"expected a positive number of camera-hours, got {hours}")
    tp = sum(1 for d in detections if any(_overlaps(d, t, tolerance_s) for t in truths))
    delays = []
    found = 0
    for t in truths:
        matches = [d for d in detections if _overlaps(d, t, tolerance_s)]
        if matches:
            found += 1
            delays.append(min(d.alert_s for d in matches) - t.start_s)
    n_det, n_ev = len(detections), len(truths)
    precision = tp / n_det if n_det else None
    recall = found / n_ev if n_ev else None
    f1 = (2 * precision * recall / (precision + recall)) if precision and recall else (0.0 if n_det and n_ev else None)
    return AlertMetrics(
        detections=n_det, true_positives=tp, false_alarms=n_det - tp, events=n_ev, events_found=found,
        precision=precision, recall=recall, f1=f1, false_alarms_per_hour=(n_det - tp) / hours,
        median_time_to_alert_s=statistics.median(delays) if delays else None, hours=hours,
    )


def _rule_alerts(base: AlertsConfig, threshold: float | None, k: int, n: int) -> AlertsConfig:
    rule = base.default.model_copy(update={"threshold": threshold, "k": k, "n": n})
    AlertRule.model_validate(rule.model_dump())  # k <= n etc.
    return base.model_copy(update={"default": rule, "per_class": {}})


def sweep_rules(
    windows_by_video: Mapping[str, Sequence[WindowScore]],
    truths: Sequence[GroundTruth],
    labels: Sequence[str],
    base: AlertsConfig,
    checkpoint_thresholds: Mapping[str, float] | None,
    hours: float,
    thresholds: Sequence[float | None] = DEFAULT_THRESHOLDS,
    kn: Sequence[tuple[int, int]] = DEFAULT_KN,
    tolerance_s: float = 0.0,
) -> list[dict[str, Any]]:
    """Metrics for every threshold (None: the checkpoint's calibrated ones) x (k, n); one row each."""
    rows = []
    for k, n in kn:
        if k > n:
            raise ValueError(f"k-of-n sweep: k ({k}) must be <= n ({n})")
        for thr in thresholds:
            cfg = _rule_alerts(base, thr, k, n)
            m = score_detections(run_rules(windows_by_video, labels, cfg, checkpoint_thresholds), truths, hours, tolerance_s)
            rows.append({"threshold": thr if thr is not None else "calibrated", "k": k, "n": n, **asdict(m)})
    return rows


# ---- the command --------------------------------------------------------------------------------------
def _truths_from_records(records, labels: Sequence[str], task) -> tuple[dict[str, list[GroundTruth]], dict[str, float]]:
    truths: dict[str, list[GroundTruth]] = {}
    durations: dict[str, float] = {}
    for rec in records:
        label = task.resolve(rec.label) if rec.label else None
        events = [s for s in rec.spans if s.kind == "event"] or [s for s in rec.spans if s.kind == "action"]
        truths[rec.path] = [GroundTruth(rec.path, label, s.start_s, s.end_s) for s in events
                            if label is not None and label in labels and label != "normal"]
        if rec.duration_s:
            durations[rec.path] = float(rec.duration_s)
    return truths, durations


def _plot(rows: list[dict[str, Any]], current: AlertMetrics, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for k, n in sorted({(r["k"], r["n"]) for r in rows}):
        pts = [r for r in rows if (r["k"], r["n"]) == (k, n) and r["threshold"] != "calibrated"]
        pts.sort(key=lambda r: r["threshold"])
        ax1.plot([r["false_alarms_per_hour"] for r in pts], [r["recall"] or 0.0 for r in pts], marker="o", label=f"{k} of {n}")
        for r in pts:
            ax1.annotate(f"{r['threshold']:.1f}", (r["false_alarms_per_hour"], r["recall"] or 0.0), fontsize=7,
                         textcoords="offset points", xytext=(3, 3))
        pr = [r for r in pts if r["precision"] is not None]
        ax2.plot([r["recall"] or 0.0 for r in pr], [r["precision"] for r in pr], marker="o", label=f"{k} of {n}")
    ax1.scatter([current.false_alarms_per_hour], [current.recall or 0.0], marker="*", s=220, c="red", zorder=5, label="configured")
    if current.precision is not None:
        ax2.scatter([current.recall or 0.0], [current.precision], marker="*", s=220, c="red", zorder=5, label="configured")
    ax1.set_xlabel("false alarms per camera-hour")
    ax1.set_ylabel("event recall")
    ax1.set_title("Recall vs false alarms (labels: threshold)")
    ax2.set_xlabel("event recall")
    ax2.set_ylabel("event precision")
    ax2.set_title("Precision vs recall")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
    ax2.set_xlim(-0.02, 1.02)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None:
        return "n/a"
    if pct:
        return f"{100 * x:.1f}%"
    return f"{x:.2f}" if isinstance(x, float) else str(x)


def _report(summary_rows: list[dict[str, Any]], current: AlertMetrics, meta: dict[str, Any], plot: Path) -> str:
    lines = [
        "# Alert-level evaluation",
        "",
        f"Checkpoint `{meta['checkpoint']}` ({meta['model']}), {meta['videos']} videos from `{meta['data']}`, "
        f"{meta['hours'] * 60:.1f} camera-minutes, {meta['events']} annotated events.",
        "An alert is a true positive when it overlaps an annotated event of its class in the same video; every other "
        "alert is a false alarm. Time to alert: from the annotated start to the end of the window that opened the incident.",
        "",
        "## Configured rules",
        "",
        f"- precision {_fmt(current.precision, True)}, recall {_fmt(current.recall, True)} "
        f"({current.events_found}/{current.events} events), F1 {_fmt(current.f1)}",
        f"- {current.false_alarms} false alarms = {current.false_alarms_per_hour:.2f} per camera-hour",
        f"- median time to alert: {_fmt(current.median_time_to_alert_s)} s",
        "",
        "## Sweep (threshold x k-of-n)",
        "",
        f"![trade-off]({plot.name})",
        "",
        "| threshold | k of n | alerts | precision | recall | F1 | false alarms / h | median time to alert (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary_rows:
        thr = r["threshold"] if isinstance(r["threshold"], str) else f"{r['threshold']:.2f}"
        lines.append(f"| {thr} | {r['k']} of {r['n']} | {r['detections']} | {_fmt(r['precision'], True)} | {_fmt(r['recall'], True)} | "
                     f"{_fmt(r['f1'])} | {r['false_alarms_per_hour']:.2f} | {_fmt(r['median_time_to_alert_s'])} |")
    return "\n".join(lines) + "\n"


def evaluate_alerts(
    checkpoint: Path,
    out: Path,
    settings: Settings,
    *,
    data: Path | None = None,
    videos: int = 4,
    seconds: float = 180.0,
    seed: int = 0,
    thresholds: Sequence[float | None] = (*DEFAULT_THRESHOLDS, None),
    kn: Sequence[tuple[int, int]] = DEFAULT_KN,
    tolerance_s: float = 0.0,
) -> AlertEvalSummary:
    """Score every window of the videos under ``data`` (AI Hub layout) with ``checkpoint``, replay the rules.

    Without ``data``, ``videos`` synthetic videos of ``seconds`` each (one known event each) are written to
    ``out/videos`` first. Writes ``report.md``, ``metrics.json`` (with every window's scores, so the sweep can
    be redone) and ``tradeoff.png`` into ``out``.
    """
    from bigsister_ray.data.readers import read_source
    from bigsister_ray.models.checkpoint import read_checkpoint_meta
    from bigsister_ray.serve.detect import detect_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = read_checkpoint_meta(checkpoint)
    labels = list(meta.labels)
    if data is None:
        from bigsister_ray.data.synth import BEHAVIOURS, synthesize

        wanted = [x for x in labels if x != "normal" and x in BEHAVIOURS] or None
        if wanted is None:
            raise DataError(f"checkpoint {checkpoint}: none of its classes {labels} can be synthesized; pass --data")
        data = out / "videos"
        synthesize(data, videos=videos, seconds=seconds, seed=seed, settings=settings, labels=wanted)
    records, errors = read_source("aihub", Path(data), settings)
    for err in errors:
        log.warning("evaluate-alerts: skipped %s (%s: %s)", err.path, err.stage, err.reason)
    if not records:
        raise DataError(f"{data}: no readable annotated videos (AI Hub layout: mp4 + XML); {len(errors)} input errors")
    truths_by_video, durations = _truths_from_records(records, labels, settings.task.to_task())
    windows_by_video: dict[str, list[WindowScore]] = {}
    for rec in records:
        result = detect_file(rec.path, checkpoint, settings)
        windows_by_video[rec.path] = [WindowScore(w["start_s"], w["end_s"], w["scores"]) for w in result["windows"]]
        if rec.path not in durations and windows_by_video[rec.path]:
            durations[rec.path] = max(w.end_s for w in windows_by_video[rec.path])
    truths = [t for ts in truths_by_video.values() for t in ts]
    hours = sum(durations.values()) / 3600.0
    if hours <= 0:
        raise DataError(f"{data}: the videos have no duration")
    current = score_detections(run_rules(windows_by_video, labels, settings.alerts, meta.thresholds), truths, hours, tolerance_s)
    rows = sweep_rules(windows_by_video, truths, labels, settings.alerts, meta.thresholds, hours, thresholds, kn, tolerance_s)
    plot = out / "tradeoff.png"
    _plot(rows, current, plot)
    info = {"checkpoint": str(checkpoint), "model": meta.model_name, "data": str(data), "videos": len(records),
            "hours": hours, "events": len(truths)}
    report = out / "report.md"
    report.write_text(_report(rows, current, info, plot))
    metrics_json = out / "metrics.json"
    metrics_json.write_text(json.dumps({
        **info,
        "labels": labels,
        "checkpoint_thresholds": dict(meta.thresholds),
        "configured_rules": settings.alerts.model_dump(mode="json", include={"default", "per_class", "default_threshold"}),
        "current": asdict(current),
        "sweep": rows,
        "ground_truth": [asdict(t) for t in truths],
        "windows": {v: [[w.start_s, w.end_s, w.scores] for w in ws] for v, ws in windows_by_video.items()},
    }, indent=1, default=lambda x: None if isinstance(x, float) and math.isnan(x) else str(x)))
    return AlertEvalSummary(out=out, report=report, metrics_json=metrics_json, plot=plot, videos=len(records),
                            hours=hours, events=len(truths), current=current, sweep=rows)
