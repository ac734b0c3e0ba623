"""Readers: turn a dataset on disk into :class:`VideoRecord` s (and :class:`InputError` s for what is unusable).

Three sources, one result (``read_source``):

* ``aihub``: the AI Hub download (class folders, zip/session folders, ``.mp4`` + ``.xml`` pairs with the same
  stem). The XML gives the class, fps, frame count, the event and the action ranges (see
  :mod:`bigsister_ray.data.annotations`); the group is the take ``<scene>-<take>`` of the file stem. No video
  is opened here: the header says enough, and decoding happens in the Ray workers.
* ``folders``: one folder per class (``fight/``, ``noFight/``, ...); each video is one whole clip. The group
  comes from a group file (``data.groups_file``, else ``ROOT/sources.txt`` when present): either the
  ``sources.txt`` format (a source line such as a URL, then ``clip: start - end`` lines) or ``clip<TAB>group``
  lines. With a group file, every video it does not list joins one group ``unlisted``; without one, every
  video is its own group. Videos are probed (frame count, fps, size).
* ``manifest``: a JSONL or CSV file with ``path, label[, start, end][, group]`` (paths relative to the
  manifest). Rows of one video are merged into one record with one event span per row.

Nothing here raises for one bad input: unreadable annotations, missing videos, unknown classes and videos
that cannot be probed come back as :class:`InputError` with the reason, and the rest is read.
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Iterable, Literal

from bigsister_ray.data.annotations import parse_aihub_xml
from bigsister_ray.data.records import InputError, Span, VideoRecord
from bigsister_ray.errors import AnnotationError, DataError, VideoDecodeError
from bigsister_ray.labels import UnknownLabelError, canonical_label

__all__ = [
    "VIDEO_EXTENSIONS",
    "SourceName",
    "read_source",
    "read_aihub",
    "read_folders",
    "read_manifest",
    "read_groups_file",
    "aihub_take",
    "UNLISTED_GROUP",
]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")
SourceName = Literal["aihub", "folders", "manifest"]
UNLISTED_GROUP = "unlisted"

_TAKE_RE = re.compile(r"^(?P<scene>\d+)-(?P<take>\d+)(?:_|$)")


def aihub_take(stem: str) -> str | None:
    """The take ``<scene>-<take>`` of an AI Hub file stem (``12-2_cam02_assault01_...`` -> ``12-2``), or None."""
    match = _TAKE_RE.match(stem)
    return f"{int(match['scene'])}-{int(match['take'])}" if match else None


def _walk(root: Path) -> Iterable[Path]:
    """Every file under ``root``, in a deterministic order (symlinks followed, hidden entries skipped)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


# --------------------------------------------------------------------------------------------------- aihub
def read_aihub(root: Path) -> tuple[list[VideoRecord], list[InputError]]:
    """Read an AI Hub download (or a synthetic one in the same layout). See the module docstring."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"aihub source: expected a folder of class folders, got {root} (not a folder)")
    xmls: list[Path] = []
    videos_by_stem: dict[tuple[Path, str], Path] = {}
    for path in _walk(root):
        suffix = path.suffix.lower()
        if suffix == ".xml":
            xmls.append(path)
        elif _is_video(path):
            videos_by_stem[(path.parent, path.stem)] = path
    records: list[VideoRecord] = []
    errors: list[InputError] = []
    used: set[Path] = set()
    for xml in xmls:
        video = videos_by_stem.get((xml.parent, xml.stem))
        if video is not None:
            used.add(video)
        try:
            ann = parse_aihub_xml(xml)
        except AnnotationError as err:
            errors.append(InputError(path=str(xml), stage="annotation", reason=str(err)))
            continue
        if video is None and ann.filename:
            candidate = xml.parent / Path(ann.filename).name
            if candidate.exists():
                video, _ = candidate, used.add(candidate)
        if video is None:
            errors.append(InputError(path=str(xml), stage="video",
                                     reason=f"video missing: expected {xml.with_suffix('.mp4').name} beside {xml.name}"))
            continue
        try:
            label = canonical_label(ann.event.name)
        except UnknownLabelError as err:
            errors.append(InputError(path=str(xml), stage="label", reason=f"event/eventname: {err}"))
            continue
        take = aihub_take(video.stem)
        spans = [Span(kind="event", name=label, start_s=ann.event.start_s, end_s=max(ann.event.start_s, ann.event.end_s))]
        for action in ann.actions:
            for a, b in action.seconds:
                spans.append(Span(kind="action", name=action.name, start_s=a, end_s=b))
        meta = {"take": take or "", "xml": str(xml), **ann.header}
        if (size := _size(video)) is not None:
            meta["size_bytes"] = str(size)
        if take is None:
            meta["group_from"] = "stem (no <scene>-<take> prefix)"
        records.append(VideoRecord(
            path=str(video), label=label, group=take or video.stem, source="aihub",
            width=ann.width, height=ann.height, fps=ann.fps, num_frames=ann.num_frames,
            duration_s=ann.duration_s, spans=spans, annotation=str(xml), meta=meta,
        ))
    for (_, _), video in sorted(videos_by_stem.items(), key=lambda kv: str(kv[1])):
        if video not in used:
            errors.append(InputError(path=str(video), stage="annotation",
                                     reason=f"no annotation: expected {video.with_suffix('.xml').name} beside the video"))
    return records, errors


# ------------------------------------------------------------------------------------------------- folders
_SOURCES_CLIP_RE = re.compile(r"^(?P<clip>[A-Za-z0-9_.\-]+?)\s*:\s*(?P<rest>.*)$")
_RANGE_NOTE_RE = re.compile(r"^\S+\s+-\s+\S+\s*:")


def read_groups_file(path: Path) -> dict[str, str]:
    """Map clip stems to groups from ``sources.txt`` format or ``clip<TAB>group`` lines.

    ``sources.txt``: a line that is not ``clip: ...`` opens a group named by that line (e.g. a URL); the
    ``clip: start - end`` lines below it belong to it. Lines that name ranges (``a - b : note``) are notes
    and are ignored. Blank lines and ``#`` comments are ignored.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise DataError(f"cannot read groups file {path}: {err.strerror or err}") from err
    groups: dict[str, str] = {}
    current: str | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "\t" in raw and "://" not in line.split("\t")[0]:
            clip, _, group = (p.strip() for p in line.partition("\t"))
            if clip and group:
                groups[Path(clip).stem] = group
                continue
        match = None if "://" in line else _SOURCES_CLIP_RE.match(line)
        if match is None:
            if not _RANGE_NOTE_RE.match(line):
                current = line  # a source line (URL or name) opens a group
            continue
        if current is None:
            raise DataError(f"{path}:{lineno}: clip line {line!r} before any source line (expected a URL line first)")
        groups[Path(match["clip"]).stem] = current
    return groups


def _probe_into(path: Path, label: str, group: str, source: str, meta: dict[str, str],
                spans: list[Span] | None = None) -> VideoRecord:
    from bigsister_ray.video.files import probe

    info = probe(path)
    meta = dict(meta)
    if (size := _size(path)) is not None:
        meta["size_bytes"] = str(size)
    return VideoRecord(
        path=str(path), label=label, group=group, source=source, width=info.width, height=info.height,
        fps=info.fps, num_frames=info.num_frames, duration_s=info.duration_s, spans=spans or [], meta=meta,
    )


def read_folders(root: Path, groups_file: Path | None = None) -> tuple[list[VideoRecord], list[InputError]]:
    """Read one-folder-per-class datasets. See the module docstring."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"folders source: expected a folder holding one folder per class, got {root} (not a folder)")
    if groups_file is None and (root / "sources.txt").is_file():
        groups_file = root / "sources.txt"
    groups = read_groups_file(groups_file) if groups_file is not None else None
    records: list[VideoRecord] = []
    errors: list[InputError] = []
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"folders source: no class folders under {root} (expected e.g. {root}/fight/*.mp4)")
    for class_dir in class_dirs:
        videos = [p for p in _walk(class_dir) if _is_video(p)]
        try:
            label = canonical_label(class_dir.name)
        except UnknownLabelError as err:
            errors.extend(InputError(path=str(v), stage="label", reason=f"class folder {class_dir.name!r}: {err}") for v in videos)
            continue
        for video in videos:
            if groups is None:
                group, meta = f"{label}/{video.stem}", {"group_from": "own (no groups file)"}
            else:
                group = groups.get(video.stem, UNLISTED_GROUP)
                meta = {"group_from": str(groups_file) if video.stem in groups else "unlisted in groups file"}
            try:
                records.append(_probe_into(video, label, group, "folders", meta))
            except VideoDecodeError as err:
                errors.append(InputError(path=str(video), stage="probe", reason=str(err)))
    return records, errors


# ------------------------------------------------------------------------------------------------ manifest
def _manifest_rows(path: Path) -> Iterable[tuple[str, dict]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise DataError(f"cannot read manifest {path}: {err.strerror or err}") from err
    if path.suffix.lower() == ".csv":
        for lineno, row in enumerate(csv.DictReader(text.splitlines()), 2):
            yield f"{path}:{lineno}", {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in row.items() if k}
    else:
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                yield f"{path}:{lineno}", {"__error__": f"not valid JSON: {err.msg}"}
                continue
            yield f"{path}:{lineno}", row if isinstance(row, dict) else {"__error__": f"expected a JSON object, got {type(row).__name__}"}


def _opt_float(row: dict, key: str) -> float | None:
    value = row.get(key)
    if value is None or value == "":
        return None
    return float(value)


def read_manifest(path: Path) -> tuple[list[VideoRecord], list[InputError]]:
    """Read a JSONL/CSV manifest (``path, label[, start, end][, group]``). See the module docstring."""
    path = Path(path)
    if path.is_dir():
        found = [p for p in (path / "manifest.jsonl", path / "manifest.csv") if p.is_file()]
        if not found:
            raise DataError(f"manifest source: expected a .jsonl or .csv file (or a folder holding manifest.jsonl), got {path}")
        path = found[0]
    if path.suffix.lower() not in (".jsonl", ".json", ".csv"):
        raise DataError(f"manifest source: expected a .jsonl or .csv file, got {path}")
    errors: list[InputError] = []
    by_video: dict[str, dict] = {}
    for where, row in _manifest_rows(path):
        if "__error__" in row:
            errors.append(InputError(path=where, stage="manifest", reason=row["__error__"]))
            continue
        if not row.get("path") or not row.get("label"):
            errors.append(InputError(path=where, stage="manifest", reason=f"expected fields path and label, got {sorted(row)}"))
            continue
        try:
            label = canonical_label(str(row["label"]))
        except UnknownLabelError as err:
            errors.append(InputError(path=where, stage="label", reason=str(err)))
            continue
        try:
            start, end = _opt_float(row, "start"), _opt_float(row, "end")
        except (TypeError, ValueError):
            errors.append(InputError(path=where, stage="manifest", reason=f"start/end: expected seconds, got {row.get('start')!r}, {row.get('end')!r}"))
            continue
        if (start is None) != (end is None) or (start is not None and (start < 0 or end < start)):
            errors.append(InputError(path=where, stage="manifest", reason=f"start/end: expected both or neither, 0 <= start <= end, got {start!r}, {end!r}"))
            continue
        video = (path.parent / str(row["path"])).resolve() if not Path(str(row["path"])).is_absolute() else Path(str(row["path"]))
        entry = by_video.setdefault(str(video), {"label": label, "group": str(row.get("group") or ""), "spans": [], "where": where})
        if entry["label"] != label:
            errors.append(InputError(path=where, stage="manifest", reason=f"{video}: label {label!r} conflicts with {entry['label']!r} from {entry['where']}"))
            continue
        if start is not None:
            entry["spans"].append(Span(kind="event", name=label, start_s=start, end_s=end))
    records: list[VideoRecord] = []
    for video, entry in by_video.items():
        group = entry["group"] or Path(video).stem
        try:
            records.append(_probe_into(Path(video), entry["label"], group, "manifest", {"row": entry["where"]}, entry["spans"]))
        except VideoDecodeError as err:
            errors.append(InputError(path=video, stage="probe", reason=str(err)))
    return records, errors


# -------------------------------------------------------------------------------------------------- public
def read_source(source: SourceName, root: Path, settings=None) -> tuple[list[VideoRecord], list[InputError]]:
    """Read a dataset: ``source`` is ``aihub``, ``folders`` or ``manifest``; ``settings`` gives ``data.groups_file``.

    Returns every usable video and every input that was skipped, with its reason. Raises
    :class:`DataError` only when the root itself is unusable (missing, wrong kind).
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{source} source: {root} does not exist (expected the dataset root{' or manifest file' if source == 'manifest' else ''})")
    if source == "aihub":
        return read_aihub(root)
    if source == "folders":
        groups_file = settings.data.groups_file if settings is not None else None
        return read_folders(root, groups_file)
    if source == "manifest":
        return read_manifest(root)
    raise DataError(f"unknown source {source!r}: expected aihub, folders or manifest")
