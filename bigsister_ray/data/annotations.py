"""AI Hub "이상행동 CCTV 영상" XML annotations, parsed safely and robustly.

Parsing goes through :mod:`defusedxml` (no entity expansion, no DTDs, no external entities). The format and
its traps are described in ``shared/fixtures/aihub/FORMAT.md``; this module handles each of them:

* times are ``HH:MM:SS.s`` (also ``MM:SS.s``, plain seconds, or ``HH:MM:SS:FF``-free variants): parsed to float
  seconds, never truncated to whole seconds;
* the event ``duration`` is a length, not an end time;
* ``header/frames`` may be 0 or negative: treated as unknown;
* action ``frame`` ranges may be out of order, touch or overlap, and end at the frame count: they are sorted,
  merged and clamped to ``[0, frames]``;
* ``objectname`` spellings vary (``person_1``, ``Person01``, ``Person``) and action names contain spaces
  (``stop and go``): both kept as written (stripped);
* class spellings (``assult``) go through :func:`bigsister_ray.labels.canonical_label` later, in the reader.

Everything that makes a file unusable raises :class:`bigsister_ray.errors.AnnotationError` naming the file and
the field, so the pipeline can record it and skip that video.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from bigsister_ray.errors import AnnotationError

__all__ = [
    "AihubEvent",
    "AihubAction",
    "AihubAnnotation",
    "parse_time",
    "merge_ranges",
    "parse_aihub_xml",
    "parse_aihub_bytes",
]

#: Refuse to parse annotation files larger than this (a real one is a few kB).
MAX_XML_BYTES = 8 * 1024 * 1024

_TIME_RE = re.compile(r"^\s*(?:(?P<h>\d+):)?(?P<m>\d+):(?P<s>\d+(?:\.\d*)?)\s*$")


def parse_time(text: str) -> float:
    """``HH:MM:SS.s`` / ``MM:SS.s`` / ``SS.s`` -> seconds (float; fractions kept).

    Raises ``ValueError`` with the text when it is none of these.
    """
    if text is None:
        raise ValueError("expected a time like HH:MM:SS.s, got nothing")
    raw = str(text).strip()
    match = _TIME_RE.match(raw)
    if match:
        hours = int(match["h"] or 0)
        minutes = int(match["m"])
        seconds = float(match["s"])
        if minutes >= 60 and match["h"] is not None:
            raise ValueError(f"expected a time like HH:MM:SS.s, got {raw!r} (minutes >= 60)")
        return hours * 3600 + minutes * 60 + seconds
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"expected a time like HH:MM:SS.s, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"expected a non-negative time, got {raw!r}")
    return value


def merge_ranges(ranges: Iterable[tuple[int, int]], num_frames: int | None = None) -> list[tuple[int, int]]:
    """Sort, clamp (to ``[0, num_frames]`` when known) and merge touching or overlapping frame ranges.

    Reversed ranges (``end < start``) are swapped; empty ones after clamping are dropped.
    """
    cleaned: list[tuple[int, int]] = []
    for start, end in ranges:
        a, b = (start, end) if start <= end else (end, start)
        a = max(0, a)
        if num_frames is not None and num_frames > 0:
            a, b = min(a, num_frames), min(b, num_frames)
        if b > a:
            cleaned.append((a, b))
    cleaned.sort()
    merged: list[tuple[int, int]] = []
    for a, b in cleaned:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


@dataclass(frozen=True)
class AihubEvent:
    """The ``<event>``: its name as written and its interval in seconds (``end_s = start + duration``)."""

    name: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class AihubAction:
    """One action of one person: merged frame ranges and the same in seconds."""

    name: str
    person: str
    frames: tuple[tuple[int, int], ...]
    seconds: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class AihubAnnotation:
    """What one XML file says about its video."""

    path: str
    folder: str | None
    filename: str | None
    width: int | None
    height: int | None
    fps: float
    num_frames: int | None
    duration_s: float | None
    event: AihubEvent
    actions: tuple[AihubAction, ...] = ()
    header: dict[str, str] = field(default_factory=dict)


def _text(node, tag: str) -> str | None:
    child = node.find(tag) if node is not None else None
    if child is None or child.text is None:
        return None
    value = child.text.strip()
    return value or None


def _require(node, tag: str, path: str, where: str) -> str:
    value = _text(node, tag)
    if value is None:
        raise AnnotationError(f"{path}: missing field {where}/{tag} (expected AI Hub XML, see FORMAT.md)")
    return value


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


def parse_aihub_bytes(data: bytes, path: str = "<bytes>") -> AihubAnnotation:
    """Parse one AI Hub XML document (bytes). See :func:`parse_aihub_xml`."""
    from xml.etree.ElementTree import ParseError

    import defusedxml.ElementTree as ET
    from defusedxml import DefusedXmlException

    if not data or not data.strip():
        raise AnnotationError(f"{path}: empty annotation file (expected AI Hub XML)")
    try:
        root = ET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as err:
        raise AnnotationError(f"{path}: refused unsafe XML ({type(err).__name__}: DTDs and entities are not allowed)") from err
    except ParseError as err:
        raise AnnotationError(f"{path}: not well-formed XML: {err}") from err
    if root.tag != "annotation":
        raise AnnotationError(f"{path}: expected a root element <annotation>, got <{root.tag}>")

    header = root.find("header")
    if header is None:
        raise AnnotationError(f"{path}: missing field annotation/header (expected AI Hub XML, see FORMAT.md)")
    fps_text = _require(header, "fps", path, "header")
    try:
        fps = float(fps_text)
    except ValueError:
        raise AnnotationError(f"{path}: header/fps: expected a number, got {fps_text!r}") from None
    if not math.isfinite(fps) or fps <= 0:
        raise AnnotationError(f"{path}: header/fps: expected a positive number, got {fps_text!r}")
    num_frames = _int_or_none(_text(header, "frames"))
    if num_frames is not None and num_frames <= 0:
        num_frames = None  # reported 0 or negative in some files: unknown
    duration_s: float | None = None
    duration_text = _text(header, "duration")
    if duration_text is not None:
        try:
            duration_s = parse_time(duration_text) or None
        except ValueError:
            duration_s = None  # the frame count (or the video itself) tells the length instead
    if duration_s is None and num_frames is not None:
        duration_s = num_frames / fps

    event_node = root.find("event")
    if event_node is None:
        raise AnnotationError(f"{path}: missing field annotation/event (expected AI Hub XML, see FORMAT.md)")
    event_name = _require(event_node, "eventname", path, "event")
    try:
        start_s = parse_time(_require(event_node, "starttime", path, "event"))
        length_s = parse_time(_require(event_node, "duration", path, "event"))
    except ValueError as err:
        raise AnnotationError(f"{path}: event: {err}") from err
    end_s = start_s + length_s
    if duration_s is not None:
        start_s, end_s = min(start_s, duration_s), min(end_s, duration_s)

    clamp_frames = num_frames if num_frames is not None else (round(duration_s * fps) if duration_s else None)
    actions: list[AihubAction] = []
    for obj in root.findall("object"):
        person = _text(obj, "objectname") or "person"
        for action in obj.findall("action"):
            name = _text(action, "actionname")
            if name is None:
                continue  # an action without a name localises nothing we can label
            ranges = []
            for frame in action.findall("frame"):
                a, b = _int_or_none(_text(frame, "start")), _int_or_none(_text(frame, "end"))
                if a is not None and b is not None:
                    ranges.append((a, b))
            merged = merge_ranges(ranges, clamp_frames)
            if merged:
                actions.append(AihubAction(
                    name=" ".join(name.split()),
                    person=person,
                    frames=tuple(merged),
                    seconds=tuple((a / fps, b / fps) for a, b in merged),
                ))

    size = root.find("size")
    info = {k: v for k in ("inout", "location", "season", "weather", "time", "population", "character")
            if (v := _text(header, k)) is not None}
    return AihubAnnotation(
        path=path,
        folder=_text(root, "folder"),
        filename=_text(root, "filename"),
        width=_int_or_none(_text(size, "width")) if size is not None else None,
        height=_int_or_none(_text(size, "height")) if size is not None else None,
        fps=fps,
        num_frames=num_frames,
        duration_s=duration_s,
        event=AihubEvent(name=event_name, start_s=start_s, end_s=end_s),
        actions=tuple(actions),
        header=info,
    )


def parse_aihub_xml(path: str | Path) -> AihubAnnotation:
    """Parse one AI Hub XML file. Raises :class:`AnnotationError` naming the file and the field at fault."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_XML_BYTES:
            raise AnnotationError(f"{p}: annotation is {size} bytes, expected at most {MAX_XML_BYTES} (not an AI Hub XML?)")
        data = p.read_bytes()
    except OSError as err:
        raise AnnotationError(f"{p}: cannot read annotation: {err.strerror or err}") from err
    return parse_aihub_bytes(data, str(p))
