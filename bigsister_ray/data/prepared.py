"""The on-disk contract between ``bigsister prepare`` (writer) and training/evaluation (readers).

A prepared dataset is a folder::

    PREPARED/
      manifest.json            PreparedManifest: ClipSpec, labels, shards, counts, fingerprint
      index.jsonl              the canonical clip index (one ClipRecord per line, with its split)
      errors.jsonl, errors.md  every input that failed, with the reason
      shards/<split>/shard-NNNNN.parquet   one row per clip, columns SHARD_COLUMNS

``frames`` holds the clip as raw uint8 bytes ``T x S x S x 3`` (already through
:func:`bigsister_ray.clip.preprocess_frames`); parquet compresses it. :func:`frames_from_bytes` restores it.

``PREPARED`` is a local folder or an ``s3://`` / ``gs://`` URI (:mod:`bigsister_ray.storage`); paths built here
keep the form of the root they are given (a ``Path`` for a local folder, a URI string for an object store).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bigsister_ray import storage
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
        """The shards of ``split`` as paths (or URIs, for a remote ``root``) under the prepared folder ``root``."""
        return [storage.join(root, s.path) for s in self.shards if s.split == split]


def _under(root: str | Path, *parts: str) -> str | Path:
    """``root / parts``: a Path for a local root, a URI string (scheme and query kept) for a remote one."""
    if storage.is_remote(root):
        return storage.join(root, *parts)
    return Path(root).joinpath(*parts)


def manifest_path(root: str | Path) -> str | Path:
    return _under(root, "manifest.json")


def shard_dir(root: str | Path, split: str) -> str | Path:
    return _under(root, "shards", split)


def read_manifest(root: str | Path) -> PreparedManifest:
    path = manifest_path(root)
    shown, shown_path = storage.redact_uri(root), storage.redact_uri(path)
    try:
        text = storage.read_text(path)
    except FileNotFoundError:
        raise DataError(f"{shown} is not a prepared dataset: {shown_path} is missing (run `bigsister prepare` first)") from None
    except OSError as err:  # unreachable store, access denied: say where
        raise DataError(f"{shown_path}: cannot read the manifest ({err})") from err
    try:
        return PreparedManifest.model_validate(json.loads(text))
    except ValueError as err:
        raise DataError(f"{shown_path}: not a valid manifest: {err}") from err


def write_manifest(root: str | Path, manifest: PreparedManifest) -> str | Path:
    """Write ``manifest.json`` atomically (local: temporary file and rename; object store: one upload)."""
    path = manifest_path(root)
    storage.write_text(path, manifest.model_dump_json(indent=2))
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
