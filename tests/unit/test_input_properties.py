"""Input handling raises only the project's request errors, whatever the input (hypothesis).

- Stream URLs: :func:`bigsister_ray.security.urls.check_stream_url` and
  :func:`bigsister_ray.video.sources.resolve_source` raise :class:`~bigsister_ray.errors.StreamError` (a 400)
  or accept; :func:`bigsister_ray.video.sources.redact_url` never raises. Name resolution is replaced by one that
  encodes the host as the system resolver does (IDNA) and then finds nothing, so no test reaches the network.
- Uploads: random bytes and cut or damaged real videos into the sniffer and the upload decoder raise
  :class:`~bigsister_ray.errors.VideoDecodeError` (a 400) or decode.

Inputs the standard library refuses (unclosed or non-IP brackets, empty or over-long labels, NFKC-invalid hosts)
are pinned with ``@example`` and listed one by one.
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bigsister_ray.errors import StreamError, VideoDecodeError
from tests._media import make_mp4
from tests._serve_support import TINY_SPEC

PROPS = settings(max_examples=150, deadline=None, database=None, report_multiple_bugs=False,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# ------------------------------------------------------------------------------------------------ URLs
_label = st.text(alphabet=st.sampled_from("abcxyz019-_"), min_size=0, max_size=70)
_host = st.one_of(
    st.lists(_label, min_size=1, max_size=6).map(".".join),
    st.text(min_size=0, max_size=300),
    st.builds(lambda s: f"[{s}]", st.text(alphabet="0123456789abcdefz:.%", max_size=45)),
    st.builds(lambda s: f"[{s}", st.text(alphabet="0123456789abcdef:", max_size=20)),
    st.sampled_from(["localhost", "127.0.0.1", "169.254.169.254", "[::1]", "xn--a", "a" * 64, ("a" * 63 + ".") * 5]),
)
_port = st.one_of(st.none(), st.integers(-10, 100_000).map(str), st.text(alphabet="0123456789:x", max_size=8))
_userinfo = st.one_of(st.none(), st.text(alphabet="abc:@%", max_size=10))
_tail = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@st.composite
def urls(draw) -> str:
    scheme = draw(st.sampled_from(["http", "https", "rtsp", "rtsps", "file", "ftp", "HTTP", ""]))
    host, port, user = draw(_host), draw(_port), draw(_userinfo)
    netloc = (f"{user}@" if user is not None else "") + host + (f":{port}" if port is not None else "")
    return (f"{scheme}://" if scheme else "") + netloc + "/" + draw(_tail)


_any_url = st.one_of(urls(), st.text(max_size=80), st.builds(lambda t: "http://" + t, st.text(max_size=80)))


def _no_network_resolver(host, port, *args, **kwargs):
    if isinstance(host, str):
        host.encode("idna")  # what the system resolver does with a str host (UnicodeError for bad labels)
    raise socket.gaierror(socket.EAI_NONAME, "not resolved in tests")


def _check(url: str) -> None:
    from bigsister_ray.config import AuthConfig
    from bigsister_ray.security.urls import check_stream_url
    from bigsister_ray.video.sources import redact_url

    with mock.patch("socket.getaddrinfo", _no_network_resolver):
        check_stream_url(url, AuthConfig(), 8000, redacted=redact_url(url))


def _resolve(url: str) -> None:
    from bigsister_ray.video.sources import resolve_source

    with tempfile.TemporaryDirectory() as root:
        resolve_source(url, root, must_exist=False)


def _only_stream_errors(fn, url: str) -> None:
    try:
        fn(url)
    except StreamError:
        pass


#: Inputs that ``urllib.parse`` or the IDNA codec refuse with ValueError/UnicodeError: the URL checks turn each into
#: a StreamError (a 400 saying what a URL must look like), never a 500.
BRACKET_OPEN = "http://[::1"  # ValueError: Invalid IPv6 URL (urlsplit)
BRACKET_BAD = "http://[zz]/"  # ValueError: 'zz' does not appear to be an IPv4 or IPv6 address (urlsplit)
EMPTY_LABEL = "http://a..b/"  # UnicodeError: label empty or too long (idna, in getaddrinfo)
LONG_LABEL = "http://" + "a" * 64 + "/"  # UnicodeError: label too long (idna, in getaddrinfo)
NFKC = "http://\u2100.com/"  # ValueError: netloc contains invalid characters under NFKC normalization


@PROPS
@given(url=_any_url)
@example(url=BRACKET_OPEN)
@example(url=EMPTY_LABEL)
def test_check_stream_url_raises_only_stream_error(url):
    _only_stream_errors(_check, url)


@PROPS
@given(url=_any_url)
@example(url=BRACKET_OPEN)
def test_resolve_source_raises_only_stream_error(url):
    _only_stream_errors(_resolve, url)


def _raw_parse(url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, _ = parts.hostname, parts.port
    host.encode("idna")
    if any(not label or len(label) > 63 for label in host.split(".")):
        raise UnicodeError("label empty or too long")


@pytest.mark.parametrize("url, fn, error", [
    (BRACKET_OPEN, _check, ValueError), (BRACKET_BAD, _check, ValueError), (EMPTY_LABEL, _check, UnicodeError),
    (LONG_LABEL, _check, UnicodeError), (NFKC, _check, ValueError),
    (BRACKET_OPEN, _resolve, ValueError), (BRACKET_BAD, _resolve, ValueError), (NFKC, _resolve, ValueError),
])
def test_each_known_malformed_url_is_a_stream_error(url, fn, error):
    with pytest.raises(StreamError, match="malformed"):
        fn(url)
    with pytest.raises(error):  # positive control: the standard library itself refuses it this way
        _raw_parse(url)


@pytest.mark.parametrize("url", ["http://h:99999/", "http://h:-1/", "ftp://h/", "http:///x", "http://h:x/"])
def test_malformed_urls_already_refused_with_a_stream_error(url):
    """Positive control: the properties above can pass; these are refused the right way."""
    for fn in (_check, _resolve):
        with pytest.raises(StreamError):
            fn(url)


@PROPS
@given(url=_any_url)
@example(url=BRACKET_OPEN)
@example(url=BRACKET_BAD)
@example(url=NFKC)
@example(url="rtsp://user:secret@[::1/x?token=abc")
def test_redact_url_never_raises_and_never_shows_a_password(url):
    from bigsister_ray.video.sources import redact_url

    out = redact_url(url)
    assert isinstance(out, str)
    if "user:secret@" in url:
        assert "secret" not in out, out


# ------------------------------------------------------------------------------------------------ uploads
@pytest.fixture(scope="module")
def real_videos(tmp_path_factory) -> list[bytes]:
    import av

    d = tmp_path_factory.mktemp("props")
    mp4 = make_mp4(d / "a.mp4", frames=20, fps=10.0)
    out = [mp4.read_bytes()]
    for fmt, ext in (("mpegts", ".ts"), ("matroska", ".mkv")):
        dst = d / f"a{ext}"
        with av.open(str(mp4)) as i, av.open(str(dst), "w", format=fmt) as o:
            s = o.add_stream_from_template(i.streams.video[0])
            for pk in i.demux(i.streams.video[0]):
                if pk.dts is not None:
                    pk.stream = s
                    o.mux(pk)
        out.append(dst.read_bytes())
    return out


def _sniff_and_decode(data: bytes) -> None:
    """What the route does with an upload's bytes: only VideoDecodeError may come out."""
    from bigsister_ray.serve.detect import iter_file_chunks
    from bigsister_ray.video.sniff import sniff

    try:
        fmt = sniff(data[:2048], "upload")
    except VideoDecodeError:
        return
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"u{fmt.suffix}"
        path.write_bytes(data)
        try:
            for frames, times in iter_file_chunks(path, TINY_SPEC, max_seconds=60.0, max_pixels=4096 * 4096,
                                                  container=fmt, io_timeout_s=10.0):
                assert frames.shape[1:] == (TINY_SPEC.size, TINY_SPEC.size, 3) and len(times) == len(frames)
        except VideoDecodeError:
            pass


_magic = st.sampled_from([b"", b"\x00\x00\x00\x18ftypisom", b"\x1a\x45\xdf\xa3", b"RIFF\x00\x00\x00\x00AVI ",
                          b"#EXTM3U\n", b"ffconcat version 1.0\n", b"v=0\r\n"])


@settings(PROPS, max_examples=60)
@given(head=_magic, body=st.binary(max_size=4096))
def test_random_bytes_are_refused_or_decoded_never_anything_else(head, body):
    _sniff_and_decode(head + body)


@settings(PROPS, max_examples=40)
@given(which=st.integers(0, 2), keep=st.floats(0.0, 1.0), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)),
                                                                         max_size=8))
@example(which=2, keep=0.3203125, flips=[(0.375, 0)])  # a Matroska cut whose codec FFmpeg cannot identify
def test_cut_or_damaged_real_videos_are_refused_or_decoded(real_videos, which, keep, flips):
    data = bytearray(real_videos[which][: int(len(real_videos[which]) * keep)])
    for where, value in flips:
        if data:
            data[min(len(data) - 1, int(where * len(data)))] = value
    _sniff_and_decode(bytes(data))
