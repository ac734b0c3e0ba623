"""Is the synthetic dataset learnable? Train tiny3d on it in one process and report held-out accuracy.

Not a test (minutes of CPU): synthesizes a dataset, indexes it with the real readers and clip index, splits
it by take *stratified by class* (so every class is in train and in the held-out split), decodes clips with
the real decode path (data.clips.iter_clip_frames), trains tiny3d with plain torch and prints held-out
accuracy and per-class recall next to the majority-class baseline.

    python benchmarks/synth_learnability.py --videos 40 --seconds 12 --epochs 12 --threads 2
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="dataset folder (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true", help="use the dataset already in --out (same arguments)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from bigsister_ray.clip import to_model_input
    from bigsister_ray.config import Settings
    from bigsister_ray.data.index import build_index
    from bigsister_ray.data.readers import read_source
    from bigsister_ray.data.synth import synthesize
    from bigsister_ray.models import build_model, get_model_spec
    from bigsister_ray.data.clips import iter_clip_frames

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    settings = Settings(data={"clips_per_event": 6, "negatives_per_video": 2})
    labels = list(settings.task.labels)
    root = args.out or Path(tempfile.mkdtemp(prefix="synth-learn-"))
    if not args.reuse:
        t0 = time.perf_counter()
        summary = synthesize(root, videos=args.videos, seconds=args.seconds, seed=args.seed, settings=settings)
        print(summary)
        print(f"synthesized in {time.perf_counter() - t0:.1f} s")
    videos, errors = read_source("aihub", root, settings)
    assert not errors, errors
    clips = build_index(videos, settings)
    # stratified group split: for each class, one take in four is held out
    by_class: dict[str, list[str]] = defaultdict(list)
    for v in videos:
        if v.group not in by_class[v.label]:
            by_class[v.label].append(v.group)
    held = set()
    rng = random.Random(args.seed)
    for groups in by_class.values():
        groups = sorted(groups)
        rng.shuffle(groups)
        held.update(groups[: max(1, len(groups) // 4)])
    t0 = time.perf_counter()
    data = {"train": ([], []), "test": ([], [])}
    vids = {v.path: v for v in videos}
    per_video = defaultdict(list)
    for c in clips:
        per_video[c.video].append(c)
    for path, cs in per_video.items():
        for clip, frames in iter_clip_frames(vids[path], cs, settings.clip):
            assert not hasattr(frames, "reason"), frames
            part = "test" if clip.group in held else "train"
            data[part][0].append(frames)
            data[part][1].append(labels.index(clip.label))
    print(f"decoded {len(clips)} clips in {time.perf_counter() - t0:.1f} s; "
          f"train {len(data['train'][1])}, held-out {len(data['test'][1])} ({len(held)} takes)")
    norm = get_model_spec("tiny3d").norm
    xtr = np.stack(data["train"][0])
    ytr = torch.tensor(data["train"][1])
    xte = np.stack(data["test"][0])
    yte = np.array(data["test"][1])
    model = build_model("tiny3d", len(labels), dropout=0.2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    counts = torch.bincount(ytr, minlength=len(labels)).float()
    loss_fn = torch.nn.CrossEntropyLoss(weight=(counts.sum() / (counts.clamp(min=1) * len(labels))))
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(ytr))
        total = 0.0
        for i in range(0, len(order), 8):
            b = order[i:i + 8].numpy()
            x = to_model_input(xtr[b], norm)
            if random.random() < 0.5:
                x = x.flip(-1)
            loss = loss_fn(model(x), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        model.eval()
        with torch.no_grad():
            pred = np.concatenate([model(to_model_input(xte[i:i + 16], norm)).argmax(1).numpy() for i in range(0, len(yte), 16)])
        acc = float((pred == yte).mean())
        print(flush=True, end="")
        print(f"epoch {epoch + 1:2d}  train loss {total / len(ytr):.3f}  held-out accuracy {acc:.3f}  "
              f"({time.perf_counter() - t0:.0f} s)")
    majority = Counter(yte.tolist()).most_common(1)[0][1] / len(yte)
    print(f"held-out accuracy {acc:.3f} vs majority-class baseline {majority:.3f}")
    for k, name in enumerate(labels):
        mask = yte == k
        if mask.any():
            print(f"  {name:<10} recall {float((pred[mask] == k).mean()):.2f}  (n={int(mask.sum())})")


if __name__ == "__main__":
    main()
