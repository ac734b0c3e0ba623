"""The picture inside the alert: one frame of the peak window as a JPEG with the class and score drawn on it."""

from __future__ import annotations

import io
from datetime import datetime

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["render_snapshot", "pick_frame"]


def pick_frame(frames: np.ndarray) -> np.ndarray:
    """The middle frame of a clip (T x H x W x 3), or the frame itself (H x W x 3)."""
    arr = np.asarray(frames)
    if arr.ndim == 4:
        if arr.shape[0] == 0:
            raise ValueError("snapshot: expected at least one frame, got an empty clip")
        arr = arr[arr.shape[0] // 2]
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"snapshot: expected frames shaped H x W x 3 or T x H x W x 3, got {np.asarray(frames).shape}")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and float(np.nanmax(arr, initial=0.0)) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
    return arr


def render_snapshot(
    frames: np.ndarray,
    *,
    label: str,
    score: float,
    camera: str | None = None,
    when: datetime | None = None,
    min_width: int = 480,
    quality: int = 85,
) -> bytes:
    """JPEG bytes of the middle frame of ``frames`` (uint8 RGB) with ``label`` and ``score`` drawn on a banner.

    Small model-sized frames (112 px) are enlarged to ``min_width`` so the picture is readable in Slack.
    """
    if not (0 < quality <= 100):
        raise ValueError(f"snapshot quality must be in 1..100, got {quality}")
    img = Image.fromarray(pick_frame(frames)).convert("RGB")
    if img.width < min_width:
        scale = min_width / img.width
        img = img.resize((min_width, max(1, round(img.height * scale))), Image.Resampling.BILINEAR)
    w, h = img.size
    big = max(14, w // 20)
    small = max(11, w // 32)
    font_big = ImageFont.load_default(size=big)
    font_small = ImageFont.load_default(size=small)
    banner_h = big + small + 14 if (camera or when) else big + 10
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    draw.rectangle([0, 0, w, banner_h], fill=(0, 0, 0, 170))
    border = max(2, w // 160)
    draw.rectangle([0, 0, w - 1, h - 1], outline=(230, 30, 30, 255), width=border)
    draw.text((8, 4), f"{label.upper()}  {score:.2f}", font=font_big, fill=(255, 80, 80, 255))
    sub = " · ".join(x for x in (camera, when.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if when else None) if x)
    if sub:
        draw.text((8, big + 8), sub, font=font_small, fill=(255, 255, 255, 255))
    out = Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB")
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
