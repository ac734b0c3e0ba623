"""Which uploaded videos are accepted, decided from their first bytes and never from the client's file name.

Accepted containers (:data:`ACCEPTED`), each recognised by its magic bytes:

- MP4 / MOV: an ISO base media ``ftyp`` box at offset 4;
- Matroska / WebM: the EBML header ``1A 45 DF A3``;
- AVI: ``RIFF`` + 4 size bytes + ``AVI ``;
- MPEG-TS: the sync byte ``0x47`` at the start of every 188-byte packet of the first bytes.

Anything else is refused with :class:`~bigsister_ray.errors.VideoDecodeError` (a 400 on ``POST /detect``) that
lists the accepted formats; playlists (``#EXTM3U``), FFmpeg concat scripts (``ffconcat``) and SDP descriptions
are named as such, since they are ways to make FFmpeg open other files or the network.

:func:`open_container` is the only way an upload is opened: PyAV with the sniffed demuxer forced
(``format=``), nested demuxers limited to that one (``format_whitelist``), protocols limited to ``file``
(``protocol_whitelist``) and FFmpeg's I/O timeout set. :func:`probe_container` reads the facts decoding uses
(frame count by counting the video packets without decoding them, the same count decord gives; fps; size).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bigsister_ray.errors import VideoDecodeError

__all__ = ["ContainerFormat", "ACCEPTED", "SNIFF_BYTES", "accepted_formats", "sniff", "sniff_file", "open_container",
           "probe_container", "DecodeCancelled"]


@dataclass(frozen=True)
class ContainerFormat:
    """An accepted container: its ``name``, the FFmpeg ``demuxer`` forced to read it and the file ``suffix``."""

    name: str
    demuxer: str
    suffix: str


MP4 = ContainerFormat("mp4", "mov", ".mp4")
MATROSKA = ContainerFormat("matroska", "matroska", ".mkv")
AVI = ContainerFormat("avi", "avi", ".avi")
MPEGTS = ContainerFormat("mpegts", "mpegts", ".ts")
#: Every container an upload may be, in the order they are tested.
ACCEPTED: tuple[ContainerFormat, ...] = (MP4, MATROSKA, AVI, MPEGTS)
#: How many leading bytes :func:`sniff` needs to decide (MPEG-TS: eight packets).
SNIFF_BYTES = 188 * 8
_TS_PACKET = 188
#: Inputs that are instructions to open something else, named in the refusal.
_INDIRECT = ((b"#EXTM3U", "an HLS playlist (#EXTM3U)"), (b"ffconcat", "an FFmpeg concat script (ffconcat)"),
             (b"v=0", "an SDP session description"))


class DecodeCancelled(Exception):
    """Decoding was stopped from outside (a deadline passed); not an error of the video."""


def accepted_formats() -> str:
    """The accepted containers, for messages: ``"MP4/MOV, Matroska/WebM, AVI, MPEG-TS"``."""
    return "MP4/MOV, Matroska/WebM, AVI, MPEG-TS"


def _is_mpegts(head: bytes) -> bool:
    packets = min(len(head), SNIFF_BYTES) // _TS_PACKET
    if packets < 2:  # one sync byte proves nothing
        return False
    return all(head[i * _TS_PACKET] == 0x47 for i in range(packets))


def sniff(head: bytes, shown: str = "upload") -> ContainerFormat:
    """The container ``head`` (the first :data:`SNIFF_BYTES` bytes of a file, or all of a shorter one) starts.

    Raises :class:`VideoDecodeError` naming ``shown`` and the accepted formats for anything else.
    """
    if len(head) >= 8 and head[4:8] == b"ftyp":
        return MP4
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return MATROSKA
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return AVI
    if _is_mpegts(head):
        return MPEGTS
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    what = next((name for magic, name in _INDIRECT if text[: len(magic)].lower() == magic.lower()), None)
    found = f"it is {what}" if what else "its first bytes are not one of them"
    raise VideoDecodeError(f"{shown}: not an accepted video container ({found}); expected {accepted_formats()}")


def sniff_file(path: str | Path, shown: str | None = None) -> ContainerFormat:
    """:func:`sniff` on the first bytes of ``path``."""
    with open(path, "rb") as f:
        return sniff(f.read(SNIFF_BYTES), shown or str(path))


def open_container(path: str | Path, fmt: ContainerFormat, timeout_s: float = 30.0, shown: str | None = None) -> Any:
    """Open ``path`` for reading as ``fmt`` only, local file protocol only; :class:`VideoDecodeError` if it fails.

    ``timeout_s`` is FFmpeg's own limit on each open and read (an interrupt callback), a second guard beside the
    caller's deadline.
    """
    import av

    options = {"protocol_whitelist": "file", "format_whitelist": fmt.demuxer}
    try:
        return av.open(str(path), mode="r", format=fmt.demuxer, container_options=options,
                       timeout=(timeout_s, timeout_s))
    except (av.FFmpegError, OSError, ValueError) as err:
        raise VideoDecodeError(f"{shown or path}: cannot open the {fmt.name} video (truncated or corrupt?): "
                               f"{_short(err)}") from err


def _short(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


def video_stream(container: Any, shown: str) -> Any:
    """The container's first video stream, refused with :class:`VideoDecodeError` if it has none or FFmpeg cannot
    identify its codec (PyAV then gives the stream no codec context)."""
    try:
        stream = container.streams.video[0]
    except IndexError:
        raise VideoDecodeError(f"{shown}: the container has no video stream") from None
    if stream.codec_context is None:
        raise VideoDecodeError(f"{shown}: the video stream's codec is unknown (corrupt, or not a supported codec)")
    return stream


def probe_container(container: Any, shown: str, cancel: threading.Event | None = None):
    """:class:`~bigsister_ray.video.files.VideoInfo` of an open container: video packets counted (no decode).

    Checks ``cancel`` every 256 packets (:class:`DecodeCancelled`). The container is left at its end; seek or
    reopen it before decoding.
    """
    import av

    from bigsister_ray.video.files import VideoInfo

    stream = video_stream(container, shown)
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if not math.isfinite(fps) or fps <= 0:
        raise VideoDecodeError(f"{shown}: video reports an unusable frame rate {fps!r}")
    ctx = stream.codec_context
    width, height = int(ctx.width or 0), int(ctx.height or 0)
    count = 0
    try:
        for packet in container.demux(stream):
            if packet.size:
                count += 1
                if cancel is not None and count % 256 == 0 and cancel.is_set():
                    raise DecodeCancelled(shown)
    except av.FFmpegError as err:
        raise VideoDecodeError(f"{shown}: cannot read the video's packets (truncated or corrupt?): {_short(err)}") from err
    if count == 0:
        raise VideoDecodeError(f"{shown}: video has no frames (truncated or corrupt?)")
    if width <= 0 or height <= 0:
        raise VideoDecodeError(f"{shown}: the container does not give the frame size (corrupt?)")
    return VideoInfo(num_frames=count, fps=fps, width=width, height=height)
