"""A synthetic dataset in the exact AI Hub layout, whose classes differ by how rendered actors move.

No raw video of AI Hub dataset 171 is public, so tests and the demo need a stand-in that a reader cannot
tell apart by its layout and annotations, and that a small 3D CNN can learn from its pixels::

    out/
      01.폭행(assult)/                                   class folder (labels.aihub_folder_name)
        insidedoor_01/                                   zip group
          101-1/                                         session = take <scene>-<take>
            101-1_cam02_assault01_place04_day_summer.mp4
            101-1_cam02_assault01_place04_day_summer.xml
            101-1_cam05_assault01_place04_day_summer.mp4  the same take seen by another camera
            ...

Every take is filmed by one to three cameras (the same choreography from different viewpoints, with their
own background and sensor noise), so splitting by file instead of by take leaks. The XML has AI Hub's
structure (``annotation/folder/filename/size/header/event/object``, see ``fixtures/aihub/FORMAT.md``), its
time formats (``HH:MM:SS.s``), its looser conventions (``person_1``/``Person_1``/``Person01``, action frame
ranges split, touching or listed out of order) and its event intervals that are wider than the behaviour.

Videos are small (160 x 120 at 15 fps by default) but otherwise faithful: a textured background with a
fence, person-like figures (head, torso, arms, legs) that walk slowly, and, only inside the annotated action
span, the class's behaviour: ``fight`` both actors jitter and punch; ``assault`` one strikes, the other
recoils and falls; ``datefight`` a pair shoves back and forth; ``drunken`` sways and zigzags; ``trespass``
climbs over the fence; ``swoon`` totters and falls; ``wander`` circles with stop-and-go; ``burglary`` picks
up a box and runs; ``vandalism`` kicks a sign over; ``dump`` throws a bag down and leaves; ``robbery``
tugs a bag away and runs; ``kidnap`` two drag a third away. Outside the span everybody walks normally, so
``normal`` negatives can be mined from the same videos.

Each take is planned once in world coordinates (:mod:`.synth_scene`: the actors, the props and the behaviour,
frame by frame) and filmed by each of its cameras (:mod:`.synth_render`); this module chooses the takes, names
the files, writes the videos and their XML, and checks the arguments.

Everything is deterministic: the same arguments and seed give byte-identical XML and identical frames.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from bigsister_ray.data.synth_render import Canvas, make_camera, render
from bigsister_ray.data.synth_scene import BEHAVIOURS, Plan, choreograph, finish_poses
from bigsister_ray.labels import AIHUB_EVENTS, NORMAL, aihub_folder_name, canonical_label

if TYPE_CHECKING:
    from bigsister_ray.config import Settings

__all__ = [
    "DEFAULT_FPS",
    "DEFAULT_SIZE",
    "BEHAVIOURS",
    "SynthVideo",
    "SynthSummary",
    "synthesize",
    "render_video",
    "render_frames",
    "format_hms",
]

DEFAULT_FPS = 15.0
DEFAULT_SIZE: tuple[int, int] = (160, 120)

_SEASONS = ("spring", "summer", "autumn", "winter")
_ZIP_GROUPS = ("inside_croki", "insidedoor", "outsidedoor")
_OBJECT_NAMES = ("person_{i}", "Person_{i}", "Person{i:02d}", "person_{i}")


# ----------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class SynthVideo:
    """One written video and what it shows."""

    mp4: Path
    xml: Path
    label: str
    group: str  # the take, <scene>-<take>
    camera: int
    span_s: tuple[float, float]  # where the behaviour is (the union of the action ranges), seconds
    event_s: tuple[float, float]  # the annotated event interval (wider, as in AI Hub), seconds
    frames: int
    fps: float


@dataclass
class SynthSummary:
    """What :func:`synthesize` wrote. ``str()`` gives a short table."""

    out: Path
    videos: list[SynthVideo] = field(default_factory=list)
    seconds: float = 0.0
    fps: float = DEFAULT_FPS
    size: tuple[int, int] = DEFAULT_SIZE
    seed: int = 0
    duplicates: list[Path] = field(default_factory=list)  # session folders copied byte-identical into another zip group

    @property
    def counts(self) -> dict[str, int]:
        """Videos per class."""
        return dict(sorted(Counter(v.label for v in self.videos).items()))

    @property
    def groups(self) -> dict[str, list[str]]:
        """Takes per class."""
        out: dict[str, set[str]] = {}
        for v in self.videos:
            out.setdefault(v.label, set()).add(v.group)
        return {k: sorted(s) for k, s in sorted(out.items())}

    def __str__(self) -> str:
        w, h = self.size
        n_groups = len({v.group for v in self.videos})
        lines = [
            f"synthetic AI Hub dataset: {len(self.videos)} videos, {n_groups} takes, "
            f"{self.seconds:g} s each at {self.fps:g} fps, {w}x{h}, seed {self.seed}",
            f"  root: {self.out}",
            f"  {'class':<10} {'videos':>6} {'takes':>6}  folder",
        ]
        groups = self.groups
        for label, count in self.counts.items():
            lines.append(f"  {label:<10} {count:>6} {len(groups[label]):>6}  {aihub_folder_name(label)}")
        if self.duplicates:
            lines.append(f"  + {len(self.duplicates)} session folder(s) duplicated into a second zip group (as in AI Hub)")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------- public API


def _check_render_args(label: str, seconds: float, fps: float, size: tuple[int, int]) -> str:
    name = canonical_label(label)
    if name not in BEHAVIOURS:
        raise ValueError(f"no synthetic behaviour for class {label!r}: expected one of {', '.join(BEHAVIOURS)}")
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"expected seconds > 0, got {seconds!r}")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and 1 <= fps <= 120):
        raise ValueError(f"expected fps between 1 and 120, got {fps!r}")
    if len(size) != 2 or min(size) < 32 or max(size) > 4096:
        raise ValueError(f"expected size (width, height) between 32 and 4096 pixels, got {size!r}")
    return name


def _span_frames(abnormal_span: tuple[float, float] | None, n: int, fps: float) -> tuple[int, int] | None:
    if abnormal_span is None:
        return None
    start_s, end_s = abnormal_span
    if not (0 <= start_s < end_s):
        raise ValueError(f"expected abnormal_span (start_s, end_s) with 0 <= start_s < end_s, got {abnormal_span!r}")
    a = int(round(start_s * fps))
    b = min(n, int(round(end_s * fps)))
    if b - a < 2:
        raise ValueError(f"abnormal_span {abnormal_span!r} covers fewer than 2 frames of a {n / fps:g} s video at {fps:g} fps")
    return a, b


def render_frames(label: str, seconds: float, fps: float = DEFAULT_FPS, size: tuple[int, int] = DEFAULT_SIZE,
                  seed: int = 0, abnormal_span: tuple[float, float] | None = None) -> Iterator[np.ndarray]:
    """The frames :func:`render_video` writes (H x W x 3 uint8 RGB), generated lazily."""
    name = _check_render_args(label, seconds, fps, size)
    n = max(2, int(round(seconds * fps)))
    span = None if name == NORMAL else _span_frames(abnormal_span, n, fps)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 7919])
    plan = choreograph(name, n, fps, span, rng)
    finish_poses(plan)
    cam = make_camera(rng, night=False)
    return render(plan, Canvas(int(size[0]), int(size[1]), cam), noise_seed=cam.seed + 1)


def render_video(path: str | Path, label: str, seconds: float, fps: float = DEFAULT_FPS,
                 size: tuple[int, int] = DEFAULT_SIZE, seed: int = 0,
                 abnormal_span: tuple[float, float] | None = None) -> None:
    """Write one mp4 whose actors walk normally outside ``abnormal_span`` and behave like ``label`` inside it.

    ``abnormal_span`` is ``(start_s, end_s)`` in seconds (clamped to the video); ``None`` or
    ``label="normal"`` gives a video of normal walking only. Used by tests that need "a clip whose
    abnormal segment is known". Deterministic in ``seed``.
    """
    from bigsister_ray.video.writer import write_mp4

    write_mp4(path, render_frames(label, seconds, fps, size, seed, abnormal_span), fps)


def format_hms(seconds: float) -> str:
    """AI Hub's time format: ``HH:MM:SS.s`` (tenths), e.g. 311.23 -> ``00:05:11.2``."""
    tenths = int(round(max(0.0, seconds) * 10))
    h, rem = divmod(tenths, 36000)
    m, rem = divmod(rem, 600)
    s, t = divmod(rem, 10)
    return f"{h:02d}:{m:02d}:{s:02d}.{t}"


def _fmt_fps(fps: float) -> str:
    return str(int(fps)) if float(fps).is_integer() else f"{fps:g}"


def _sub(parent: ET.Element, tag: str, text: object | None = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = str(text)
    return el


def _annotation_xml(plan: Plan, canvas: Canvas, stem: str, header: dict[str, str],
                    event: tuple[float, float], name_style: int) -> bytes:
    root = ET.Element("annotation")
    _sub(root, "folder", plan.label)
    _sub(root, "filename", f"{stem}.mp4")
    size = _sub(root, "size")
    _sub(size, "width", canvas.w)
    _sub(size, "height", canvas.h)
    _sub(size, "depth", 3)
    head = _sub(root, "header")
    for key in ("duration", "fps", "frames", "inout", "location", "season", "weather", "time", "population", "character"):
        _sub(head, key, header[key])
    ev = _sub(root, "event")
    _sub(ev, "eventname", plan.label)
    _sub(ev, "starttime", format_hms(event[0]))
    _sub(ev, "duration", format_hms(event[1] - event[0]))
    for k, actor in enumerate(plan.actors[: plan.involved]):
        obj = _sub(root, "object")
        _sub(obj, "objectname", _OBJECT_NAMES[name_style % len(_OBJECT_NAMES)].format(i=k + 1))
        key = min(s for _, ranges in actor.actions for s, _ in ranges) if actor.actions else 0
        px, py, body = canvas.ground(float(actor.x[key]), float(actor.y[key]))
        pos = _sub(obj, "position")
        _sub(pos, "keyframe", key)
        kp = _sub(pos, "keypoint")
        _sub(kp, "x", int(round(min(max(px, 0), canvas.w - 1))))
        _sub(kp, "y", int(round(min(max(py - 0.5 * body, 0), canvas.h - 1))))
        for action, ranges in actor.actions:
            act = _sub(obj, "action")
            _sub(act, "actionname", action)
            for s, e in ranges:
                fr = _sub(act, "frame")
                _sub(fr, "start", s)
                _sub(fr, "end", e)
    ET.indent(root, space="    ")
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _choose_labels(settings: "Settings | None", labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        if settings is None:
            from bigsister_ray.config import Settings

            settings = Settings()
        chosen = list(settings.task.to_task().abnormal)
    else:
        chosen = [canonical_label(x) for x in labels]
    if not chosen:
        raise ValueError("expected at least one abnormal class to synthesize, got none (the task lists only 'normal'?)")
    for name in chosen:
        if name == NORMAL:
            raise ValueError(
                "'normal' has no AI Hub folder: normal clips are mined outside the annotated spans of every "
                "synthetic video; list abnormal classes only"
            )
    return list(dict.fromkeys(chosen))


def _split_takes(count: int, rng: np.random.Generator, cameras_per_take: float = 2.4) -> list[int]:
    """Cameras per take, summing to ``count``: as many takes as keep them near ``cameras_per_take`` (2-3 by
    default), and at least three takes when there are three videos or more (so a class can reach train, val
    and test)."""
    takes = min(count, max(3, round(count / cameras_per_take)))
    sizes = [count // takes + (1 if i < count % takes else 0) for i in range(takes)]
    rng.shuffle(sizes)
    return [int(x) for x in sizes]


def _span_for(seconds: float, rng: np.random.Generator) -> tuple[float, float]:
    """Where the behaviour happens: 25-40 % of the video, leaving one long stretch of normal activity."""
    length = min(max(seconds * rng.uniform(0.25, 0.4), min(2.0, seconds * 0.5)), seconds * 0.6)
    free = seconds - length
    before = free * (rng.uniform(0.15, 0.3) if rng.random() < 0.5 else rng.uniform(0.7, 0.85))
    return round(before, 1), round(before + length, 1)


def synthesize(out: Path, videos: int = 24, seconds: float = 12.0, seed: int = 0,
               settings: "Settings | None" = None, labels: Sequence[str] | None = None, *,
               fps: float = DEFAULT_FPS, size: tuple[int, int] = DEFAULT_SIZE,
               duplicate_sessions: int = 0, cameras_per_take: float = 2.4) -> SynthSummary:
    """Write ``videos`` mp4 + XML pairs in the AI Hub layout under ``out`` and return what was written.

    Videos are spread evenly over ``labels`` (default: the abnormal classes of ``settings.task``), grouped
    into takes of two or three cameras. Each video is ``seconds`` long at ``fps`` and ``size``; its
    behaviour fills 25-40 % of it (the action ranges), the event interval is a little wider.
    ``cameras_per_take`` (at least 1) sets how many cameras film a take on average: fewer cameras per take
    means more independent takes (choreographies) for the same number of videos.
    ``duplicate_sessions`` copies that many session folders, byte-identical, into a second zip group of the
    same class, as the AI Hub download does (readers must count each video once). Existing files
    with the same names are overwritten; the same arguments always write the same bytes of XML and the
    same frames.
    """
    from bigsister_ray.video.writer import write_mp4

    if not isinstance(videos, int) or videos < 1:
        raise ValueError(f"expected videos >= 1, got {videos!r}")
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 2.0):
        raise ValueError(f"expected seconds >= 2 (room for behaviour and normal activity), got {seconds!r}")
    if not (isinstance(cameras_per_take, (int, float)) and math.isfinite(cameras_per_take) and cameras_per_take >= 1):
        raise ValueError(f"expected cameras_per_take >= 1, got {cameras_per_take!r}")
    classes = _choose_labels(settings, labels)
    for name in classes:
        _check_render_args(name, seconds, fps, size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = SynthSummary(out=out, seconds=float(seconds), fps=float(fps), size=(int(size[0]), int(size[1])), seed=seed)
    root_rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 1])
    per_class = [videos // len(classes) + (1 if i < videos % len(classes) else 0) for i in range(len(classes))]
    n = max(2, int(round(seconds * fps)))
    take_no = 0
    for label, count in zip(classes, per_class):
        if count == 0:
            continue
        number = next(e.number for e in AIHUB_EVENTS if e.name == label)
        folder = out / aihub_folder_name(label)
        for k, cams in enumerate(_split_takes(count, root_rng, cameras_per_take)):
            take_no += 1
            rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 2, take_no])
            scene, take = number * 100 + k // 3 + 1, k % 3 + 1
            group = f"{scene}-{take}"
            zip_kind = _ZIP_GROUPS[int(rng.integers(0, len(_ZIP_GROUPS)))]
            zip_dir = f"{zip_kind}_{int(rng.integers(1, 3)):02d}"
            place = int(rng.integers(1, 20))
            night = bool(rng.random() < 0.3)
            season = _SEASONS[int(rng.integers(0, 4))]
            weather = "SUNNY" if zip_kind != "outsidedoor" else str(rng.choice(["SUNNY", "CLOUDY", "RAINY"]))
            start_s, end_s = _span_for(float(seconds), rng)
            span = _span_frames((start_s, end_s), n, fps) or (0, n)  # never None for a given span
            plan = choreograph(label, n, fps, span, rng)
            finish_poses(plan)
            a_s, b_s = span[0] / fps, span[1] / fps
            pad = min(1.0, 0.08 * seconds)  # wider than the behaviour, as in AI Hub, but not the whole video
            ev0 = math.floor(max(0.0, a_s - rng.uniform(0.3, 1.0) * pad) * 10) / 10
            ev1 = math.ceil(min(n / fps, b_s + rng.uniform(0.3, 1.0) * pad) * 10) / 10
            header = {
                "duration": format_hms(n / fps),
                "fps": _fmt_fps(fps),
                "frames": str(n),
                "inout": "OUT" if zip_kind == "outsidedoor" else "IN",
                "location": f"PLACE{place:02d}",
                "season": season.upper(),
                "weather": weather,
                "time": "NIGHT" if night else "DAY",
                "population": str(len(plan.actors)),
                "character": ",".join(a.character for a in plan.actors[: max(1, plan.involved)]),
            }
            cam_numbers = sorted(int(c) for c in rng.choice(np.arange(1, 9), size=cams, replace=False))
            name_style = int(rng.integers(0, len(_OBJECT_NAMES)))
            for cam_no in cam_numbers:
                cam = make_camera(rng, night)
                canvas = Canvas(int(size[0]), int(size[1]), cam)
                stem = f"{group}_cam{cam_no:02d}_{label}{(k % 9) + 1:02d}_place{place:02d}_{'night' if night else 'day'}_{season}"
                session = folder / zip_dir / group
                session.mkdir(parents=True, exist_ok=True)
                mp4, xml = session / f"{stem}.mp4", session / f"{stem}.xml"
                write_mp4(mp4, render(plan, canvas, noise_seed=cam.seed + 1), fps)
                xml.write_bytes(_annotation_xml(plan, canvas, stem, header, (ev0, ev1), name_style))
                summary.videos.append(SynthVideo(mp4=mp4, xml=xml, label=label, group=group, camera=cam_no,
                                                 span_s=(a_s, b_s), event_s=(ev0, ev1), frames=n, fps=float(fps)))
    if duplicate_sessions:
        import shutil

        sessions = sorted({v.mp4.parent for v in summary.videos})
        for session in sessions[: max(0, int(duplicate_sessions))]:
            zip_dir = session.parent
            kind, number = zip_dir.name.rsplit("_", 1)
            twin = zip_dir.parent / f"{kind}_{int(number) + 10:02d}" / session.name
            shutil.copytree(session, twin, dirs_exist_ok=True)
            summary.duplicates.append(twin)
    return summary
