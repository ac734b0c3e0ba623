"""Fight detection on real CCTV clips: the old recipe (tiny3d from scratch, rgb) against the new one
(``configs/fight-cpu.yaml``: ImageNet MobileNetV2 trained from its last stage, with temporal shift, on frame
differences), on cameras held out.

Data: the Surveillance Camera Fight dataset's development split at ``../shared/data/fight-surv`` (200 clips,
``fight/`` and ``noFight/``; ``sources.txt`` maps clips to their source video). Clips are split train / val /
test **by source group** (the index's group split, :func:`group_split`, one per split seed and the same for
every recipe), so the test cameras are never seen in training and both recipes face the same ones. For every split seed and every training seed, each recipe

1. cuts its clips (its own ClipSpec and ``data.clips_per_video``) and decodes them once into ``--cache``
   (uint8 ``.npy`` files read back batch by batch; nothing is held in memory);
2. trains in one process with the training loop's own step (:func:`bigsister_ray.train.loop.run_epoch`:
   decode, augmentation, :func:`bigsister_ray.clip.to_model_input`, class-weighted loss), AdamW and a cosine
   schedule as in ``bigsister train``, the weight average where the recipe asks for it, and keeps the epoch
   with the best validation macro-F1;
3. scores the test videos, averaging the logits of each video's windows (test-time averaging over windows),
   against the majority-class baseline (the training split's most common class).

Reported per recipe: mean and standard deviation over all runs of test accuracy and macro-F1, the baseline's,
and the training seconds. The new recipe starts from ``--weights`` or ``BIGSISTER_MODEL__WEIGHTS`` (its
one site-specific value); without them it starts from random weights and says so. Exits 0 with a message when
the data is absent (a fresh clone has no ``../shared``).

    python benchmarks/bench_fight_surv.py --seeds 3 --split-seeds 3 --threads 2 --out fight_surv.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main", "run"]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "fight-surv"
RECIPES = ("old", "new")


def recipe_settings(name: str, *, epochs: int | None = None, weights: str | None = None):
    """Settings of a recipe. ``old``: the embedded defaults (tiny3d from scratch on rgb 16 x 112 clips at 8 fps,
    one clip per video) for fight vs normal; ``new``: ``configs/fight-cpu.yaml``; ``new-light``:
    ``configs/fight-cpu-light.yaml`` (the same at 112 px); ``new-rgbdiff``: ``new`` with frames and their
    differences as two streams (``clip.input: rgb+diff``)."""
    from bigsister_ray.config import Settings, load_settings

    if name == "old":
        # tiny3d trains from scratch: BIGSISTER_MODEL__WEIGHTS (the new recipe's MobileNetV2 file) is not for it
        s = Settings.model_validate({"task": {"labels": ["fight", "normal"]}, "model": {"name": "tiny3d", "weights": None}})
    elif name in ("new", "new-light", "new-rgbdiff"):
        s = load_settings(REPO / "configs" / ("fight-cpu-light.yaml" if name == "new-light" else "fight-cpu.yaml"))
        if name == "new-rgbdiff":
            s.clip = s.clip.model_copy(update={"input": "rgb+diff"})
        if weights:
            s.model.weights = weights
    else:
        raise SystemExit(f"unknown recipe {name!r}: expected old, new, new-light or new-rgbdiff")
    if epochs is not None:
        s.train.epochs = epochs
    return s


def _cache_key(video: str, start: float, end: float, spec) -> str:
    text = json.dumps([video, start, end, spec.frames, spec.fps, spec.size, spec.resize])
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def decode_clips(videos: list, clips: list, spec, cache: Path) -> dict[str, Path]:
    """clip_id -> ``.npy`` of its uint8 frames (decoded once per clip window and spec, then reused)."""
    import numpy as np

    from bigsister_ray.data.records import InputError
    from bigsister_ray.data.clips import iter_clip_frames

    cache.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    todo: dict[str, list] = {}
    for c in clips:
        path = cache / f"{_cache_key(c.video, c.start_s, c.end_s, spec)}.npy"
        out[c.clip_id] = path
        if not path.exists():
            todo.setdefault(c.video, []).append(c)
    by_path = {v.path: v for v in videos}
    for video_path, wanted in todo.items():
        for clip, frames in iter_clip_frames(by_path[video_path], wanted, spec):
            if isinstance(frames, InputError):
                print(f"  skipped {clip.clip_id}: {frames.reason}", flush=True)
                out.pop(clip.clip_id, None)
                continue
            tmp = out[clip.clip_id].with_suffix(".tmp.npy")
            np.save(tmp, frames)
            os.replace(tmp, out[clip.clip_id])
    return out


def _batches(clips: list, files: dict[str, Path], batch: int, rng=None):
    import numpy as np

    order = list(range(len(clips)))
    if rng is not None:
        rng.shuffle(order)
    for i in range(0, len(order), batch):
        part = [clips[j] for j in order[i : i + batch]]
        yield {"frames": [np.load(files[c.clip_id]).tobytes() for c in part],
               "label_idx": np.array([c.label_idx for c in part], dtype=np.int64)}


def _report(confusion, labels: list[str]) -> dict[str, float]:
    from bigsister_ray.train.metrics import classification_report

    rep = classification_report(confusion, labels)
    return {"accuracy": float(rep["accuracy"]), "macro_f1": float(rep["macro_f1"])}


def train_and_test(settings, clips: list, files: dict[str, Path], seed: int, threads: int) -> dict[str, Any]:
    """One training run on the ``train`` clips, the best validation epoch scored on the ``test`` videos."""
    import copy

    import numpy as np
    import torch

    from bigsister_ray.clip import input_channels
    from bigsister_ray.models import build_model, get_model_spec
    from bigsister_ray.train.loop import WeightEMA, class_weights, run_epoch
    from bigsister_ray.train.metrics import confusion_matrix

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    labels = list(settings.task.labels)
    spec, tc = settings.clip, settings.train
    norm = get_model_spec(settings.model.name).norm
    split = {k: [c for c in clips if c.split == k and c.clip_id in files] for k in ("train", "val", "test")}
    counts = {lab: sum(c.label == lab for c in split["train"]) for lab in labels}
    model = build_model(settings.model.name, len(labels), dropout=settings.model.dropout,
                        weights=settings.model.weights, in_channels=input_channels(spec.input))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, tc.epochs), eta_min=tc.lr * 0.02)
    weights = torch.tensor(class_weights(counts, labels)) if tc.balance == "weighted_loss" else None
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    ema = WeightEMA(model, tc.ema_decay) if tc.ema_decay > 0 else None
    scored = ema.module if ema is not None else model
    rng = np.random.default_rng(seed)
    best, best_state, best_epoch = -1.0, None, 0
    start = time.perf_counter()
    for epoch in range(1, tc.epochs + 1):
        run_epoch(model, _batches(split["train"], files, tc.batch_size, rng), spec, norm, len(labels),
                  optimizer=optimizer, loss_fn=loss_fn, augment=tc.augment, color_jitter=tc.color_jitter, rng=rng,
                  after_step=(lambda: ema.update(model)) if ema is not None else None)
        scheduler.step()
        if split["val"]:
            val = run_epoch(scored, _batches(split["val"], files, 16), spec, norm, len(labels))
            score = _report(val.confusion, labels)["macro_f1"]
        else:
            score = float(epoch)
        if score > best + 1e-9:
            best, best_state, best_epoch = score, copy.deepcopy(scored.state_dict()), epoch
    train_s = time.perf_counter() - start
    scored.load_state_dict(best_state)
    test = run_epoch(scored, _batches(split["test"], files, 16), spec, norm, len(labels), keep_logits=True)
    logits = np.concatenate(test.logits) if test.logits else np.zeros((0, len(labels)))
    by_video: dict[str, list[int]] = {}
    for i, c in enumerate(split["test"]):
        by_video.setdefault(c.video, []).append(i)
    y_true = np.array([split["test"][idx[0]].label_idx for idx in by_video.values()], dtype=np.int64)
    y_pred = np.array([int(logits[idx].mean(axis=0).argmax()) for idx in by_video.values()], dtype=np.int64)
    majority = int(np.argmax([counts[lab] for lab in labels]))
    return {
        "seed": seed, "best_epoch": best_epoch, "val_macro_f1": best, "train_seconds": train_s,
        "train_clips": len(split["train"]), "val_clips": len(split["val"]), "test_videos": int(y_true.size),
        **{f"test_{k}": v for k, v in _report(confusion_matrix(y_true, y_pred, len(labels)), labels).items()},
        **{f"baseline_{k}": v for k, v in
           _report(confusion_matrix(y_true, np.full_like(y_true, majority), len(labels)), labels).items()},
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(runs)}
    for key in ("test_accuracy", "test_macro_f1", "baseline_accuracy", "baseline_macro_f1", "train_seconds"):
        vals = [r[key] for r in runs]
        out[key] = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}
    return out


def group_split(videos: list, split_seed: int) -> dict[str, str]:
    """group -> split, the same for every recipe: the index's group split (70/15/15, stratified by class) of
    one clip per video, so recipes that cut more windows per video are still tested on the same cameras."""
    from bigsister_ray.config import Settings
    from bigsister_ray.data.index import build_index_report

    s = Settings.model_validate({"task": {"labels": ["fight", "normal"]},
                                 "data": {"clips_per_video": 1, "split_seed": split_seed}})
    return build_index_report(videos, s).splits


def run(data: Path, recipes: list[str], seeds: int, split_seeds: int, threads: int, cache: Path,
        epochs: int | None = None, weights: str | None = None) -> dict[str, Any]:
    """Every recipe on every split seed and training seed; returns ``{recipe: {summary, runs, ...}}``."""
    from bigsister_ray.data.index import build_index
    from bigsister_ray.data.readers import read_source

    results: dict[str, Any] = {}
    videos = None
    for name in recipes:
        settings = recipe_settings(name, epochs=epochs, weights=weights)
        if videos is None:
            videos, errors = read_source("folders", data, settings)
            print(f"{len(videos)} videos read from {data} ({len(errors)} skipped)", flush=True)
        runs = []
        for split_seed in range(split_seeds):
            split_of = group_split(videos, split_seed)
            clips = [c.model_copy(update={"split": split_of[c.group]}) for c in build_index(videos, settings)]
            t0 = time.perf_counter()
            files = decode_clips(videos, clips, settings.clip, cache)
            print(f"[{name}] split seed {split_seed}: {len(clips)} clips "
                  f"({', '.join(f'{k} {sum(c.split == k for c in clips)}' for k in ('train', 'val', 'test'))}), "
                  f"decoded in {time.perf_counter() - t0:.0f}s", flush=True)
            for k in range(seeds):
                seed = split_seed * seeds + k  # every run its own training seed, across splits too
                r = train_and_test(settings, clips, files, seed, threads)
                r["split_seed"], r["seed"] = split_seed, seed
                runs.append(r)
                print(f"[{name}] split {split_seed} seed {seed}: test acc {r['test_accuracy']:.3f} macro-F1 "
                      f"{r['test_macro_f1']:.3f} (majority {r['baseline_accuracy']:.3f} / {r['baseline_macro_f1']:.3f}), "
                      f"best epoch {r['best_epoch']}, {r['train_seconds']:.0f}s", flush=True)
        results[name] = {
            "model": settings.model.name, "clip": settings.clip.model_dump(), "epochs": settings.train.epochs,
            "pretrained": bool(settings.model.weights), "summary": _summary(runs), "runs": runs,
        }
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the fight-surv folder (fight/, noFight/, sources.txt)")
    p.add_argument("--recipes", default="old,new", help="comma-separated: old, new, new-light, new-rgbdiff")
    p.add_argument("--seeds", type=int, default=3, help="training seeds per split")
    p.add_argument("--split-seeds", type=int, default=3, help="group splits (data.split_seed 0..N-1)")
    p.add_argument("--epochs", type=int, default=None, help="override every recipe's train.epochs")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--weights", default=None, help="ImageNet MobileNetV2 weights for the new recipe "
                   "(default: BIGSISTER_MODEL__WEIGHTS)")
    p.add_argument("--cache", type=Path, default=Path("/tmp/bigsister-fight-surv-cache"), help="decoded clips")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    if not (args.data / "fight").is_dir() or not (args.data / "noFight").is_dir():
        print(f"skipped: the fight-surv data is not at {args.data} (expected fight/ and noFight/ folders)")
        return 0
    sys.path.insert(0, str(REPO))
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    weights = args.weights or os.environ.get("BIGSISTER_MODEL__WEIGHTS")
    if any(r.startswith("new") for r in recipes) and not weights:
        print("note: no --weights or BIGSISTER_MODEL__WEIGHTS: the new recipe starts from random weights", flush=True)
    results = run(args.data, recipes, args.seeds, args.split_seeds, args.threads, args.cache, args.epochs, weights)
    print("\nrecipe     model           pretrained  runs  test acc        test macro-F1   majority acc/F1  train s")
    for name, r in results.items():
        s = r["summary"]
        print(f"{name:10s} {r['model']:15s} {str(r['pretrained']):11s} {s['runs']:4d}  "
              f"{s['test_accuracy']['mean']:.3f} ± {s['test_accuracy']['std']:.3f}   "
              f"{s['test_macro_f1']['mean']:.3f} ± {s['test_macro_f1']['std']:.3f}   "
              f"{s['baseline_accuracy']['mean']:.3f} / {s['baseline_macro_f1']['mean']:.3f}    "
              f"{s['train_seconds']['mean']:.0f}")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))
        print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
