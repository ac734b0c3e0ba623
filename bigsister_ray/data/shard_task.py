"""The Ray Data task of ``bigsister prepare``: decode, preprocess and write one planned shard as a parquet file.

:func:`process_shard` runs once per shard (:mod:`bigsister_ray.data.pipeline` plans the shards and starts the
tasks). For every video of the shard it opens one reader inside the worker, decodes only the sampled frames of its
clips (:func:`bigsister_ray.data.clips.iter_clip_frames`), and appends them to the shard's parquet file in row
groups of about :data:`ROW_GROUP_BYTES`. The file is written under a temporary name and renamed when complete (on
an object store: written locally and uploaded whole), with the shard's membership hash, counts and errors in its
parquet metadata under :data:`SHARD_META_KEY`; :func:`read_shard_meta` reads them back, which is how a rerun knows
a shard is done. :func:`import_decode_stack` is the warm-up task that imports the same stack on a worker ahead of
the shards.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from bigsister_ray import storage
from bigsister_ray.clip import ClipSpec
from bigsister_ray.data.prepared import SHARD_COLUMNS
from bigsister_ray.data.records import ClipRecord, InputError, VideoRecord

__all__ = ["SHARD_META_KEY", "ROW_GROUP_BYTES", "shard_schema", "read_shard_meta", "process_shard",
           "import_decode_stack"]

#: The parquet metadata key under which a shard file holds its summary (JSON).
SHARD_META_KEY = b"bigsister.shard"
#: Buffered clip bytes per row group before a task writes them out.
ROW_GROUP_BYTES = 16 * 1024 * 1024


def shard_schema():
    """The arrow schema of a shard (``data.prepared.SHARD_COLUMNS``)."""
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, kind)()) for name, kind in SHARD_COLUMNS.items()])


def read_shard_meta(path: Path | str, filesystem: Any = None) -> dict[str, Any] | None:
    """The summary stored in a shard's parquet metadata; None when the file is absent, unreadable or foreign.

    ``path`` is a local path, or a path on the pyarrow ``filesystem``.
    """
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path, filesystem=filesystem).metadata or {}
    except (OSError, ValueError):  # absent, unreadable or partial file: redo it
        return None
    raw = meta.get(SHARD_META_KEY)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return None


def process_shard(row: dict[str, Any], *, out: str, spec: dict[str, Any], compression: str,
                  decode_threads: int = 1, filesystem: Any = None) -> dict[str, Any]:
    """Ray Data task: decode, preprocess and write one shard; returns its small summary row.

    ``row`` holds ``path``, ``split``, ``digest`` and ``videos`` (JSON: ``[{video, clips}]``). ``out`` is a local
    folder, or with ``filesystem`` (a pyarrow filesystem resolved by the driver, e.g. S3) a folder on it: the
    shard is then written to a local temporary file on this node and uploaded whole once it is complete.
    """
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from bigsister_ray.data.clips import iter_clip_frames

    clip_spec = ClipSpec.model_validate(spec)
    remote = filesystem is not None and not isinstance(filesystem, pafs.LocalFileSystem)
    tmp_dir: str | None = None
    if remote:
        final: Path | str = f"{out.rstrip('/')}/{row['path']}"
        tmp_dir = tempfile.mkdtemp(prefix="bigsister-shard-")
        tmp = Path(tmp_dir) / Path(row["path"]).name
    else:
        final = Path(out) / row["path"]
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    schema = shard_schema()
    errors: list[dict[str, str]] = []
    counts: dict[str, int] = {}
    written = failed = 0
    failed_videos: set[str] = set()
    buffer: dict[str, list] = {name: [] for name in SHARD_COLUMNS}
    buffered = 0
    codec = None if compression == "none" else compression
    writer = pq.ParquetWriter(tmp, schema, compression=codec)
    try:
        def flush() -> None:
            nonlocal buffer, buffered
            if buffer["clip_id"]:
                writer.write_table(pa.table(buffer, schema=schema))
            buffer = {name: [] for name in SHARD_COLUMNS}
            buffered = 0

        for item in json.loads(row["videos"]):
            video = VideoRecord.model_validate(item["video"])
            clips = [ClipRecord.model_validate(c) for c in item["clips"]]
            for clip, result in iter_clip_frames(video, clips, clip_spec, num_threads=decode_threads):
                if isinstance(result, InputError):
                    errors.append(result.model_dump())
                    failed += 1
                    failed_videos.add(video.path)
                    continue
                for name in SHARD_COLUMNS:
                    if name != "frames":
                        buffer[name].append(getattr(clip, name))
                buffer["frames"].append(result.tobytes())
                buffered += result.nbytes
                written += 1
                counts[clip.label] = counts.get(clip.label, 0) + 1
                if buffered >= ROW_GROUP_BYTES:
                    flush()
        flush()
        summary = {"digest": row["digest"], "split": row["split"], "clips": written, "failed": failed,
                   "failed_videos": sorted(failed_videos), "counts": counts, "errors": errors}
        writer.add_key_value_metadata({SHARD_META_KEY: json.dumps(summary)})
        writer.close()
        writer = None
        size = tmp.stat().st_size
        if remote:
            storage.upload(tmp, final, filesystem=filesystem)  # the object appears when the upload completes
        else:
            os.replace(tmp, final)
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return {"path": row["path"], "summary": json.dumps(summary), "bytes": size}



def import_decode_stack(spec: dict[str, Any]) -> int:
    """Ray task: import what :func:`process_shard` needs and run the resize once; returns the worker's pid."""
    import decord  # noqa: F401
    import numpy as np
    import pyarrow.parquet  # noqa: F401

    from bigsister_ray.clip import preprocess_frames

    preprocess_frames(np.zeros((1, 8, 8, 3), dtype=np.uint8), ClipSpec.model_validate(spec))
    return os.getpid()
