"""Alert-level figures on synthetic long videos: train a small tiny3d, then `evaluate_alerts` over a rule sweep.

Not a test (minutes of CPU). Trains tiny3d with plain torch on a small synthetic AI-Hub-format dataset (the real
readers, clip index and decode path), saves a self-describing checkpoint, then replays separate long synthetic
videos (different seed) through it and the alert rules, printing event precision/recall, false alarms per
camera-hour and median time to alert for the configured rules and for the threshold x k-of-n sweep.

    python benchmarks/alert_eval.py --train-videos 24 --epochs 8 --eval-videos 4 --eval-seconds 120 --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-videos", type=int, default=24)
    parser.add_argument("--train-seconds", type=float, default=12.0)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--eval-videos", type=int, default=4)
    parser.add_argument("--eval-seconds", type=float, default=120.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from bigsister_ray.serve.evaluate_alerts import evaluate_alerts
    from bigsister_ray.clip import ClipSpec, to_model_input
    from bigsister_ray.config import Settings
    from bigsister_ray.data.index import build_index
    from bigsister_ray.data.readers import read_source
    from bigsister_ray.data.synth import synthesize
    from bigsister_ray.models import CheckpointMeta, build_model, get_model_spec, save_checkpoint
    from bigsister_ray.data.clips import iter_clip_frames

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    work = args.out or Path(tempfile.mkdtemp(prefix="alert-eval-"))
    spec = ClipSpec(frames=8, fps=4.0, size=48, stride=4)
    labels = ["fight", "assault", "normal"]
    settings = Settings(clip=spec, task={"labels": labels},
                        data={"clips_per_event": 6, "negatives_per_video": 3},
                        alerts={"default": {"k": 3, "n": 5, "close_after": 3, "cooldown_s": 30}})
    t0 = time.perf_counter()
    synthesize(work / "train", videos=args.train_videos, seconds=args.train_seconds, seed=args.seed, settings=settings,
               labels=["fight", "assault"])
    videos, errors = read_source("aihub", work / "train", settings)
    assert not errors, errors
    clips = build_index(videos, settings)
    vids = {v.path: v for v in videos}
    per_video = defaultdict(list)
    for c in clips:
        per_video[c.video].append(c)
    xs, ys = [], []
    for path, cs in per_video.items():
        for clip, frames in iter_clip_frames(vids[path], cs, spec):
            assert not hasattr(frames, "reason"), frames
            xs.append(frames)
            ys.append(labels.index(clip.label))
    x, y = np.stack(xs), torch.tensor(ys)
    print(f"training data: {len(ys)} clips from {len(videos)} videos ({time.perf_counter() - t0:.0f} s)")
    norm = get_model_spec("tiny3d").norm
    model = build_model("tiny3d", len(labels), dropout=0.2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    counts = torch.bincount(y, minlength=len(labels)).float()
    loss_fn = torch.nn.CrossEntropyLoss(weight=counts.sum() / (counts.clamp(min=1) * len(labels)))
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(y))
        total = 0.0
        for i in range(0, len(order), 8):
            b = order[i:i + 8].numpy()
            inp = to_model_input(x[b], norm)
            if torch.rand(()) < 0.5:
                inp = inp.flip(-1)
            loss = loss_fn(model(inp), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        print(f"epoch {epoch + 1:2d}  train loss {total / len(y):.3f}  ({time.perf_counter() - t0:.0f} s)")
    model.eval()
    meta = CheckpointMeta(model_name="tiny3d", labels=labels, clip=spec, norm=norm, data_fingerprint=None, epoch=args.epochs)
    ckpt = save_checkpoint(work / "ckpt", model, meta)
    t0 = time.perf_counter()
    summary = evaluate_alerts(ckpt, work / "eval", settings, videos=args.eval_videos, seconds=args.eval_seconds,
                              seed=args.seed + 1000)
    print(f"evaluated in {time.perf_counter() - t0:.0f} s")
    print(summary)
    print(summary.report.read_text())


if __name__ == "__main__":
    main()
