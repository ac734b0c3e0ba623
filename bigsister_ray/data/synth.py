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

#: What each class looks like inside its span, and the AI Hub action names annotated for it.
BEHAVIOURS: dict[str, str] = {
    "assault": "one actor punches and kicks fast, the other recoils and falls (punching, kicking, falldown)",
    "fight": "two actors close together, both jittering and punching (punching, kicking, pushing)",
    "datefight": "a pair shoving back and forth (pushing, pulling)",
    "drunken": "one actor swaying and zigzagging with stop-and-go (totter)",
    "trespass": "one actor climbing over the fence (climbwall)",
    "swoon": "one actor totters, falls and lies still (totter, falldown)",
    "wander": "one actor circling with stop-and-go (around, stop and go)",
    "burglary": "one actor crouches, picks up a box and runs off (pulling, running)",
    "vandalism": "one actor kicks a sign until it topples (kicking)",
    "dump": "one actor throws a bag down and walks off (throwing, walking)",
    "robbery": "one actor threatens another, tugs their bag away and runs (threaten, pulling, running)",
    "kidnap": "two actors grab a third and drag them away (pulling, running)",
    NORMAL: "slow walking",
}

_FENCE_Y = 0.3  # world depth of the fence line (0 = far, 1 = near)
_WALK_BOX = (0.06, 0.94, 0.36, 0.95)  # x_lo, x_hi, y_lo, y_hi where people walk (the near side of the fence)
_FAR_BOX = (0.06, 0.94, 0.04, 0.26)  # beyond the fence
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


# ------------------------------------------------------------------------------------------- the world


def _fold(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect values into [lo, hi] (a walker bouncing off the edges of its area); identity inside."""
    span = hi - lo
    u = np.mod(v - lo, 2 * span)
    return lo + np.where(u > span, 2 * span - u, u)


def _smooth_noise(rng: np.random.Generator, n: int, fps: float, hz: float) -> np.ndarray:
    """Zero-mean, unit-ish noise with energy up to about ``hz`` (random knots, linearly interpolated)."""
    step = max(1, int(round(fps / max(hz, 1e-3))))
    knots = rng.standard_normal(n // step + 2)
    return np.interp(np.arange(n), np.arange(len(knots)) * step, knots)


@dataclass
class _Actor:
    """One person's state per frame, in world units (x across, y depth, z height in body heights)."""

    n: int
    shirt: tuple[int, int, int]
    pants: tuple[int, int, int]
    skin: tuple[int, int, int]
    character: str
    x: np.ndarray = None  # type: ignore[assignment]
    y: np.ndarray = None  # type: ignore[assignment]
    z: np.ndarray = None  # type: ignore[assignment]
    # pose overrides (NaN: computed from walking)
    tilt: np.ndarray = None  # type: ignore[assignment]
    arm_l: np.ndarray = None  # type: ignore[assignment]
    arm_r: np.ndarray = None  # type: ignore[assignment]
    legs: np.ndarray = None  # type: ignore[assignment]
    facing: np.ndarray = None  # type: ignore[assignment]
    crouch: np.ndarray = None  # type: ignore[assignment]
    actions: list[tuple[str, list[tuple[int, int]]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        nan = np.full(self.n, np.nan)
        for name in ("x", "y", "tilt", "arm_l", "arm_r", "legs", "facing"):
            if getattr(self, name) is None:
                setattr(self, name, nan.copy())
        if self.z is None:
            self.z = np.zeros(self.n)
        if self.crouch is None:
            self.crouch = np.zeros(self.n)


@dataclass
class _Prop:
    """A box, bag or sign: position per frame (x, y, z as for actors), size in body heights, tilt."""

    n: int
    color: tuple[int, int, int]
    w: float
    h: float
    x: np.ndarray = None  # type: ignore[assignment]
    y: np.ndarray = None  # type: ignore[assignment]
    z: np.ndarray = None  # type: ignore[assignment]
    tilt: np.ndarray = None  # type: ignore[assignment]
    visible: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.x = np.zeros(self.n) if self.x is None else self.x
        self.y = np.zeros(self.n) if self.y is None else self.y
        self.z = np.zeros(self.n) if self.z is None else self.z
        self.tilt = np.zeros(self.n) if self.tilt is None else self.tilt
        self.visible = np.ones(self.n, dtype=bool) if self.visible is None else self.visible


@dataclass
class _Plan:
    """A take: who moves how, in world coordinates, shared by every camera that films it."""

    label: str
    n: int
    fps: float
    span: tuple[int, int] | None  # frames [a, b) of the behaviour
    actors: list[_Actor]
    props: list[_Prop]
    involved: int  # the first `involved` actors are annotated (objects in the XML)


def _random_person(rng: np.random.Generator, n: int) -> _Actor:
    shirt = tuple(int(c) for c in rng.integers(30, 235, 3))
    pants = tuple(int(c) for c in rng.integers(20, 110, 3))
    tone = int(rng.integers(120, 225))
    skin = (tone, int(tone * 0.8), int(tone * 0.65))
    character = f"{rng.choice(['M', 'F'])}{int(rng.choice([10, 20, 30, 40, 50, 60]))}"
    return _Actor(n=n, shirt=shirt, pants=pants, skin=skin, character=character)


def _walk_velocity(rng: np.random.Generator, toward_x: float | None = None) -> np.ndarray:
    """A slow walking velocity in world units per second (about 0.03-0.06 of the frame width per second)."""
    speed = rng.uniform(0.03, 0.06)
    if toward_x is None:
        angle = rng.uniform(0, 2 * math.pi)
    else:
        angle = rng.uniform(-0.5, 0.5) + (0.0 if toward_x > 0 else math.pi)
    return np.array([math.cos(angle) * speed, math.sin(angle) * speed * 0.6])


def _walk(actor: _Actor, frames: np.ndarray, fps: float, anchor_frame: int, anchor: np.ndarray,
          vel: np.ndarray, box: tuple[float, float, float, float]) -> None:
    """Normal walking on ``frames``: a straight line through ``anchor`` at ``anchor_frame``, bouncing in ``box``."""
    if len(frames) == 0:
        return
    t = (frames - anchor_frame) / fps
    actor.x[frames] = _fold(anchor[0] + vel[0] * t, box[0], box[1])
    actor.y[frames] = _fold(anchor[1] + vel[1] * t, box[2], box[3])


def _walk_outside(actor: _Actor, plan_n: int, fps: float, a: int, b: int, start: np.ndarray, end: np.ndarray,
                  vel_in: np.ndarray, vel_out: np.ndarray, box_in=_WALK_BOX, box_out=_WALK_BOX) -> None:
    """Walk into ``start`` at frame ``a`` and out of ``end`` from frame ``b`` (the span is filled by the caller)."""
    _walk(actor, np.arange(0, a), fps, a, start, vel_in, box_in)
    _walk(actor, np.arange(b, plan_n), fps, b, end, vel_out, box_out)


def _set_span(actor: _Actor, idx: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
    actor.x[idx] = np.clip(x, _WALK_BOX[0], _WALK_BOX[1])
    actor.y[idx] = y


def _frames_of(a: int, b: int, lo: float, hi: float) -> tuple[int, int]:
    """Frame range of the fraction [lo, hi] of the span [a, b)."""
    return a + int(round(lo * (b - a))), a + int(round(hi * (b - a)))


def _choreograph(label: str, n: int, fps: float, span: tuple[int, int] | None, rng: np.random.Generator) -> _Plan:
    """Plan one take: positions and pose overrides of every actor and prop, per frame."""
    actors: list[_Actor] = []
    props: list[_Prop] = []

    if span is None or label == NORMAL:
        for _ in range(int(rng.integers(1, 4))):
            actor = _random_person(rng, n)
            start = np.array([rng.uniform(0.15, 0.85), rng.uniform(0.45, 0.9)])
            turn = int(rng.integers(n // 4, max(n // 4 + 1, 3 * n // 4)))
            v1, v2 = _walk_velocity(rng), _walk_velocity(rng)
            _walk(actor, np.arange(0, turn + 1), fps, 0, start, v1, _WALK_BOX)
            at_turn = np.array([actor.x[turn], actor.y[turn]])
            _walk(actor, np.arange(turn, n), fps, turn, at_turn, v2, _WALK_BOX)
            actors.append(actor)
        return _Plan(label=NORMAL, n=n, fps=fps, span=None, actors=actors, props=props, involved=0)

    a, b = span
    idx = np.arange(a, b)
    tau = (idx - a) / fps  # seconds into the span
    dur = max((b - a) / fps, 1.0 / fps)
    m = np.array([rng.uniform(0.3, 0.7), rng.uniform(0.5, 0.85)])  # where it happens
    gap = 0.055

    def person() -> _Actor:
        actor = _random_person(rng, n)
        actors.append(actor)
        return actor

    def jitter(scale: float) -> np.ndarray:
        return rng.standard_normal(len(idx)) * scale

    if label in ("fight", "assault", "datefight", "robbery"):
        p0, p1 = person(), person()
        left, right = m - [gap, 0], m + [gap, 0]
        p0.facing[idx], p1.facing[idx] = 1.0, -1.0
        if label == "fight":
            w = 2 * math.pi * rng.uniform(2.2, 3.0)
            phase = rng.uniform(0, 2 * math.pi, 4)
            lunge = 0.018 * np.sin(w * 0.6 * tau + phase[0])
            _set_span(p0, idx, left[0] + lunge + jitter(0.006), left[1] + jitter(0.004))
            _set_span(p1, idx, right[0] + lunge * 0.8 + jitter(0.006), right[1] + jitter(0.004))
            for k, p in enumerate((p0, p1)):
                p.arm_r[idx] = 1.4 + 0.9 * np.sin(w * tau + phase[k]) + jitter(0.25)
                p.arm_l[idx] = 1.4 + 0.9 * np.sin(w * tau + phase[k] + math.pi) + jitter(0.25)
                p.legs[idx] = 0.6 * np.maximum(0, np.sin(w * 0.5 * tau + phase[k + 2])) + jitter(0.08)
                p.tilt[idx] = 0.15 * np.sin(w * 0.45 * tau + phase[k]) * (1 if k == 0 else -1) + jitter(0.05)
            mid = _frames_of(a, b, 0, 0.55)[1]
            p0.actions = [("punching", [(a, mid)]), ("kicking", [(mid, b)])]
            p1.actions = [("pushing", [(a, mid)]), ("punching", [(mid, b)])]
        elif label == "assault":
            w = 2 * math.pi * rng.uniform(3.0, 3.8)
            push = 0.07 * tau / dur
            fall0, fall1 = _frames_of(a, b, 0.55, 0.62)
            up0 = _frames_of(a, b, 0.86, 1.0)[0]
            _set_span(p0, idx, left[0] + 0.5 * push + jitter(0.004), left[1] + jitter(0.003))
            _set_span(p1, idx, right[0] + push + 0.01 * np.abs(np.sin(w * tau)) + jitter(0.004), right[1] + jitter(0.003))
            p0.arm_r[idx] = 1.5 + 0.9 * np.sin(w * tau)
            p0.arm_l[idx] = 1.5 + 0.9 * np.sin(w * tau + math.pi)
            p0.legs[idx] = 0.75 * np.maximum(0, np.sin(w * 0.4 * tau)) + jitter(0.05)
            p0.tilt[idx] = 0.12 + jitter(0.04)
            # the victim: arms up, leaning away, then down on the ground and up again at the end
            p1.arm_l[idx] = 2.6 + jitter(0.15)
            p1.arm_r[idx] = 2.4 + jitter(0.15)
            lean = np.full(len(idx), 0.3) + 0.12 * np.abs(np.sin(w * tau)) + jitter(0.04)
            lean[fall0 - a:fall1 - a] = np.linspace(0.3, 1.45, fall1 - fall0)
            lean[fall1 - a:up0 - a] = 1.45
            lean[up0 - a:] = np.linspace(1.45, 0.0, b - up0)
            p1.tilt[idx] = lean
            p1.legs[idx] = 0.0
            mid = _frames_of(a, b, 0, 0.5)[1]
            p0.actions = [("punching", [(a, mid)]), ("kicking", [(mid, b)])]
            p1.actions = [("falldown", [(fall0, up0)])]
        elif label == "datefight":
            f = rng.uniform(0.7, 1.0)
            sway = 0.07 * np.sin(2 * math.pi * f * tau)
            shove = 0.035 * np.maximum(0, np.sin(2 * math.pi * f * tau + 0.6))
            _set_span(p0, idx, left[0] + sway, left[1] + 0.01 * np.sin(2 * math.pi * f * 0.5 * tau))
            _set_span(p1, idx, right[0] + sway + shove, right[1] + 0.01 * np.sin(2 * math.pi * f * 0.5 * tau))
            p0.arm_r[idx] = 1.55 + 0.25 * np.sin(2 * math.pi * f * tau)
            p0.arm_l[idx] = 1.45 + 0.25 * np.sin(2 * math.pi * f * tau + 0.4)
            p1.arm_l[idx] = 1.2 + 0.3 * np.sin(2 * math.pi * f * tau + 1.0)
            p1.arm_r[idx] = 0.4
            p1.tilt[idx] = 0.3 * np.sin(2 * math.pi * f * tau + 1.4)
            p0.tilt[idx] = -0.15 * np.sin(2 * math.pi * f * tau + 0.2)
            mid = _frames_of(a, b, 0, 0.5)[1]
            p0.actions = [("pushing", [(a, mid)]), ("pulling", [(mid, b)])]
            p1.actions = [("pulling", [(a, b)])]
        else:  # robbery: threaten, tug of war over the bag, the robber runs off with it
            bag = _Prop(n=n, color=(150, 40, 40), w=0.22, h=0.26)
            props.append(bag)
            t1, t2 = _frames_of(a, b, 0.2, 0.55)
            run = np.arange(t2, b)
            tug = np.arange(a, t2)
            tt = (tug - a) / fps
            p0.x[tug] = left[0] + 0.015 * np.sin(2 * math.pi * 2.2 * tt) + rng.standard_normal(len(tug)) * 0.004
            p0.y[tug] = left[1]
            p1.x[tug] = right[0] + 0.015 * np.sin(2 * math.pi * 2.2 * tt) + rng.standard_normal(len(tug)) * 0.004
            p1.y[tug] = right[1]
            run_t = (run - t2) / fps
            p0.x[run] = _fold(left[0] - 0.16 * run_t, *_WALK_BOX[:2])
            p0.y[run] = left[1] + 0.02 * np.sin(2 * math.pi * 0.5 * run_t)
            p1.x[run] = right[0] - 0.01 * run_t
            p1.y[run] = right[1]
            p0.arm_r[a:t1] = 2.6 + rng.standard_normal(t1 - a) * 0.25  # threaten
            p0.arm_l[a:t1] = 1.0
            p0.arm_r[t1:t2] = 1.6 + rng.standard_normal(t2 - t1) * 0.2
            p0.arm_l[t1:t2] = 1.6 + rng.standard_normal(t2 - t1) * 0.2
            p1.arm_l[tug] = 1.6 + rng.standard_normal(len(tug)) * 0.2
            p1.tilt[t1:t2] = rng.standard_normal(t2 - t1) * 0.12
            p1.arm_r[run] = 2.8 + 0.3 * np.sin(2 * math.pi * 2.0 * run_t)  # calls for help
            p0.facing[run] = -1.0
            p0.legs[run] = 0.7 * np.sin(2 * math.pi * 2.5 * run_t)
            p0.actions = [("threaten", [(a, t1)]), ("pulling", [(t1, t2)]), ("running", [(t2, b)])]
            p1.actions = [("pulling", [(t1, t2)])]
        vin0, vin1 = _walk_velocity(rng, toward_x=1.0), _walk_velocity(rng, toward_x=-1.0)
        _walk_outside(p0, n, fps, a, b, np.array([p0.x[a], p0.y[a]]), np.array([p0.x[b - 1], p0.y[b - 1]]),
                      vin0, _walk_velocity(rng, toward_x=-1.0))
        _walk_outside(p1, n, fps, a, b, np.array([p1.x[a], p1.y[a]]), np.array([p1.x[b - 1], p1.y[b - 1]]),
                      vin1, _walk_velocity(rng, toward_x=1.0))
        if label == "robbery":
            bag = props[0]
            hand = np.where(np.arange(n) < t2, 1, 0)  # carried by the victim, then by the robber
            owner_x = np.where(hand == 1, p1.x, p0.x)
            owner_y = np.where(hand == 1, p1.y, p0.y)
            bag.x, bag.y = owner_x + np.where(hand == 1, 0.018, -0.018), owner_y + 0.001
            bag.z = np.full(n, 0.22)
        involved = 2
    elif label in ("drunken", "swoon", "wander", "trespass", "burglary", "vandalism", "dump"):
        p = person()
        box_out = _WALK_BOX
        if label == "drunken":
            zig = 0.05 * np.sin(2 * math.pi * rng.uniform(0.35, 0.5) * tau)
            go = np.cumsum(np.where(np.sin(2 * math.pi * 0.4 * tau) > -0.3, 1.0, 0.0)) / fps * 0.025
            sway_f = rng.uniform(0.6, 0.9)
            _set_span(p, idx, m[0] + go + zig, m[1] + 0.03 * np.sin(2 * math.pi * 0.3 * tau))
            p.tilt[idx] = 0.38 * np.sin(2 * math.pi * sway_f * tau) + 0.08 * _smooth_noise(rng, len(idx), fps, 2.0)
            p.arm_l[idx] = 0.7 + 0.5 * np.sin(2 * math.pi * sway_f * tau + 0.5)
            p.arm_r[idx] = 0.7 + 0.5 * np.sin(2 * math.pi * sway_f * tau + 2.5)
            p.legs[idx] = 0.35 * np.sin(2 * math.pi * 1.1 * tau) + 0.1 * _smooth_noise(rng, len(idx), fps, 3.0)
            mid = _frames_of(a, b, 0, float(rng.uniform(0.4, 0.6)))[1]
            p.actions = [("totter", [(mid, b), (a, mid)])]  # touching ranges, listed out of order
        elif label == "swoon":
            s1, s2 = _frames_of(a, b, 0.35, 0.45)
            up0 = _frames_of(a, b, 0.85, 1.0)[0]
            _set_span(p, idx, m[0] + 0.02 * np.sin(2 * math.pi * 0.4 * tau), np.full(len(idx), m[1]))
            tilt = 0.3 * np.sin(2 * math.pi * 0.8 * tau)
            tilt[s1 - a:s2 - a] = np.linspace(tilt[s1 - a], 1.5, s2 - s1)
            tilt[s2 - a:up0 - a] = 1.5
            tilt[up0 - a:] = np.linspace(1.5, 0.0, b - up0)
            p.tilt[idx] = tilt
            p.legs[s1:up0] = 0.05
            p.arm_l[s2:up0], p.arm_r[s2:up0] = 0.2, 0.3
            p.actions = [("totter", [(a, s1)]), ("falldown", [(s1, s2), (s2, b)])]
        elif label == "wander":
            w = 2 * math.pi * rng.uniform(0.3, 0.45)
            ang = w * tau - 0.9 * np.sin(2 * w * tau)  # circling with stop-and-go
            r = 0.09
            _set_span(p, idx, m[0] + r * (np.cos(ang) - 1), m[1] + 0.5 * r * np.sin(ang))
            p.tilt[idx] = 0.12 * np.sin(2 * math.pi * 1.2 * tau)
            p.arm_l[idx] = 0.9 + 0.4 * np.sin(2 * math.pi * 1.2 * tau)  # looking around, hand to the face
            mid = _frames_of(a, b, 0, 0.5)[1]
            p.actions = [("around", [(a, mid)]), ("stop and go", [(mid, b)])]
        elif label == "trespass":
            m = np.array([m[0], _FENCE_Y + 0.06])
            c1, c2 = _frames_of(a, b, 0.4, 0.6)
            u = (idx - a) / max(1, b - a)
            z = np.where(u < 0.4, 0.6 * u / 0.4, np.where(u < 0.6, 0.6, 0.6 * (1 - (u - 0.6) / 0.4)))
            y = np.where(u < 0.4, m[1] - 0.06 * u / 0.4, np.where(u < 0.6, _FENCE_Y - 0.08 * (u - 0.4) / 0.2, _FENCE_Y - 0.08))
            p.x[idx] = m[0] + 0.01 * np.sin(2 * math.pi * 1.5 * tau)
            p.y[idx] = y
            p.z[idx] = z + 0.03 * np.abs(np.sin(2 * math.pi * 1.5 * tau))
            p.arm_l[idx] = 2.7 + 0.4 * np.sin(2 * math.pi * 1.5 * tau)
            p.arm_r[idx] = 2.7 + 0.4 * np.sin(2 * math.pi * 1.5 * tau + math.pi)
            p.legs[idx] = 0.6 * np.sin(2 * math.pi * 1.5 * tau)
            p.actions = [("climbwall", [(a, c1), (c1, b)])]
            box_out = _FAR_BOX
        elif label == "burglary":
            box = _Prop(n=n, color=(170, 120, 60), w=0.3, h=0.25)
            props.append(box)
            g1 = _frames_of(a, b, 0, 0.3)[1]
            run = np.arange(g1, b)
            rt = (run - g1) / fps
            p.x[a:g1], p.y[a:g1] = m[0], m[1]
            p.crouch[a:g1] = np.sin(np.linspace(0, math.pi, g1 - a))
            p.arm_r[a:g1] = 0.9 + 0.3 * np.sin(2 * math.pi * 2.0 * tau[: g1 - a])
            p.facing[a:g1] = 1.0
            p.x[run] = _fold(m[0] - 0.18 * rt, *_WALK_BOX[:2])
            p.y[run] = m[1] - 0.02 * rt
            p.legs[run] = 0.75 * np.sin(2 * math.pi * 2.6 * rt)
            p.actions = [("pulling", [(a, g1)]), ("running", [(g1, b)])]
        elif label == "vandalism":
            sign = _Prop(n=n, color=(220, 200, 40), w=0.18, h=0.55)
            props.append(sign)
            topple = _frames_of(a, b, 0, 0.7)[1]
            p.x[idx], p.y[idx] = m[0] + 0.008 * np.sin(2 * math.pi * 1.8 * tau), m[1]
            p.facing[idx] = 1.0
            p.legs[idx] = 0.9 * np.maximum(0, np.sin(2 * math.pi * 1.8 * tau))
            p.arm_l[idx] = 1.0 + 0.8 * np.sin(2 * math.pi * 1.8 * tau + math.pi)
            p.arm_r[idx] = 1.2 + 0.6 * np.sin(2 * math.pi * 1.8 * tau)
            p.tilt[idx] = -0.15 * np.maximum(0, np.sin(2 * math.pi * 1.8 * tau))
            mid = _frames_of(a, b, 0, 0.5)[1]
            p.actions = [("kicking", [(a, mid), (mid, b)])]
        else:  # dump
            bag = _Prop(n=n, color=(40, 40, 45), w=0.25, h=0.22)
            props.append(bag)
            d1 = _frames_of(a, b, 0, 0.4)[1]
            p.x[a:d1], p.y[a:d1] = m[0], m[1]
            p.facing[a:d1] = 1.0
            p.arm_r[a:d1] = 0.4 + 2.2 * np.sin(np.linspace(0, math.pi, d1 - a))  # the throw
            p.crouch[a:d1] = 0.5 * np.sin(np.linspace(0, math.pi, d1 - a))
            away = np.arange(d1, b)
            at = (away - d1) / fps
            p.x[away] = _fold(m[0] - 0.09 * at, *_WALK_BOX[:2])
            p.y[away] = m[1] + 0.01 * at
            p.actions = [("throwing", [(a, d1)]), ("walking", [(d1, b)])]
        vin = _walk_velocity(rng)
        start = np.array([p.x[a], p.y[a]])
        end = np.array([p.x[b - 1], p.y[b - 1]])
        vout = _walk_velocity(rng)
        if label == "trespass":
            vin = np.array([rng.choice([-1, 1]) * rng.uniform(0.02, 0.04), -rng.uniform(0.01, 0.02)])
            vout = np.array([rng.choice([-1, 1]) * rng.uniform(0.03, 0.05), -0.005])
        _walk_outside(p, n, fps, a, b, start, end, vin, vout, _WALK_BOX, box_out)
        if label == "burglary":
            box = props[0]
            carried = np.arange(n) >= g1
            box.x = np.where(carried, p.x - 0.015, m[0] + 0.035)
            box.y = np.where(carried, p.y + 0.001, m[1] + 0.004)
            box.z = np.where(carried, 0.2, 0.0)
        elif label == "vandalism":
            sign = props[0]
            sign.x[:], sign.y[:] = m[0] + 0.04, m[1] - 0.002
            hit = (np.arange(n) >= a) & (np.arange(n) < topple)
            sign.x[hit] += 0.006 * np.sin(2 * math.pi * 3.6 * (np.arange(n)[hit] - a) / fps)
            sign.tilt[hit] = 0.25 * np.abs(np.sin(2 * math.pi * 1.8 * (np.arange(n)[hit] - a) / fps))
            sign.tilt[topple:] = 1.5
        elif label == "dump":
            bag = props[0]
            frames_all = np.arange(n)
            bag.x = np.where(frames_all < a, p.x + 0.018, m[0] + 0.06)
            bag.y = np.where(frames_all < a, p.y + 0.001, m[1] + 0.005)
            bag.z = np.where(frames_all < a, 0.2, 0.0)
            throw = np.arange(a, d1)
            s = (throw - a) / max(1, d1 - a)
            bag.x[throw] = m[0] + 0.018 + (0.06 - 0.018) * s
            bag.z[throw] = 0.2 * (1 - s) + 0.5 * np.sin(math.pi * s)
        involved = 1
    elif label == "kidnap":
        k0, k1, v = person(), person(), person()
        g1 = _frames_of(a, b, 0, 0.3)[1]
        grab = np.arange(a, g1)
        drag = np.arange(g1, b)
        gt, dt = (grab - a) / fps, (drag - g1) / fps
        direction = -1.0 if m[0] > 0.5 else 1.0
        for p, off in ((k0, -gap), (k1, gap), (v, 0.0)):
            p.x[grab] = m[0] + off + rng.standard_normal(len(grab)) * 0.003
            p.y[grab] = m[1] + (0.012 if p is v else 0.0)
            p.x[drag] = np.clip(m[0] + off + direction * 0.14 * dt, *_WALK_BOX[:2])
            p.y[drag] = m[1] + (0.012 if p is v else 0.0) - 0.01 * dt
            p.legs[drag] = 0.6 * np.sin(2 * math.pi * 2.4 * dt + (0 if p is v else 1.0))
        k0.facing[idx], k1.facing[idx] = 1.0, -1.0
        k0.arm_r[idx], k1.arm_r[idx] = 1.6, 1.6
        k0.arm_l[idx], k1.arm_l[idx] = 1.2, 1.2
        v.tilt[grab] = 0.3 * np.sin(2 * math.pi * 2.5 * gt) + rng.standard_normal(len(grab)) * 0.08
        v.arm_l[grab] = 2.0 + 0.8 * np.sin(2 * math.pi * 2.0 * gt)
        v.arm_r[grab] = 2.0 + 0.8 * np.sin(2 * math.pi * 2.0 * gt + 2.0)
        v.tilt[drag] = -direction * 0.45
        for p in (k0, k1, v):
            vin = _walk_velocity(rng, toward_x=(m[0] - p.x[a]) or 1.0)
            _walk_outside(p, n, fps, a, b, np.array([p.x[a], p.y[a]]), np.array([p.x[b - 1], p.y[b - 1]]),
                          vin, _walk_velocity(rng, toward_x=direction))
        k0.actions = [("pulling", [(a, g1)]), ("running", [(g1, b)])]
        k1.actions = [("pulling", [(a, g1)]), ("running", [(g1, b)])]
        involved = 2
    else:
        raise ValueError(f"no synthetic behaviour for class {label!r}: expected one of {', '.join(BEHAVIOURS)}")

    # A bystander walking through, in half of the takes.
    if rng.random() < 0.5:
        bystander = person()
        start = np.array([rng.uniform(0.1, 0.9), rng.uniform(0.4, 0.95)])
        _walk(bystander, np.arange(n), fps, 0, start, _walk_velocity(rng), _WALK_BOX)
    return _Plan(label=label, n=n, fps=fps, span=span, actors=actors, props=props, involved=involved)


def _finish_poses(plan: _Plan) -> None:
    """Fill every pose value not set by the behaviour from walking (legs follow speed, arms swing)."""
    for actor in plan.actors:
        dx = np.diff(actor.x, prepend=actor.x[0])
        dy = np.diff(actor.y, prepend=actor.y[0])
        dist = np.hypot(dx, dy)
        speed = dist * plan.fps
        phase = np.cumsum(dist) * 2 * math.pi / 0.07
        amp = np.clip(speed / 0.03, 0, 1)
        swing = 0.4 * amp * np.sin(phase)
        defaults = {
            "legs": swing,
            "arm_l": 0.25 * amp * np.sin(phase) + 0.12,
            "arm_r": -0.25 * amp * np.sin(phase) + 0.12,
            "tilt": np.zeros(plan.n),
        }
        for name, value in defaults.items():
            arr = getattr(actor, name)
            missing = np.isnan(arr)
            arr[missing] = value[missing]
        face = np.sign(np.convolve(dx, np.ones(5) / 5, mode="same"))
        face[face == 0] = 1.0
        # keep the last facing direction while standing still
        for i in range(1, plan.n):
            if abs(dx[i]) < 1e-9:
                face[i] = face[i - 1]
        missing = np.isnan(actor.facing)
        actor.facing[missing] = face[missing]


# ------------------------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class _Camera:
    """One camera's view of the world and its look (background, light, noise)."""

    flip: bool
    zoom: float
    dx: float
    dy: float
    night: bool
    noise: float
    seed: int


def _make_camera(rng: np.random.Generator, night: bool) -> _Camera:
    return _Camera(
        flip=bool(rng.random() < 0.5),
        zoom=float(rng.uniform(0.9, 1.12)),
        dx=float(rng.uniform(-0.05, 0.05)),
        dy=float(rng.uniform(-0.03, 0.03)),
        night=night,
        noise=float(rng.uniform(2.0, 3.5) if not night else rng.uniform(3.5, 5.0)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


class _Canvas:
    """Maps world coordinates to pixels for one camera and draws figures on uint8 frames."""

    def __init__(self, width: int, height: int, cam: _Camera) -> None:
        self.w, self.h, self.cam = width, height, cam
        self.background = self._background()

    def ground(self, x: float, y: float) -> tuple[float, float, float]:
        """Pixel of a ground point and the height in pixels of a person standing there."""
        c = self.cam
        xv = 1.0 - x if c.flip else x
        px = self.w * (0.5 + c.zoom * (xv - 0.5) + c.dx)
        py = self.h * (0.30 + c.dy + 0.62 * c.zoom * y)
        body = self.h * (0.2 + 0.24 * y) * c.zoom
        return px, py, body

    def _background(self) -> np.ndarray:
        rng = np.random.default_rng(self.cam.seed)
        h, w = self.h, self.w
        _, horizon, _ = self.ground(0.5, 0.0)
        rows = np.arange(h)[:, None, None]
        wall = rng.uniform(90, 200, 3)
        floor = rng.uniform(60, 170, 3)
        img = np.where(rows < horizon, wall, floor) * (0.85 + 0.3 * (rows / h))
        img = np.broadcast_to(img, (h, w, 3)).copy()
        # low-frequency texture (stains, light falloff) and a fine grain
        gh, gw = 7, 9
        coarse = rng.normal(0, 1, (gh, gw, 3))
        yi = np.linspace(0, gh - 1, h)
        xi = np.linspace(0, gw - 1, w)
        tex = np.empty((h, w, 3))
        for ch in range(3):
            tmp = np.array([np.interp(xi, np.arange(gw), coarse[r, :, ch]) for r in range(gh)])
            tex[:, :, ch] = np.array([np.interp(yi, np.arange(gh), tmp[:, col]) for col in range(w)]).T
        img += 14 * tex.mean(axis=2, keepdims=True) + 4 * tex + rng.normal(0, 6, (h, w, 1))
        # a few static objects: doors, benches, windows
        for _ in range(int(rng.integers(2, 5))):
            bw, bh = int(rng.integers(w // 12, w // 4)), int(rng.integers(h // 12, h // 4))
            x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            img[y0:y0 + bh, x0:x0 + bw] = img[y0:y0 + bh, x0:x0 + bw] * 0.4 + rng.uniform(20, 230, 3) * 0.6
        # the fence: a rail and posts along the fence line
        _, fy, body = self.ground(0.5, _FENCE_Y)
        rail = int(round(fy - 0.5 * body))
        color = rng.uniform(40, 90, 3)
        img[max(0, rail - 1):max(0, rail + 1)] = color
        img[max(0, int(fy) - 1):max(0, int(fy) + 1)] = color
        for px in np.arange(rng.integers(3, 9), w, max(6, w // 14)):
            img[max(0, rail):max(0, int(fy)), int(px):int(px) + 1] = color
        if self.cam.night:
            img = img * 0.45 + 10
        return np.clip(img, 0, 255).astype(np.float32)

    # -- primitives ------------------------------------------------------------------------------------

    def _capsule(self, img: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], r: float,
                 color: tuple[int, int, int]) -> None:
        r = max(r, 0.7)
        x0 = int(max(0, math.floor(min(p0[0], p1[0]) - r)))
        x1 = int(min(self.w, math.ceil(max(p0[0], p1[0]) + r) + 1))
        y0 = int(max(0, math.floor(min(p0[1], p1[1]) - r)))
        y1 = int(min(self.h, math.ceil(max(p0[1], p1[1]) + r) + 1))
        if x0 >= x1 or y0 >= y1:
            return
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        vx, vy = p1[0] - p0[0], p1[1] - p0[1]
        ll = vx * vx + vy * vy
        t = np.clip(((xs - p0[0]) * vx + (ys - p0[1]) * vy) / ll, 0, 1) if ll > 1e-9 else np.zeros_like(xs)
        d2 = (xs - p0[0] - t * vx) ** 2 + (ys - p0[1] - t * vy) ** 2
        mask = d2 <= r * r
        img[y0:y1, x0:x1][mask] = color

    def _light(self, color: tuple[int, int, int]) -> tuple[int, int, int]:
        if self.cam.night:
            return tuple(int(c * 0.5 + 8) for c in color)  # type: ignore[return-value]
        return color

    def draw_actor(self, img: np.ndarray, actor: _Actor, i: int) -> None:
        px, py, body = self.ground(float(actor.x[i]), float(actor.y[i]))
        py -= float(actor.z[i]) * body
        flip = -1.0 if self.cam.flip else 1.0
        tilt = float(actor.tilt[i]) * flip
        facing = float(actor.facing[i]) * flip
        crouch = float(actor.crouch[i])
        up = (math.sin(tilt), -math.cos(tilt))
        leg_len = body * 0.46 * (1 - 0.35 * crouch)
        torso = body * 0.32
        hip = (px + up[0] * leg_len, py + up[1] * leg_len)
        neck = (hip[0] + up[0] * torso, hip[1] + up[1] * torso)
        head = (neck[0] + up[0] * body * 0.1, neck[1] + up[1] * body * 0.1)
        limb = max(0.8, body * 0.045)

        def rotate_down(angle: float) -> tuple[float, float]:
            # 0 = pointing down along the body, pi/2 = forward (facing), pi = up
            a = angle * facing
            dx, dy = -up[0], -up[1]
            return (dx * math.cos(a) - dy * math.sin(a), dx * math.sin(a) + dy * math.cos(a))

        swing = float(actor.legs[i])
        pants, shirt, skin = self._light(actor.pants), self._light(actor.shirt), self._light(actor.skin)
        for s in (swing, -swing):
            d = rotate_down(s)
            self._capsule(img, hip, (hip[0] + d[0] * leg_len, hip[1] + d[1] * leg_len), limb * 1.1, pants)
        self._capsule(img, hip, neck, body * 0.085, shirt)
        shoulder = (neck[0] - up[0] * body * 0.03, neck[1] - up[1] * body * 0.03)
        for angle in (float(actor.arm_l[i]), float(actor.arm_r[i])):
            d = rotate_down(angle)
            self._capsule(img, shoulder, (shoulder[0] + d[0] * body * 0.3, shoulder[1] + d[1] * body * 0.3), limb, shirt)
        self._capsule(img, head, head, body * 0.085, skin)

    def draw_prop(self, img: np.ndarray, prop: _Prop, i: int) -> None:
        if not prop.visible[i]:
            return
        px, py, body = self.ground(float(prop.x[i]), float(prop.y[i]))
        py -= float(prop.z[i]) * body
        w, h = prop.w * body, prop.h * body
        tilt = float(prop.tilt[i]) * (-1.0 if self.cam.flip else 1.0)
        top = (px + math.sin(tilt) * h, py - math.cos(tilt) * h)
        self._capsule(img, (px, py - min(w, h) / 2), (top[0], top[1] + min(w, h) / 2), w / 2, self._light(prop.color))


def _frame_depth(plan: _Plan, i: int) -> list[tuple[float, str, int]]:
    items = [(float(a.y[i]), "a", k) for k, a in enumerate(plan.actors)]
    items += [(float(p.y[i]), "p", k) for k, p in enumerate(plan.props)]
    return sorted(items)


def _render(plan: _Plan, canvas: _Canvas, noise_seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(noise_seed)
    for i in range(plan.n):
        img = canvas.background.copy()
        for _, kind, k in _frame_depth(plan, i):
            if kind == "a":
                canvas.draw_actor(img, plan.actors[k], i)
            else:
                canvas.draw_prop(img, plan.props[k], i)
        img += rng.normal(0, canvas.cam.noise, img.shape[:2] + (1,)).astype(np.float32)
        yield np.clip(img + 0.5, 0, 255).astype(np.uint8)


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
    plan = _choreograph(name, n, fps, span, rng)
    _finish_poses(plan)
    cam = _make_camera(rng, night=False)
    return _render(plan, _Canvas(int(size[0]), int(size[1]), cam), noise_seed=cam.seed + 1)


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


def _annotation_xml(plan: _Plan, canvas: _Canvas, stem: str, header: dict[str, str],
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
            plan = _choreograph(label, n, fps, span, rng)
            _finish_poses(plan)
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
                cam = _make_camera(rng, night)
                canvas = _Canvas(int(size[0]), int(size[1]), cam)
                stem = f"{group}_cam{cam_no:02d}_{label}{(k % 9) + 1:02d}_place{place:02d}_{'night' if night else 'day'}_{season}"
                session = folder / zip_dir / group
                session.mkdir(parents=True, exist_ok=True)
                mp4, xml = session / f"{stem}.mp4", session / f"{stem}.xml"
                write_mp4(mp4, _render(plan, canvas, noise_seed=cam.seed + 1), fps)
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
