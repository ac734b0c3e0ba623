"""``bigsister prepare``: raw videos -> clip index -> Ray Data (decode + shared preprocessing) -> parquet shards.

The driver reads the annotations (:mod:`.readers`), builds the clip index (:mod:`.index`) and plans shards:
the clips of each split, video by video in a fixed pseudo-random order (a hash of the path), packed into shards
of at most ``data.shard_clips`` clips (a video's clips are never split, so one decord reader serves all of them).
Shard membership depends only on the index and the ClipSpec, so it is the same on every run. The order is not the
path order because paths sort by class (``fight/...``, ``normal/...``): shards of one class each give training
batches of one class, and BatchNorm then normalises the class signal away (training stalled at chance on
fight-surv until this was fixed).

Ray Data then streams the pending shards through one task each (:mod:`.shard_task`): for every video of the
shard the task opens one reader (inside the worker), decodes only the sampled frames of its clips, puts them
through :func:`bigsister_ray.clip.preprocess_frames`, and appends them to the shard's parquet file (row groups of
a bounded size, compressed). The file is written under a temporary name and renamed when complete, with the
shard's membership hash, counts and errors in its parquet metadata. Nothing flows back to the driver but
these small summaries (``iter_rows``), so memory stays flat however large the dataset grows; nothing is ever
collected, materialised or converted to pandas.

``OUT`` is a local folder or an ``s3://`` / ``gs://`` URI (:mod:`bigsister_ray.storage`). For an object store
each task writes its parquet file to a local temporary file on its own node and uploads it to the final name in
one call when it is complete (an object appears whole when its upload completes; nothing partial is ever left
under a shard's name); the small index, errors and manifest files are written by the driver the same way. The raw
videos (``--root``) must be files every node can open (a local or network-mounted folder): decord reads files.

Re-running resumes: a shard whose file exists with the planned membership hash is not redone (its counts and
errors are read back from its metadata), on a local folder and on an object store alike. Inputs that cannot be used (unreadable or unsafe XML, missing,
zero-byte, truncated or corrupt videos, unknown classes) are recorded with the reason in ``errors.jsonl`` and
``errors.md`` and skipped; the run finishes and prints how many clips were written and how many failed.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from bigsister_ray import storage
from bigsister_ray.clip import ClipSpec
from bigsister_ray.config import Settings
from bigsister_ray.data.index import build_index_report, index_fingerprint
from bigsister_ray.data.prepared import (
    SPLITS,
    PreparedManifest,
    ShardInfo,
    manifest_path,
    write_manifest,
)
from bigsister_ray.data.readers import read_source
from bigsister_ray.data.records import ClipRecord, InputError, VideoRecord
from bigsister_ray.data.shard_task import import_decode_stack, process_shard, read_shard_meta, shard_schema
from bigsister_ray.errors import ConfigError
from bigsister_ray.runtime import ensure_ray

__all__ = ["PrepareSummary", "ShardPlan", "plan_shards", "shard_order", "prepare", "process_shard", "shard_schema",
           "write_errors", "check_local_root"]


@dataclass(frozen=True)
class ShardPlan:
    """One planned shard: its relative path, split, and the videos with their clips (in decode order)."""

    path: str
    split: str
    videos: tuple[tuple[VideoRecord, tuple[ClipRecord, ...]], ...]
    digest: str

    @property
    def clips(self) -> int:
        return sum(len(c) for _, c in self.videos)


@dataclass
class PrepareSummary:
    """What ``prepare`` did. ``str()`` is the line the CLI prints."""

    out: str
    clips_planned: int = 0
    clips_written: int = 0
    clips_failed: int = 0
    inputs_failed: int = 0
    videos_failed: int = 0
    shards_total: int = 0
    shards_written: int = 0
    shards_resumed: int = 0
    duplicates: int = 0
    dropped_by_task: int = 0
    seconds: float = 0.0
    decode_seconds: float = 0.0  # wall time of the Ray Data stage (decode, preprocess, write)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def __str__(self) -> str:
        return (
            f"prepared {self.out}: clips written {self.clips_written}, clips failed {self.clips_failed}, "
            f"errors recorded {self.inputs_failed} (see errors.md); shards {self.shards_total} "
            f"({self.shards_written} written, {self.shards_resumed} already done); "
            f"duplicates removed {self.duplicates}, videos of classes outside the task {self.dropped_by_task}; "
            f"{self.seconds:.1f} s"
        )


# -------------------------------------------------------------------------------------------- planning
def _digest(spec: ClipSpec, videos: Iterable[tuple[VideoRecord, Sequence[ClipRecord]]], compression: str) -> str:
    h = hashlib.sha256(spec.model_dump_json().encode())
    h.update(compression.encode())
    for video, clips in videos:
        h.update(video.path.encode())
        for clip in clips:
            h.update(clip.model_dump_json().encode())
    return h.hexdigest()


def shard_order(path: str) -> tuple[str, str]:
    """Sort key that spreads videos evenly and reproducibly: a SHA-256 of the path, then the path."""
    return hashlib.sha256(path.encode("utf-8")).hexdigest(), path


def plan_shards(videos: Sequence[VideoRecord], clips: Sequence[ClipRecord], spec: ClipSpec, shard_clips: int,
                compression: str = "zstd") -> list[ShardPlan]:
    """Deterministic shards: per split, videos in :func:`shard_order` (classes interleaved), whole videos packed
    up to ``shard_clips`` clips."""
    by_path = {v.path: v for v in videos}
    per_video: dict[tuple[str, str], list[ClipRecord]] = {}
    for clip in clips:
        per_video.setdefault((clip.split, clip.video), []).append(clip)
    plans: list[ShardPlan] = []
    for split in sorted({s for s, _ in per_video}, key=lambda s: (SPLITS.index(s) if s in SPLITS else 99, s)):
        members: list[tuple[VideoRecord, tuple[ClipRecord, ...]]] = []
        count = 0
        number = 0

        def close() -> None:
            nonlocal members, count, number
            if members:
                rel = f"shards/{split}/shard-{number:05d}.parquet"
                plans.append(ShardPlan(rel, split, tuple(members), _digest(spec, members, compression)))
                number += 1
                members, count = [], 0

        for path in sorted((k[1] for k in per_video if k[0] == split), key=shard_order):
            vclips = tuple(sorted(per_video[(split, path)], key=lambda c: (c.start_s, c.clip_id)))
            if count and count + len(vclips) > shard_clips:
                close()
            members.append((by_path[path], vclips))
            count += len(vclips)
        close()
    return plans


# ----------------------------------------------------------------------------------------- reporting
def _at(out: str | Path, name: str) -> str | Path:
    """``out / name``: a Path for a local folder, a URI string for an object store."""
    return storage.join(out, name) if storage.is_remote(out) else Path(out) / name


def write_errors(out: str | Path, errors: Sequence[InputError]) -> tuple[str | Path, str | Path]:
    """Write ``errors.jsonl`` (one InputError per line) and ``errors.md`` (a table a person reads).

    ``out`` is a local folder or a URI; each file appears whole (temporary file and rename, or one upload).
    """
    jsonl, md = _at(out, "errors.jsonl"), _at(out, "errors.md")
    with storage.open_output(jsonl) as fh:
        for err in errors:
            fh.write((err.model_dump_json() + "\n").encode("utf-8"))
    by_stage: dict[str, int] = {}
    for err in errors:
        by_stage[err.stage] = by_stage.get(err.stage, 0) + 1
    lines = ["# Inputs skipped by `bigsister prepare`", ""]
    if not errors:
        lines.append("No errors: every input was read and every planned clip was written.")
    else:
        lines.append(f"{len(errors)} inputs or clips were skipped ("
                     + ", ".join(f"{n} at {stage}" for stage, n in sorted(by_stage.items())) + "). Fix them and re-run: "
                     "finished shards are kept; delete a shard file to redo it.")
        lines += ["", "| stage | path | reason |", "| --- | --- | --- |"]
        for err in errors:
            reason = err.reason.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {err.stage} | `{err.path}` | {reason} |")
    storage.write_text(md, "\n".join(lines) + "\n")
    return jsonl, md


def _write_index(out: str | Path, clips: Sequence[ClipRecord]) -> str | Path:
    path = _at(out, "index.jsonl")
    with storage.open_output(path) as fh:
        for clip in clips:
            fh.write((clip.model_dump_json() + "\n").encode("utf-8"))
    return path


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _warm_decoders(settings) -> list[Any]:
    """Start one import task per decode slot of the cluster, to run while the driver reads and indexes.

    A decode worker spends its first 1.5-3 s importing torch, decord and pyarrow. Ray keeps the worker processes
    that ran these tasks and leases them to the Ray Data tasks that follow (same job, same resources), so the
    imports overlap the driver's reading and indexing instead of delaying the first shards (on fight-surv, 2 CPUs:
    the whole ``prepare`` 15.0 s instead of 16.5-17.5 s). Returns the refs; nothing waits on them: if one fails,
    the shard task on that worker reports the same error with its shard.
    """
    import ray

    slots = int(ray.cluster_resources().get("CPU", 0) // settings.data.decode_cpus)
    spec = settings.clip.model_dump(mode="json")
    task = ray.remote(num_cpus=settings.data.decode_cpus, max_retries=0, scheduling_strategy="SPREAD")(
        import_decode_stack)
    return [task.remote(spec) for _ in range(max(0, min(slots, 256)))]


# ------------------------------------------------------------------------------------------- prepare
def check_local_root(root: str | Path, what: str = "--root") -> None:
    """Refuse an object-store URI for the raw videos: decord opens files, so they must be on a (mounted) path."""
    s = os.fspath(root)
    if storage.is_remote(s):
        raise ConfigError(
            f"{what} {storage.redact_uri(s)!r} is an object-store URI, but the raw videos are opened as files (decord "
            "reads a file path on the node that decodes them). Mount the bucket on every node (mountpoint-s3, s3fs or "
            "gcsfuse; see docs/cluster.md#storage) or copy it to shared storage (`aws s3 sync` / `gcloud storage "
            f"rsync`) and pass that folder as {what}. The prepared output (--out) may be an s3:// or gs:// URI."
        )


def _shard_states(plans: Sequence[ShardPlan], fs: Any, base: str, remote: bool,
                  out: Path | str) -> list[tuple[dict[str, Any] | None, int]]:
    """(parquet summary or None, size) of every planned shard's existing file, in plan order."""
    if not remote:
        states = []
        for plan in plans:
            meta = read_shard_meta(Path(out) / plan.path)
            states.append((meta, (Path(out) / plan.path).stat().st_size if meta is not None else 0))
        return states

    def one(plan: ShardPlan) -> tuple[dict[str, Any] | None, int]:
        path = f"{base}/{plan.path}"
        meta = read_shard_meta(path, filesystem=fs)
        return meta, (fs.get_file_info(path).size or 0) if meta is not None else 0

    with ThreadPoolExecutor(max_workers=16) as pool:  # one round trip or two per shard: overlap them
        return list(pool.map(one, plans))


def _remove_strays(fs: Any, base: str, remote: bool, out: Path | str, planned_paths: set[str]) -> None:
    """Delete shard files that are not in the plan and temporary files of killed tasks."""
    if not remote:
        out = Path(out)
        for split_dir in (out / "shards").glob("*") if (out / "shards").is_dir() else []:
            for stale in split_dir.glob("shard-*.parquet"):
                if f"shards/{split_dir.name}/{stale.name}" not in planned_paths:
                    stale.unlink()  # left by a run over a different index: not part of this dataset
            for partial in split_dir.glob(".shard-*.tmp"):
                partial.unlink()  # a task killed mid-write (its shard is pending, so it is redone)
        return
    import fnmatch

    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(f"{base}/shards", recursive=True, allow_not_found=True))
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(base) + 1:]
        parts = rel.split("/")
        if len(parts) != 3:
            continue
        if (fnmatch.fnmatch(parts[2], "shard-*.parquet") and rel not in planned_paths) or \
                fnmatch.fnmatch(parts[2], ".shard-*.tmp"):
            fs.delete_file(info.path)  # tasks upload whole files, so only a foreign or older run leaves these


def _connect(settings: Settings, root: str | Path, out: str | Path) -> None:
    """Join or start Ray; on a cluster of several machines, refuse a node-local root or output (every node decodes)."""
    ensure_ray(settings)
    storage.check_shared_storage(root, what="the dataset root (--root)")
    storage.check_shared_storage(out, what="the prepared output (--out)")


def prepare(source: str, root: str | Path, out: str | Path, settings=None,
            progress: Callable[[str], None] | None = _stderr) -> PrepareSummary:
    """Prepare a dataset: index, split by group, decode + preprocess on Ray Data, write shards (resumable).

    ``source`` is ``aihub``, ``folders`` or ``manifest``; ``root`` a local or mounted path (an ``s3://``/``gs://``
    root is refused with what to do instead). Writes the layout of :mod:`bigsister_ray.data.prepared` under
    ``out``, a local folder or an ``s3://`` / ``gs://`` URI. Connects to Ray per ``settings.ray`` unless Ray is
    already initialised.
    """

    settings = settings if settings is not None else Settings()
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    check_local_root(root)
    fs, base = storage.resolve(out)  # refuses a malformed or unsupported URI before any work
    remote = storage.is_remote(out)
    if remote:
        out = os.fspath(out)
    else:
        out = Path(base) if os.fspath(out).startswith("file://") else Path(out)
        out.mkdir(parents=True, exist_ok=True)
    spec: ClipSpec = settings.clip
    warming: list[Any] = []
    if not storage.exists(manifest_path(out)):  # a first run (or one that stopped): decoding is ahead, so warm up
        _connect(settings, root, out)
        warming = _warm_decoders(settings)

    videos, read_errors = read_source(source, Path(root), settings)  # type: ignore[arg-type]
    report = build_index_report(videos, settings)
    clips = report.clips
    say(f"[prepare] {len(videos)} videos read, {len(read_errors)} inputs skipped, {len(report.duplicates)} duplicates, "
        f"{len(clips)} clips planned ({', '.join(f'{s}: {sum(c.split == s for c in clips)}' for s in SPLITS)})")
    _write_index(out, clips)
    plans = plan_shards(videos, clips, spec, settings.data.shard_clips, settings.data.compression)

    # Resume: a shard is done when its file carries the planned digest.
    summaries: dict[str, dict[str, Any]] = {}
    sizes: dict[str, int] = {}
    pending: list[ShardPlan] = []
    for plan, (meta, size) in zip(plans, _shard_states(plans, fs, base, remote, out)):
        if meta is not None and meta.get("digest") == plan.digest:
            summaries[plan.path] = meta
            sizes[plan.path] = size
        else:
            pending.append(plan)
    _remove_strays(fs, base, remote, out, {p.path for p in plans})
    resumed = len(plans) - len(pending)
    if resumed:
        say(f"[prepare] resuming: {resumed} of {len(plans)} shards already done")

    done_clips = sum(s["clips"] + s["failed"] for s in summaries.values())
    if pending:
        import ray

        _connect(settings, root, out)
        rows = [{
            "path": p.path, "split": p.split, "digest": p.digest,
            "videos": json.dumps([{"video": v.model_dump(mode="json"), "clips": [c.model_dump(mode="json") for c in cs]}
                                  for v, cs in p.videos]),
        } for p in pending]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map(
            process_shard,
            # remote: the driver's filesystem (endpoint, region, options) travels with the task; credentials
            # come from each node's own environment unless the URI carries them
            fn_kwargs={"out": base if remote else str(out.resolve()), "spec": spec.model_dump(mode="json"),
                       "compression": settings.data.compression, "decode_threads": settings.data.decode_threads,
                       **({"filesystem": fs} if remote else {})},
            num_cpus=settings.data.decode_cpus,
        )
        total_clips = sum(p.clips for p in plans)
        t_decode = time.perf_counter()
        for i, result in enumerate(ds.iter_rows(), 1):
            summary = json.loads(result["summary"])
            summaries[result["path"]] = summary
            sizes[result["path"]] = int(result["bytes"])
            done_clips += summary["clips"] + summary["failed"]
            say(f"[prepare] shard {i}/{len(pending)} {result['path']}: {summary['clips']} clips written, "
                f"{summary['failed']} failed ({done_clips}/{total_clips} clips done, {time.perf_counter() - t0:.1f} s)")
        decode_seconds = time.perf_counter() - t_decode
    else:
        decode_seconds = 0.0
    del warming  # long done: they only had to run before the shards' tasks, on the same workers

    # Report.
    errors = list(read_errors)
    counts: dict[str, dict[str, int]] = {}
    shard_infos: list[ShardInfo] = []
    written = failed = 0
    failed_videos: set[str] = set()
    for plan in plans:
        s = summaries[plan.path]
        errors.extend(InputError.model_validate(e) for e in s["errors"])
        failed_videos.update(s.get("failed_videos", []))
        written += s["clips"]
        failed += s["failed"]
        for label, n in s["counts"].items():
            counts.setdefault(plan.split, {}).setdefault(label, 0)
            counts[plan.split][label] += n
        if s["clips"]:
            shard_infos.append(ShardInfo(path=plan.path, split=plan.split, clips=s["clips"], bytes=sizes[plan.path]))
    write_errors(out, errors)
    read_failed_videos = {e.path for e in read_errors}
    manifest = PreparedManifest(
        source=source, root=str(root), clip=spec, labels=list(settings.task.to_task().labels),
        fingerprint=index_fingerprint(clips, spec), shards=shard_infos, counts=counts,
        clips_written=written, clips_failed=failed, videos_failed=len(failed_videos | read_failed_videos),
    )
    write_manifest(out, manifest)
    summary = PrepareSummary(
        out=storage.redact_uri(out) if remote else str(out), clips_planned=len(clips), clips_written=written, clips_failed=failed,
        inputs_failed=len(errors), videos_failed=manifest.videos_failed, shards_total=len(plans),
        shards_written=len(pending), shards_resumed=resumed, duplicates=len(report.duplicates),
        dropped_by_task=len(report.dropped_by_task), seconds=time.perf_counter() - t0, counts=counts,
        decode_seconds=decode_seconds,
    )
    say(f"[prepare] {summary}")
    return summary
