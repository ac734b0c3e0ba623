"""Tiny test media made on the spot with PyAV: mp4s of a few dozen small frames, AI Hub XMLs, broken files.

Frame ``i`` of :func:`make_mp4` is filled with a grey level that encodes ``i`` (``(i * 7) % 200 + 20``), so a
test can check which frames were decoded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

__all__ = ["frame_level", "make_mp4", "truncate", "aihub_xml", "aihub_pair"]


def frame_level(i: int) -> int:
    """The grey level frame ``i`` of :func:`make_mp4` is filled with."""
    return (i * 7) % 200 + 20


def make_mp4(path: Path, frames: int = 30, fps: float = 10.0, size: tuple[int, int] = (64, 48)) -> Path:
    """Write a tiny H.264 (yuv420p) mp4 of ``frames`` flat grey frames at ``fps``, ``size`` = (w, h)."""
    import av
    from fractions import Fraction

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "10"}
        for i in range(frames):
            img = np.full((h, w, 3), frame_level(i), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def truncate(path: Path, keep: float = 0.4) -> Path:
    """Cut a file to its first ``keep`` fraction of bytes (a download that stopped)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: max(1, int(len(data) * keep))])
    return Path(path)


def _ranges_xml(ranges: Iterable[tuple[int, int]]) -> str:
    return "".join(f"<frame><start>{a}</start><end>{b}</end></frame>" for a, b in ranges)


def aihub_xml(
    path: Path,
    *,
    event: str | None = "fight",
    folder: str = "fight",
    fps: str | None = "10",
    frames: str | None = "60",
    duration: str | None = "00:00:06.0",
    start: str | None = "00:00:02.0",
    length: str | None = "00:00:02.0",
    actions: dict[str, list[tuple[int, int]]] | None = None,
    objectname: str = "person_1",
    filename: str | None = None,
) -> Path:
    """Write an AI Hub style XML; pass ``None`` for a field to leave it out."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def tag(name: str, value: str | None) -> str:
        return "" if value is None else f"<{name}>{value}</{name}>"

    acts = "".join(
        f"<action><actionname>{name}</actionname>{_ranges_xml(r)}</action>" for name, r in (actions or {}).items()
    )
    event_xml = "" if event is None and start is None and length is None else (
        f"<event>{tag('eventname', event)}{tag('starttime', start)}{tag('duration', length)}</event>"
    )
    text = (
        "<?xml version='1.0' encoding='utf-8'?>\n<annotation>"
        f"<folder>{folder}</folder><filename>{filename or path.with_suffix('.mp4').name}</filename>"
        "<size><width>64</width><height>48</height><depth>3</depth></size>"
        f"<header>{tag('duration', duration)}{tag('fps', fps)}{tag('frames', frames)}<inout>IN</inout></header>"
        f"{event_xml}"
        f"<object><objectname>{objectname}</objectname><position><keyframe>1</keyframe>"
        f"<keypoint><x>1</x><y>1</y></keypoint></position>{acts}</object>"
        "</annotation>\n"
    )
    path.write_text(text, encoding="utf-8")
    return path


def aihub_pair(folder: Path, stem: str, *, seconds: float = 4.0, fps: float = 10.0, event: str = "fight",
               start: float = 1.0, length: float = 2.0, actions: dict[str, list[tuple[int, int]]] | None = None,
               size: tuple[int, int] = (64, 48), **xml_kwargs) -> tuple[Path, Path]:
    """An AI Hub mp4 + XML pair ``folder/stem.{mp4,xml}`` whose header matches the video."""
    frames = int(round(seconds * fps))
    video = make_mp4(Path(folder) / f"{stem}.mp4", frames=frames, fps=fps, size=size)

    def hms(s: float) -> str:
        return f"{int(s // 3600):02d}:{int(s % 3600 // 60):02d}:{s % 60:04.1f}"

    kwargs = dict(event=event, folder=event, fps=f"{fps:g}", frames=str(frames), duration=hms(seconds),
                  start=hms(start), length=hms(length), actions=actions)
    kwargs.update(xml_kwargs)
    xml = aihub_xml(Path(folder) / f"{stem}.xml", **kwargs)
    return video, xml
