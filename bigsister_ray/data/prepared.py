"""The on-disk contract between ``bigsister prepare`` (writer) and training/evaluation (readers).

A prepared dataset is a folder::

    PREPARED/
      manifest.json            PreparedManifest: ClipSpec, labels, shards, counts, fingerprint
      index.jsonl              the canonical clip index (one ClipRecord per line, with its split)
      errors.jsonl, errors.md  every input that failed, with the reason
      shards/<split>/shard-NNNNN.parquet   one row per clip, columns SHARD_COLUMNS

``frames`` holds the clip as raw uint8 bytes ``T x S x S x 3`` (already through
:func:`bigsister_ray.clip.preprocess_frames`); parquet compresses it. :func:`frames_from_bytes` restores it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bigsister_ray.clip import ClipSpec
from bigsister_ray.errors import DataError

__all__ = [
    "SPLITS",
    "SHARD_COLUMNS",
    "ShardInfo",
    "PreparedManifest",
    "manifest_path",
    "shard_dir",
    "read_manifest",
    "write_manifest",
    "frames_from_bytes",
]

SPLITS = ("train", "val", "test")

#: name -> arrow type name, for writers and readers to agree on.
SHARD_COLUMNS: dict[str, str] = {
    "clip_id": "string",
    "video": "string",
    "label": "string",
    "label_idx": "int32",
    "group": "string",
    "split": "string",
    "start_s": "float64",
    "end_s": "float64",
    "frames": "binary",
}


class ShardInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Relative to the prepared folder.")
    split: str
    clips: int
    bytes: int = 0


class PreparedManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    source: str
    root: str
    clip: ClipSpec
    labels: list[str]
    fingerprint: str = Field(description="sha256 of the clip index and ClipSpec: checkpoints record it.")
    shards: list[ShardInfo] = Field(default_factory=list)
    counts: dict[str, dict[str, int]] = Field(default_factory=dict, description="split -> label -> clips written.")
    clips_written: int = 0
    clips_failed: int = 0
    videos_failed: int = 0

    def shard_paths(self, root: str | Path, split: str) -> list[str]:
        return [str(Path(root) / s.path) for s in self.shards if s.split == split]


def manifest_path(root: str | Path) -> Path:
    return Path(root) / "manifest.json"


def shard_dir(root: str | Path, split: str) -> Path:
    return Path(root) / "shards" / split


def read_manifest(root: str | Path) -> PreparedManifest:
    path = manifest_path(root)
    if not path.exists():
        raise DataError(f"{root} is not a prepared dataset: {path} is missing (run `bigsister prepare` first)")
    try:
        return PreparedManifest.model_validate(json.loads(path.read_text()))
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: not a valid manifest: {err}") from err


def write_manifest(root: str | Path, manifest: PreparedManifest) -> Path:
    path = manifest_path(root)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(manifest.model_dump_json(indent=2))
    tmp.replace(path)
    return path


def frames_from_bytes(data: bytes, spec: ClipSpec) -> np.ndarray:
    """Raw shard bytes -> uint8 ``T x S x S x 3`` (a read-only view; copy before writing into it)."""
    expected = spec.frames * spec.size * spec.size * 3
    if len(data) != expected:
        raise DataError(
            f"clip bytes do not match the ClipSpec: expected {expected} "
            f"({spec.frames}x{spec.size}x{spec.size}x3), got {len(data)}"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(spec.frames, spec.size, spec.size, 3)
