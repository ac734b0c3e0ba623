"""The score timeline of an incident as an inline SVG, drawn on the server (no plotting script in the page)."""

from __future__ import annotations

from html import escape
from typing import Sequence

__all__ = ["timeline_svg"]


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def timeline_svg(points: Sequence[Sequence[float]], *, threshold: float | None = None, peak: tuple[float, float] | None = None,
                 width: int = 600, height: int = 180, label: str = "score") -> str:
    """An SVG line plot of ``points`` (``(stream seconds, score in 0..1)`` pairs).

    ``threshold`` draws a dashed line at that score; ``peak`` (start_s, end_s) shades the peak window. With no
    points the SVG says so. The result is markup to embed as is: every text in it is escaped.
    """
    left, right, top, bottom = 44, 12, 12, 28
    pw, ph = width - left - right, height - top - bottom
    pts = sorted((float(p[0]), float(p[1])) for p in points if len(p) >= 2)
    parts = [f'<svg class="timeline" role="img" aria-label="{escape(label)} over time" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="plot-bg"/>']
    if not pts:
        parts.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph / 2:.1f}" text-anchor="middle" class="plot-empty">'
                     'no scores recorded</text></svg>')
        return "".join(parts)
    t0, t1 = pts[0][0], pts[-1][0]
    if peak is not None:
        t0, t1 = min(t0, peak[0]), max(t1, peak[1])
    span = (t1 - t0) or 1.0

    def x(t: float) -> float:
        return left + (t - t0) / span * pw

    def y(score: float) -> float:
        return top + (1.0 - min(max(score, 0.0), 1.0)) * ph

    for tick in (0.0, 0.5, 1.0):
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{_fmt(y(tick))}" y2="{_fmt(y(tick))}" class="plot-grid"/>'
                     f'<text x="{left - 6}" y="{_fmt(y(tick) + 4)}" text-anchor="end" class="plot-tick">{tick:.1f}</text>')
    for t in (t0, t0 + span / 2, t1):
        parts.append(f'<text x="{_fmt(x(t))}" y="{height - 8}" text-anchor="middle" class="plot-tick">{t:.1f} s</text>')
    if peak is not None:
        parts.append(f'<rect x="{_fmt(x(peak[0]))}" y="{top}" width="{_fmt(max(x(peak[1]) - x(peak[0]), 1.0))}" '
                     f'height="{ph}" class="plot-peak"><title>peak window {peak[0]:.1f}-{peak[1]:.1f} s</title></rect>')
    if threshold is not None:
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{_fmt(y(threshold))}" y2="{_fmt(y(threshold))}" '
                     f'class="plot-threshold"><title>threshold {threshold:.2f}</title></line>')
    line = " ".join(f"{_fmt(x(t))},{_fmt(y(s))}" for t, s in pts)
    parts.append(f'<polyline points="{line}" class="plot-line"/>')
    for t, s in pts:
        parts.append(f'<circle cx="{_fmt(x(t))}" cy="{_fmt(y(s))}" r="2.5" class="plot-point">'
                     f'<title>{t:.1f} s: {s:.2f}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)
