"""The world of the synthetic dataset and its choreography: who moves how, frame by frame, in one take.

A take is planned once in world coordinates (x across, y depth from the far side, z height, in body heights) and
filmed by every camera of the take (:mod:`bigsister_ray.data.synth_render` draws it). :func:`choreograph` plans
everyone's positions and pose overrides: outside the annotated span every actor walks normally; inside it the
involved actors act out the class (:data:`BEHAVIOURS`) and record
the AI Hub action names and frame ranges the XML reports. :func:`finish_poses` then fills every pose value the
behaviour left open from walking (legs follow the speed, arms swing, facing follows the direction of travel).
Deterministic in the generator it is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bigsister_ray.labels import NORMAL

__all__ = ["BEHAVIOURS", "FENCE_Y", "Actor", "Prop", "Plan", "choreograph", "finish_poses"]

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

FENCE_Y = 0.3  # world depth of the fence line (0 = far, 1 = near)
_WALK_BOX = (0.06, 0.94, 0.36, 0.95)  # x_lo, x_hi, y_lo, y_hi where people walk (the near side of the fence)
_FAR_BOX = (0.06, 0.94, 0.04, 0.26)  # beyond the fence


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
class Actor:
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
class Prop:
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
class Plan:
    """A take: who moves how, in world coordinates, shared by every camera that films it."""

    label: str
    n: int
    fps: float
    span: tuple[int, int] | None  # frames [a, b) of the behaviour
    actors: list[Actor]
    props: list[Prop]
    involved: int  # the first `involved` actors are annotated (objects in the XML)


def _random_person(rng: np.random.Generator, n: int) -> Actor:
    shirt = tuple(int(c) for c in rng.integers(30, 235, 3))
    pants = tuple(int(c) for c in rng.integers(20, 110, 3))
    tone = int(rng.integers(120, 225))
    skin = (tone, int(tone * 0.8), int(tone * 0.65))
    character = f"{rng.choice(['M', 'F'])}{int(rng.choice([10, 20, 30, 40, 50, 60]))}"
    return Actor(n=n, shirt=shirt, pants=pants, skin=skin, character=character)


def _walk_velocity(rng: np.random.Generator, toward_x: float | None = None) -> np.ndarray:
    """A slow walking velocity in world units per second (about 0.03-0.06 of the frame width per second)."""
    speed = rng.uniform(0.03, 0.06)
    if toward_x is None:
        angle = rng.uniform(0, 2 * math.pi)
    else:
        angle = rng.uniform(-0.5, 0.5) + (0.0 if toward_x > 0 else math.pi)
    return np.array([math.cos(angle) * speed, math.sin(angle) * speed * 0.6])


def _walk(actor: Actor, frames: np.ndarray, fps: float, anchor_frame: int, anchor: np.ndarray,
          vel: np.ndarray, box: tuple[float, float, float, float]) -> None:
    """Normal walking on ``frames``: a straight line through ``anchor`` at ``anchor_frame``, bouncing in ``box``."""
    if len(frames) == 0:
        return
    t = (frames - anchor_frame) / fps
    actor.x[frames] = _fold(anchor[0] + vel[0] * t, box[0], box[1])
    actor.y[frames] = _fold(anchor[1] + vel[1] * t, box[2], box[3])


def _walk_outside(actor: Actor, plan_n: int, fps: float, a: int, b: int, start: np.ndarray, end: np.ndarray,
                  vel_in: np.ndarray, vel_out: np.ndarray, box_in=_WALK_BOX, box_out=_WALK_BOX) -> None:
    """Walk into ``start`` at frame ``a`` and out of ``end`` from frame ``b`` (the span is filled by the caller)."""
    _walk(actor, np.arange(0, a), fps, a, start, vel_in, box_in)
    _walk(actor, np.arange(b, plan_n), fps, b, end, vel_out, box_out)


def _set_span(actor: Actor, idx: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
    actor.x[idx] = np.clip(x, _WALK_BOX[0], _WALK_BOX[1])
    actor.y[idx] = y


def _frames_of(a: int, b: int, lo: float, hi: float) -> tuple[int, int]:
    """Frame range of the fraction [lo, hi] of the span [a, b)."""
    return a + int(round(lo * (b - a))), a + int(round(hi * (b - a)))


def choreograph(label: str, n: int, fps: float, span: tuple[int, int] | None, rng: np.random.Generator) -> Plan:
    """Plan one take: positions and pose overrides of every actor and prop, per frame."""
    actors: list[Actor] = []
    props: list[Prop] = []

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
        return Plan(label=NORMAL, n=n, fps=fps, span=None, actors=actors, props=props, involved=0)

    a, b = span
    idx = np.arange(a, b)
    tau = (idx - a) / fps  # seconds into the span
    dur = max((b - a) / fps, 1.0 / fps)
    m = np.array([rng.uniform(0.3, 0.7), rng.uniform(0.5, 0.85)])  # where it happens
    gap = 0.055

    def person() -> Actor:
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
            bag = Prop(n=n, color=(150, 40, 40), w=0.22, h=0.26)
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
            m = np.array([m[0], FENCE_Y + 0.06])
            c1, c2 = _frames_of(a, b, 0.4, 0.6)
            u = (idx - a) / max(1, b - a)
            z = np.where(u < 0.4, 0.6 * u / 0.4, np.where(u < 0.6, 0.6, 0.6 * (1 - (u - 0.6) / 0.4)))
            y = np.where(u < 0.4, m[1] - 0.06 * u / 0.4, np.where(u < 0.6, FENCE_Y - 0.08 * (u - 0.4) / 0.2, FENCE_Y - 0.08))
            p.x[idx] = m[0] + 0.01 * np.sin(2 * math.pi * 1.5 * tau)
            p.y[idx] = y
            p.z[idx] = z + 0.03 * np.abs(np.sin(2 * math.pi * 1.5 * tau))
            p.arm_l[idx] = 2.7 + 0.4 * np.sin(2 * math.pi * 1.5 * tau)
            p.arm_r[idx] = 2.7 + 0.4 * np.sin(2 * math.pi * 1.5 * tau + math.pi)
            p.legs[idx] = 0.6 * np.sin(2 * math.pi * 1.5 * tau)
            p.actions = [("climbwall", [(a, c1), (c1, b)])]
            box_out = _FAR_BOX
        elif label == "burglary":
            box = Prop(n=n, color=(170, 120, 60), w=0.3, h=0.25)
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
            sign = Prop(n=n, color=(220, 200, 40), w=0.18, h=0.55)
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
            bag = Prop(n=n, color=(40, 40, 45), w=0.25, h=0.22)
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
    return Plan(label=label, n=n, fps=fps, span=span, actors=actors, props=props, involved=involved)


def finish_poses(plan: Plan) -> None:
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
