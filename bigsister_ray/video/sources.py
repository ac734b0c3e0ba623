"""Open a camera stream or a local media file with PyAV, safely.

A source is one of:

- ``rtsp://`` / ``rtsps://`` cameras (RTP over TCP, never UDP: CCTV links drop UDP),
- ``http://`` / ``https://`` MPEG-TS, MJPEG (``multipart/x-mixed-replace``) or HLS playlists,
- a local file, as a plain path or a ``file://`` URL, that must lie under the media root
  (``settings.serve.streams.media_root``): a relative path is taken relative to the media root, ``..`` is
  refused outright and symlinks are resolved before the check, so a link cannot lead outside.

:func:`resolve_source` validates a URL and says how to open it (a :class:`Source`); :func:`open_source` opens it
with bounded open and read timeouts (PyAV's interrupt callback plus FFmpeg's ``rw_timeout``) and a protocol
whitelist, so that a stalled camera can never block a reader forever and an HLS playlist cannot make FFmpeg
open ``file:`` or other protocols. :func:`redact_url` removes credentials before a URL reaches a log, a
status or an error message; :func:`redact_text` does the same inside any text (FFmpeg's error messages quote
the URL they failed on). Both are :mod:`bigsister_ray.redact`'s, re-exported here.

Errors are :class:`~bigsister_ray.errors.StreamError` with the redacted URL and what to do.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote

from bigsister_ray.errors import StreamError
from bigsister_ray.redact import redact_text, redact_url

if TYPE_CHECKING:  # pragma: no cover - typing only
    import av.container

    from bigsister_ray.security.urls import UrlPolicy

__all__ = [
    "LIVE_SCHEMES",
    "ARRIVAL_TIME_FORMATS",
    "Source",
    "SourceKind",
    "redact_url",
    "redact_text",
    "resolve_source",
    "resolve_media_path",
    "open_source",
    "describe_av_error",
]

SourceKind = Literal["live", "file"]

log = logging.getLogger("bigsister_ray.video.stream")

#: URL schemes opened as live network sources.
LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "http", "https"})

#: Demuxers whose timestamps are invented (MJPEG over HTTP is stamped at a nominal 25 fps whatever the camera
#: sends): frames from these are timed by their arrival instead.
ARRIVAL_TIME_FORMATS = frozenset({"mpjpeg", "mjpeg", "image2pipe", "jpeg_pipe"})

#: FFmpeg protocols each kind of source may use (HLS segments and redirects are opened through the same list).
_WHITELIST = {
    "rtsp": "rtsp,rtp,srtp,tcp,udp,tls",
    "rtsps": "rtsps,rtsp,rtp,srtp,tcp,udp,tls",
    "http": "http,https,tcp,tls,crypto,httpproxy",
    "https": "http,https,tcp,tls,crypto,httpproxy",
    "file": "file",
}

#: Demuxers a local file or an HTTP source may use. Playlists and concat lists (hls, concat, image2 patterns) are
#: not allowed for files: a playlist under the media root could name files outside it.
_FILE_FORMATS = "mov,mp4,matroska,webm,avi,mpegts,mpeg,flv,asf,ogg,h264,hevc,m4v,mjpeg,ivf,gif"
_HTTP_FORMATS = _FILE_FORMATS + ",hls,mpjpeg"
#: An HTTP URL that is not a playlist may not turn into one (HLS goes through the policy-checked fetcher).
_HTTP_STREAM_FORMATS = _FILE_FORMATS + ",mpjpeg"


# --------------------------------------------------------------------------------------------- resolution
@dataclass(frozen=True)
class Source:
    """How to open one source. ``target`` is what FFmpeg gets (a URL, or an absolute path for files)."""

    url: str
    target: str
    kind: SourceKind
    scheme: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def redacted(self) -> str:
        return redact_url(self.url)

    @property
    def is_live(self) -> bool:
        return self.kind == "live"

    def __repr__(self) -> str:  # never show credentials, even in a traceback
        return f"Source(kind={self.kind!r}, url={self.redacted!r})"

    __str__ = __repr__


def resolve_media_path(path: str | os.PathLike[str], media_root: str | os.PathLike[str], *,
                       must_exist: bool = True, shown: str | None = None) -> Path:
    """The absolute, symlink-free path of ``path`` if it lies under ``media_root``; else :class:`StreamError`.

    A relative ``path`` is taken relative to ``media_root``. ``..`` components are refused (even when they would
    stay inside), and the check is made after resolving symlinks, so no link can point outside the root.
    """
    shown = shown if shown is not None else str(path)
    raw = Path(path)
    if any(part == ".." for part in raw.parts):
        raise StreamError(f"media file {shown}: '..' is not allowed in a media path; give a path under the media root")
    root = Path(media_root).expanduser()
    try:
        root_real = root.resolve(strict=True)
    except (OSError, RuntimeError) as err:
        raise StreamError(
            f"media root {root} does not exist or cannot be read ({err}); create it or set serve.streams.media_root"
        ) from err
    if not root_real.is_dir():
        raise StreamError(f"media root {root} is not a directory; set serve.streams.media_root to a folder")
    candidate = raw if raw.is_absolute() else root_real / raw
    try:
        real = candidate.resolve(strict=must_exist)
    except FileNotFoundError as err:
        raise StreamError(f"media file {shown}: no such file under the media root {root}") from err
    except (OSError, RuntimeError) as err:  # symlink loop, permission
        raise StreamError(f"media file {shown}: cannot be resolved ({err})") from err
    if not real.is_relative_to(root_real):
        raise StreamError(
            f"media file {shown}: resolves outside the media root {root} (expected a file under it; "
            "symlinks are followed before this check)"
        )
    if must_exist and not real.is_file():
        raise StreamError(f"media file {shown}: expected a regular file, got {'a directory' if real.is_dir() else 'something else'}")
    return real


def resolve_source(url: str, media_root: str | os.PathLike[str], *, must_exist: bool = True) -> Source:
    """Validate ``url`` and say how to open it.

    Network URLs must be ``rtsp``, ``rtsps``, ``http`` or ``https`` with a host; anything else without a scheme
    (or ``file://``) is a local file checked with :func:`resolve_media_path`. ``must_exist=False`` checks a file
    path without requiring the file to be there yet (it is checked again when opened).
    Raises :class:`StreamError` naming the redacted URL and what was expected.
    """
    if not isinstance(url, str) or not url.strip():
        raise StreamError(f"stream URL: expected a non-empty string, got {url!r}")
    url = url.strip()
    shown = redact_url(url)
    if any(ord(c) < 32 for c in url):
        raise StreamError(f"stream URL {shown!r}: control characters are not allowed")
    has_scheme = re.match(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://", url) is not None
    if not has_scheme:
        path = resolve_media_path(url, media_root, must_exist=must_exist, shown=shown)
        return Source(url=url, target=str(path), kind="file", scheme="file", options=_file_options())
    from bigsister_ray.security.urls import split_url

    parts = split_url(url, shown)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise StreamError(f"stream URL {shown}: file:// URLs must name a local path (file:///path), got host {parts.netloc!r}")
        path = resolve_media_path(unquote(parts.path), media_root, must_exist=must_exist, shown=shown)
        return Source(url=url, target=str(path), kind="file", scheme="file", options=_file_options())
    if scheme not in LIVE_SCHEMES:
        raise StreamError(
            f"stream URL {shown}: unsupported scheme {scheme!r}; expected rtsp://, rtsps://, http://, https:// "
            "or a file under the media root"
        )
    if not parts.hostname:
        raise StreamError(f"stream URL {shown}: no host; expected {scheme}://host[:port]/path")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError as err:
        raise StreamError(f"stream URL {shown}: invalid port") from err
    return Source(url=url, target=url, kind="live", scheme=scheme, options={})


def _file_options() -> dict[str, str]:
    return {"protocol_whitelist": _WHITELIST["file"], "format_whitelist": _FILE_FORMATS}


def _live_options(source: Source, read_timeout_s: float, probe_s: float) -> dict[str, str]:
    us = str(max(1, int(read_timeout_s * 1_000_000)))
    opts: dict[str, str] = {
        # Start fast on a live source: probe about a second, not FFmpeg's default five.
        "analyzeduration": str(max(100_000, int(probe_s * 1_000_000))),
        "probesize": "1000000",
        "fflags": "nobuffer+discardcorrupt",
    }
    if source.scheme in ("rtsp", "rtsps"):
        # FFmpeg speaks plain RTSP to the local relay (which adds TLS for rtsps); TCP interleaving, never UDP.
        # RTSP's socket timeout option is 'timeout' (microseconds) in FFmpeg >= 5.
        opts.update({"protocol_whitelist": "rtsp,tcp", "rtsp_transport": "tcp", "timeout": us})
    else:
        opts.update({
            "protocol_whitelist": _WHITELIST[source.scheme],
            "format_whitelist": _HTTP_FORMATS,
            "rw_timeout": us,
            # Any HTTP 3xx is an error: a redirect could lead anywhere.
            "max_redirects": "0",
            # FFmpeg's own HTTP reconnection is off on purpose: it would hide a flapping camera (a silent
            # reconnect per hang-up, no backoff, nothing counted). The runner reconnects instead, with capped
            # exponential backoff, and shows it in the stream's status.
            "reconnect": "0",
            "reconnect_streamed": "0",
            "reconnect_on_network_error": "0",
            "user_agent": "bigsister-ray",
            # A live HLS playlist is followed as players do: start three segments behind its end, reload it as
            # it grows, keep reloading while the publisher is briefly late, and retry a segment download once
            # before skipping it. Each playlist and segment is a request of its own through the policy-checked
            # fetcher (no keep-alive). (Ignored by the other demuxers.)
            "live_start_index": "-3",
            "max_reload": "1000",
            "m3u8_hold_counters": "1000",
            "seg_max_retry": "1",
            "http_persistent": "0",
            "http_multiple": "0",
        })
    return opts


def open_source(source: Source, *, open_timeout_s: float, read_timeout_s: float, probe_s: float = 1.0,
                extra_options: dict[str, str] | None = None, hwaccel=None, policy: "UrlPolicy | None" = None,
                refusals: list[StreamError] | None = None) -> "av.container.InputContainer":
    """Open ``source`` with PyAV, bounded in time; the caller closes the container (in the same thread).

    ``open_timeout_s`` bounds connecting and probing, ``read_timeout_s`` every later read (PyAV's interrupt
    callback, re-armed per packet, plus FFmpeg's socket timeout). ``hwaccel``: PyAV's ``HWAccel`` to decode on
    a device (:func:`bigsister_ray.video.decode.hwaccel_for`).

    A live source is held to ``policy`` (default: :func:`bigsister_ray.security.urls.url_policy`) on this
    connection and every one FFmpeg makes from it (:mod:`bigsister_ray.video.egress`): its host is resolved
    now, every address checked, and the connection made to a checked address. What the guards refuse later
    (an HLS segment elsewhere, an RTSP redirect) is appended to ``refusals``.

    Raises :class:`StreamError` (redacted) when the source is refused, cannot be opened or has no video stream.
    A live source that fails to connect is reported as "could not connect to the camera" without what the far
    end answered; ``err.__cause__`` is PyAV's error.
    """
    import av

    options = dict(source.options)
    target, io_open, relay = source.target, None, None
    refusals = refusals if refusals is not None else []
    if source.is_live:
        from bigsister_ray.security.urls import url_policy
        from bigsister_ray.video.egress import HlsFetcher, RtspRelay, is_hls_url

        policy = policy or url_policy()
        checked = policy.resolve_target(source.url, source.redacted)
        options.update(_live_options(source, read_timeout_s, probe_s))
        if source.scheme in ("rtsp", "rtsps"):
            relay = RtspRelay(checked, open_timeout_s, refusals)
            target = relay.url
        elif is_hls_url(source.url):
            io_open = HlsFetcher(policy, read_timeout_s, refusals)
            options["format_whitelist"] = _HTTP_FORMATS
        else:
            target = checked.pinned_url()
            options["format_whitelist"] = _HTTP_STREAM_FORMATS
            options["headers"] = f"Host: {checked.host_header}\r\n"
            if source.scheme == "https":
                options["verifyhost"] = checked.host  # TLS SNI and certificate name: the URL's, not the address
    options.update(extra_options or {})
    try:
        container = av.open(target, mode="r", format="hls" if io_open is not None else None, options=options,
                            timeout=(open_timeout_s, read_timeout_s), hwaccel=hwaccel, io_open=io_open)
    except (av.error.FFmpegError, OSError, StreamError) as err:
        if relay is not None:
            relay.close()
        if refusals:
            raise StreamError(f"cannot open {source.redacted}: {refusals[0]}") from err
        if source.is_live:
            log.debug("cannot open %s: %s", source.redacted, describe_av_error(err, source))
            why = ("timed out (no video within the open timeout)" if isinstance(err, av.error.ExitError)
                   else "check that it is up and serves video at this URL; redirects are not followed")
            raise StreamError(f"cannot open {source.redacted}: could not connect to the camera ({why})") from err
        if isinstance(err, av.error.FFmpegError):
            hint = f" (expected a video file of a supported container: {_FILE_FORMATS})"
            raise StreamError(f"cannot open {source.redacted}: {describe_av_error(err, source)}{hint}") from err
        raise StreamError(f"cannot open {source.redacted}: {redact_text(str(err), [source.url, source.target])}") from err
    if not container.streams.video:
        container.close()
        raise StreamError(f"{source.redacted} has no video stream (expected MPEG-TS, MJPEG, HLS, RTSP video or a video file)")
    return container


def describe_av_error(err: BaseException, source: Source | None = None) -> str:
    """A short, redacted description of a PyAV/FFmpeg error (its class and message, without the URL)."""
    import av

    if isinstance(err, av.error.ExitError):
        return "timed out (no data within the timeout)"
    msg = getattr(err, "strerror", None) or str(err)
    raw = [source.url, source.target] if source is not None else []
    return f"{type(err).__name__}: {redact_text(str(msg), raw)}"
