"""Filming a planned take: one camera's view of the world of :mod:`bigsister_ray.data.synth_scene`, frame by frame.

:func:`make_camera` gives a camera its look (mirrored or not, zoom, offset, day or night, sensor noise, and the
seed of its background); :class:`Canvas` maps world coordinates to pixels and draws the textured background with
its fence, the person-like figures and the props; :func:`render` yields the uint8 RGB frames of a take, nearer
figures over farther ones, with the camera's noise. Deterministic in the camera and the noise seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from bigsister_ray.data.synth_scene import FENCE_Y, Actor, Plan, Prop

__all__ = ["Camera", "make_camera", "Canvas", "render"]


@dataclass(frozen=True)
class Camera:
    """One camera's view of the world and its look (background, light, noise)."""

    flip: bool
    zoom: float
    dx: float
    dy: float
    night: bool
    noise: float
    seed: int


def make_camera(rng: np.random.Generator, night: bool) -> Camera:
    return Camera(
        flip=bool(rng.random() < 0.5),
        zoom=float(rng.uniform(0.9, 1.12)),
        dx=float(rng.uniform(-0.05, 0.05)),
        dy=float(rng.uniform(-0.03, 0.03)),
        night=night,
        noise=float(rng.uniform(2.0, 3.5) if not night else rng.uniform(3.5, 5.0)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


class Canvas:
    """Maps world coordinates to pixels for one camera and draws figures on uint8 frames."""

    def __init__(self, width: int, height: int, cam: Camera) -> None:
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
        _, fy, body = self.ground(0.5, FENCE_Y)
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

    def draw_actor(self, img: np.ndarray, actor: Actor, i: int) -> None:
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

    def draw_prop(self, img: np.ndarray, prop: Prop, i: int) -> None:
        if not prop.visible[i]:
            return
        px, py, body = self.ground(float(prop.x[i]), float(prop.y[i]))
        py -= float(prop.z[i]) * body
        w, h = prop.w * body, prop.h * body
        tilt = float(prop.tilt[i]) * (-1.0 if self.cam.flip else 1.0)
        top = (px + math.sin(tilt) * h, py - math.cos(tilt) * h)
        self._capsule(img, (px, py - min(w, h) / 2), (top[0], top[1] + min(w, h) / 2), w / 2, self._light(prop.color))


def _frame_depth(plan: Plan, i: int) -> list[tuple[float, str, int]]:
    items = [(float(a.y[i]), "a", k) for k, a in enumerate(plan.actors)]
    items += [(float(p.y[i]), "p", k) for k, p in enumerate(plan.props)]
    return sorted(items)


def render(plan: Plan, canvas: Canvas, noise_seed: int) -> Iterator[np.ndarray]:
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
