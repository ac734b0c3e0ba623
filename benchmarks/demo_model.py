"""How steady is the model `bigsister demo` trains? Train it several times, alternating settings of
``train.ema_decay``, and for each run report the best epoch, validation macro-F1, test accuracy and macro-F1,
and whether offline detection (``bigsister detect``'s code, the live alert rules) on the demo's own camera
finds the fight under the demo's matching rule.

The dataset (the demo's synth + prepare, seed 7) and the camera (seed 10, fight 14-34 s) are made once in
WORK and reused. Each run takes 3-4 minutes on 2 cores.

    python benchmarks/demo_model.py WORK [--runs 3] [--decays 0,0.98] [--per-epoch]

``--per-epoch`` keeps every epoch's checkpoint and scores each on the test split too, then reports the test
accuracy of the epoch each selection rule picks: the best validation macro-F1 (``raw``, what training does by
default) and the best mean over the last ``k`` epochs' validation macro-F1 (``mean3``, ``mean5``), and the last
epoch: is the best single validation score a spike on the demo's 38 validation clips?
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("work", type=Path)
    p.add_argument("--runs", type=int, default=3, help="Runs per setting (the settings alternate).")
    p.add_argument("--decays", default="0,0.98", help="Comma-separated train.ema_decay values to compare.")
    p.add_argument("--per-epoch", action="store_true", help="Score every epoch's checkpoint on test (see above).")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="Change one of the demo's settings for every run, e.g. train.color_jitter=0.2 (repeatable).")
    args = p.parse_args(argv)

    from bigsister_ray.config import Settings
    from bigsister_ray.data.pipeline import prepare
    from bigsister_ray.data.synth import render_video, synthesize
    from bigsister_ray.demo import FIGHT_SPAN_S, STREAM_SECONDS, _overlaps_fight, demo_settings
    from bigsister_ray.runtime import ensure_ray
    from bigsister_ray.serve.detect import detect_file
    from bigsister_ray.train.evaluate import evaluate
    from bigsister_ray.train.trainer import train

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    base = demo_settings(Settings(), work)
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, field = key.partition(".")
        setattr(getattr(base, section), field, type(getattr(getattr(base, section), field))(value))
    ensure_ray(base, train=True, include_dashboard=False)
    if not (work / "prepared").exists():
        synthesize(work / "aihub", videos=30, seconds=16.0, seed=7, settings=base,
                   labels=[x for x in base.task.labels if x != "normal"], cameras_per_take=1.25)
        prepare("aihub", work / "aihub", work / "prepared", base)
    video = work / "cam.mp4"
    if not video.exists():
        render_video(video, "fight", seconds=STREAM_SECONDS, seed=10, abnormal_span=FIGHT_SPAN_S)
    tag = "".join(f"_{x}" for x in args.set)  # runs with other settings get folders of their own (a name resumes)
    for r in range(args.runs):
        for d in (float(x) for x in args.decays.split(",")):
            s = base.model_copy(deep=True)
            s.train.ema_decay = d
            if args.per_epoch:
                s.train.checkpoints_to_keep = s.train.epochs + 1
            t0 = time.time()
            res = train(work / "prepared", work / f"run_d{d}{tag}_r{r}", s)
            rep = evaluate(res.best_checkpoint, work / "prepared", work / f"eval_d{d}{tag}_r{r}", s, split="test")
            m = json.loads(rep.metrics_path.read_text())
            det = detect_file(video, res.best_checkpoint, s)
            for ev in det["events"]:  # the peak window's start, as the incident record has it
                inside = [w for w in det["windows"] if ev["start_s"] <= w["start_s"] <= ev["end_s"]]
                best = max(inside, key=lambda w: w["scores"].get(ev["label"], 0), default=None)
                ev["peak_start_s"] = best["start_s"] if best else None
            hit = any(_overlaps_fight(e, s.clip.duration_s) for e in det["events"])
            history = [json.loads(line) for line in (work / f"run_d{d}{tag}_r{r}" / "history.jsonl").read_text().splitlines()]
            row = {"ema_decay": d, "set": args.set, "run": r, "best_epoch": res.best_epoch,
                   "val_macro_f1": round(res.best_metrics.get("val_macro_f1", float("nan")), 3),
                   "test_accuracy": round(m["accuracy"], 3), "test_macro_f1": round(m["macro_f1"], 3),
                   "camera_fight_found": hit,
                   "camera_events": [(e["label"], e["start_s"], e["end_s"], round(e["peak_score"], 2), e["peak_start_s"])
                                     for e in det["events"]],
                   "val_accuracy_per_epoch": [round(h["val_accuracy"], 2) for h in history if h.get("event") == "epoch"],
                   "minutes": round((time.time() - t0) / 60, 1)}
            if args.per_epoch:
                row["per_epoch"] = per_epoch_picks(work / f"run_d{d}{tag}_r{r}", work / "prepared", s, history)
            print("ROW " + json.dumps(row), flush=True)


def per_epoch_picks(run_dir: Path, data: Path, settings, history: list[dict]) -> dict:
    """Test accuracy of every kept epoch, and of the epoch each selection rule picks (see the module docstring)."""
    import tempfile

    import numpy as np

    from bigsister_ray.models.checkpoint import read_checkpoint_meta
    from bigsister_ray.train.evaluate import evaluate

    test: dict[int, float] = {}
    for ckpt in sorted(run_dir.glob("checkpoint_*/model.pt")):
        epoch = read_checkpoint_meta(ckpt).epoch
        with tempfile.TemporaryDirectory() as tmp:
            rep = evaluate(ckpt, data, Path(tmp) / "eval", settings, split="test")
            test[epoch] = json.loads(rep.metrics_path.read_text())["accuracy"]
    epochs = [h for h in history if h.get("event") == "epoch"]
    f1 = np.array([h["val_macro_f1"] for h in epochs])
    picks = {"raw": int(np.argmax(f1)) + 1, "last": len(f1)}
    for k in (3, 5):
        means = [f1[max(0, i - k + 1): i + 1].mean() for i in range(len(f1))]
        picks[f"mean{k}"] = int(np.argmax(means)) + 1
    return {"test_accuracy_per_epoch": [round(test.get(e + 1, float("nan")), 3) for e in range(len(f1))],
            "picks": {rule: {"epoch": e, "test_accuracy": round(test.get(e, float("nan")), 3)} for rule, e in picks.items()}}


if __name__ == "__main__":
    main()
