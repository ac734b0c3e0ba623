"""A tiny prepared dataset for tests, written exactly as ``bigsister_ray/data/prepared.py`` specifies.

Each class gets its own synthetic motion on a noisy background, so a model can learn it in seconds:
a square of the class's dominant colour (red, green, blue: ``k % 3``) that slides horizontally, stands
still, slides vertically, blinks, or drifts diagonally (pattern ``k % 5``). Horizontal flips keep the patterns apart, so augmentation is safe.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bigsister_ray.clip import ClipSpec
from bigsister_ray.data.prepared import SHARD_COLUMNS, PreparedManifest, ShardInfo, shard_dir, write_manifest

__all__ = ["PATTERNS", "synthetic_clip", "make_prepared"]

PATTERNS = ("horizontal", "still", "vertical", "blink", "diagonal")


def synthetic_clip(label_idx: int, spec: ClipSpec, rng: np.random.Generator) -> np.ndarray:
    """uint8 ``T x S x S x 3``: noise plus a bright square moving the way class ``label_idx`` moves."""
    t, s = spec.frames, spec.size
    clip = rng.integers(0, 60, size=(t, s, s, 3), dtype=np.uint8)
    box = max(4, s // 3)
    pattern = PATTERNS[label_idx % len(PATTERNS)]
    speed = max(1, s // 12)
    x0, y0 = rng.integers(0, s - box, size=2)
    colour = rng.integers(0, 90, size=3).astype(np.uint8)
    colour[label_idx % 3] = rng.integers(200, 256)  # each class also has its own dominant colour
    for i in range(t):
        x, y, visible = x0, y0, True
        if pattern == "horizontal":
            x = (x0 + speed * i) % (s - box)
        elif pattern == "vertical":
            y = (y0 + speed * i) % (s - box)
        elif pattern == "blink":
            visible = i % 2 == 0
        elif pattern == "diagonal":
            x, y = (x0 + speed * i) % (s - box), (y0 + speed * i) % (s - box)
        if visible:
            clip[i, y : y + box, x : x + box] = colour
    return clip


def make_prepared(
    root: Path,
    labels: Sequence[str] = ("fight", "normal"),
    counts: dict[str, int] | None = None,
    spec: ClipSpec | None = None,
    seed: int = 0,
    shard_clips: int = 16,
    imbalance: dict[str, float] | None = None,
) -> PreparedManifest:
    """Write ``root/manifest.json``, ``index.jsonl`` and ``shards/<split>/shard-NNNNN.parquet``.

    ``counts`` gives clips per class per split (default train 24, val 8, test 8); ``imbalance`` scales one
    class's count (e.g. ``{"normal": 2.0}``) to exercise the weighted loss. Groups are per video, one video
    per four clips, so splits never share a group.
    """
    spec = spec or ClipSpec(frames=8, fps=8.0, size=32, stride=4)
    counts = counts or {"train": 24, "val": 8, "test": 8}
    imbalance = imbalance or {}
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    shards: list[ShardInfo] = []
    per_split: dict[str, dict[str, int]] = {}
    index_lines: list[str] = []
    for split, n in counts.items():
        rows = []
        for k, label in enumerate(labels):
            for j in range(int(round(n * imbalance.get(label, 1.0)))):
                video = f"{label}/{split}-{j // 4:03d}.mp4"
                rows.append({
                    "clip_id": f"{split}-{label}-{j:04d}",
                    "video": video,
                    "label": label,
                    "label_idx": k,
                    "group": f"{split}-{label}-{j // 4}",
                    "split": split,
                    "start_s": float(j % 4) * spec.duration_s,
                    "end_s": float(j % 4 + 1) * spec.duration_s,
                    "frames": synthetic_clip(k, spec, rng).tobytes(),
                })
        order = rng.permutation(len(rows))
        rows = [rows[i] for i in order]
        per_split[split] = {label: sum(r["label"] == label for r in rows) for label in labels}
        out_dir = shard_dir(root, split)
        out_dir.mkdir(parents=True, exist_ok=True)
        schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in SHARD_COLUMNS.items()])
        for i in range(0, len(rows), shard_clips):
            chunk = rows[i : i + shard_clips]
            table = pa.Table.from_pylist(chunk, schema=schema)
            path = out_dir / f"shard-{i // shard_clips:05d}.parquet"
            pq.write_table(table, path, compression="zstd")
            shards.append(ShardInfo(path=str(path.relative_to(root)), split=split, clips=len(chunk), bytes=path.stat().st_size))
        for r in rows:
            rec = {k: v for k, v in r.items() if k != "frames"}
            rec["kind"] = "positive" if r["label"] != "normal" else "negative"
            index_lines.append(json.dumps(rec, sort_keys=True))
    (root / "index.jsonl").write_text("\n".join(index_lines) + "\n")
    (root / "errors.jsonl").write_text("")
    fingerprint = hashlib.sha256(("\n".join(sorted(index_lines)) + spec.model_dump_json()).encode()).hexdigest()
    manifest = PreparedManifest(
        source="synthetic-test",
        root=str(root),
        clip=spec,
        labels=list(labels),
        fingerprint=fingerprint,
        shards=shards,
        counts=per_split,
        clips_written=sum(sum(c.values()) for c in per_split.values()),
    )
    write_manifest(root, manifest)
    return manifest
