"""Uploads are accepted by their content only: MP4/MOV, Matroska/WebM, AVI, MPEG-TS; opened as that container.

Sniffing is checked on the bytes of real files written here with PyAV (and on the headers of playlists, concat
scripts and SDP), decoding on those files (the same frames whatever the container), and the route end to end
on the real ingress app without Ray: a real SQLite store and a stand-in Classifier whose ``classify_many``
answers 0.5 for every label, which is enough for the route's input handling.
"""

from __future__ import annotations

import socket
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from bigsister_ray.errors import VideoDecodeError
from bigsister_ray.video import sniff as sn
from tests._media import make_mp4
from tests._serve_support import TINY_SPEC

WRITE = "unit-write-key-0123456789"


def _remux(src: Path, dst: Path, fmt: str) -> Path:
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w", format=fmt) as o:
        s = o.add_stream_from_template(i.streams.video[0])
        for pk in i.demux(i.streams.video[0]):
            if pk.dts is None:
                continue
            pk.stream = s
            o.mux(pk)
    return dst


def _avi(path: Path, frames: int = 30) -> Path:
    import av

    with av.open(str(path), "w", format="avi") as o:
        s = o.add_stream("mpeg4", rate=Fraction(10))
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            img = np.full((48, 64, 3), (i * 7) % 200 + 20, dtype=np.uint8)
            for pk in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                o.mux(pk)
        for pk in s.encode():
            o.mux(pk)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sniff")
    mp4 = make_mp4(d / "a.mp4", frames=30, fps=10.0)
    return {"mp4": mp4, "mpegts": _remux(mp4, d / "a.ts", "mpegts"), "matroska": _remux(mp4, d / "a.mkv", "matroska"),
            "webm": _remux(mp4, d / "a.webm", "matroska"), "avi": _avi(d / "a.avi")}


@pytest.mark.parametrize("kind, expected", [("mp4", sn.MP4), ("mpegts", sn.MPEGTS), ("matroska", sn.MATROSKA),
                                            ("webm", sn.MATROSKA), ("avi", sn.AVI)])
def test_each_accepted_container_is_recognised_by_its_bytes(videos, kind, expected):
    assert sn.sniff_file(videos[kind]) == expected


@pytest.mark.parametrize("head, named", [
    (b"#EXTM3U\n#EXT-X-VERSION:3\nhttp://169.254.169.254/latest/meta-data\n", "HLS playlist"),
    (b"ffconcat version 1.0\nfile '/etc/passwd'\n", "concat script"),
    (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\nm=video 5004 RTP/AVP 96\r\n", "SDP"),
    (b"\xef\xbb\xbf#EXTM3U\n", "HLS playlist"),
])
def test_indirections_are_refused_by_name_with_the_accepted_formats(head, named):
    with pytest.raises(VideoDecodeError) as err:
        sn.sniff(head, "clip.mp4")
    msg = str(err.value)
    assert "clip.mp4" in msg and named in msg and sn.accepted_formats() in msg, msg


@pytest.mark.parametrize("head", [b"", b"\x00" * 4, b"GIF89a" + b"\x00" * 600, b"\x47" + b"\x00" * 187,
                                  b"RIFF\x00\x00\x00\x00WAVEfmt ", b"<html>"])
def test_anything_else_is_refused(head):
    with pytest.raises(VideoDecodeError, match="not an accepted video container"):
        sn.sniff(head)


def test_one_ts_sync_byte_is_not_enough_but_every_packet_start_is(videos):
    data = videos["mpegts"].read_bytes()[: sn.SNIFF_BYTES]
    assert sn.sniff(data) == sn.MPEGTS
    broken = bytearray(data)
    broken[188 * 3] = 0x00
    with pytest.raises(VideoDecodeError):
        sn.sniff(bytes(broken))


@pytest.mark.parametrize("kind", ["mpegts", "matroska", "avi"])
def test_every_container_decodes_to_the_same_frame_count_and_times(videos, kind):
    from bigsister_ray.serve.detect import iter_file_chunks

    path = videos[kind]
    fmt = sn.sniff_file(path)
    got = [(f.shape, t) for f, t in iter_file_chunks(path, TINY_SPEC, container=fmt)]
    ref = [(f.shape, t) for f, t in iter_file_chunks(videos["mp4"], TINY_SPEC, container=sn.MP4)]
    assert got == ref and got[0][0][1:] == (TINY_SPEC.size, TINY_SPEC.size, 3), (got, ref)


def test_an_upload_decodes_to_the_same_frames_as_the_cli_path(videos):
    from bigsister_ray.serve.detect import iter_file_chunks

    upload = list(iter_file_chunks(videos["mp4"], TINY_SPEC, container=sn.MP4))
    cli = list(iter_file_chunks(videos["mp4"], TINY_SPEC))
    assert len(upload) == len(cli) > 0
    for (a, ta), (b, tb) in zip(upload, cli):
        assert ta == tb and np.array_equal(a, b)


def test_the_forced_demuxer_refuses_a_file_of_another_container(videos):
    """The format is forced: an MPEG-TS file opened as MP4 does not get FFmpeg's guess instead."""
    from bigsister_ray.serve.detect import iter_file_chunks

    with pytest.raises(VideoDecodeError):
        list(iter_file_chunks(videos["mpegts"], TINY_SPEC, container=sn.MP4))


def test_only_the_file_protocol_is_open_to_the_demuxer(tmp_path):
    """A playlist forced through the opener (never reached from the route: sniffing refuses it) cannot reach the
    network: the listening socket below never sees a connection."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(0.5)
    port = srv.getsockname()[1]
    playlist = tmp_path / "p.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://127.0.0.1:{port}/seg.ts\n#EXT-X-ENDLIST\n")
    hls = sn.ContainerFormat("hls", "hls", ".m3u8")
    try:
        with pytest.raises(VideoDecodeError):
            c = sn.open_container(playlist, hls, timeout_s=2.0)
            try:
                sn.probe_container(c, "p.m3u8")
            finally:
                c.close()
        with pytest.raises(socket.timeout):
            srv.accept()
    finally:
        srv.close()


# ------------------------------------------------------------------------------------------------ the route
class _Remote:
    def __init__(self, fn):
        self._fn = fn

    async def remote(self, *args, **kwargs):
        return self._fn(*args, **kwargs)


class _Classifier:
    """Stand-in Classifier handle: ``info`` and ``classify_many`` (0.5 for every label)."""

    def __init__(self, info: dict) -> None:
        self.info = _Remote(lambda: info)
        self.classify_many = _Remote(lambda batch: np.full((len(batch), len(info["labels"])), 0.5, dtype=np.float32))


def _app(tmp_path):
    from bigsister_ray.config import Settings
    from bigsister_ray.incidents.store import IncidentStore
    from bigsister_ray.security.auth import Authenticator
    from bigsister_ray.serve.api import create_api
    from bigsister_ray.serve.context import ServeContext

    settings = Settings(auth={"keys": [{"name": "w", "key": WRITE, "scope": "write"}]},
                        database={"url": f"sqlite:///{tmp_path / 'x.db'}"})
    store = IncidentStore(settings.database.url, busy_timeout_ms=500)
    store.create_tables()
    info = {"loaded": True, "labels": ["fight", "normal"], "clip": TINY_SPEC.model_dump(), "thresholds": {},
            "max_batch_size": 4}
    ctx = ServeContext(settings=settings, store=store, shards=None, classifier=_Classifier(info),
                       authenticator=Authenticator.from_config(settings.auth), model_info=info)
    return create_api(ctx)


def test_the_route_takes_a_video_whatever_its_name_and_saves_it_under_the_sniffed_suffix(tmp_path, videos, monkeypatch):
    import bigsister_ray.serve.detect as detect_mod

    seen: list[Path] = []
    real = detect_mod.iter_file_chunks

    def spy(path, *args, **kwargs):
        seen.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(detect_mod, "iter_file_chunks", spy)
    with TestClient(_app(tmp_path), raise_server_exceptions=False) as c:
        r = c.post("/detect", headers={"X-API-Key": WRITE},
                   files={"file": ("cam.m3u8", videos["mpegts"].read_bytes(), "application/vnd.apple.mpegurl")})
    assert r.status_code == 200, r.text
    assert r.json()["windows"], r.json()
    assert [p.suffix for p in seen] == [".ts"], seen


@pytest.mark.parametrize("body, named", [
    (b"#EXTM3U\n#EXTINF:1,\nhttp://169.254.169.254/\n", "HLS playlist"),
    (b"ffconcat version 1.0\nfile 'a.mp4'\n", "concat script"),
    (b"v=0\r\nm=video 5004 RTP/AVP 96\r\n", "SDP"),
    (b"hello, not a video" * 100, "not one of them"),
])
def test_the_route_refuses_what_is_not_an_accepted_container_with_a_400(tmp_path, monkeypatch, body, named):
    import tempfile

    uploads = tmp_path / "uploads"
    uploads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(uploads))
    with TestClient(_app(tmp_path), raise_server_exceptions=False) as c:
        r = c.post("/detect", headers={"X-API-Key": WRITE}, files={"file": ("clip.mp4", body, "video/mp4")})
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert "clip.mp4" in detail and named in detail and "MP4/MOV, Matroska/WebM, AVI, MPEG-TS" in detail, detail
    assert not list(uploads.glob("bigsister-detect-*")), list(uploads.iterdir())


def test_no_decode_thread_outlives_a_finished_request(tmp_path, videos):
    from bigsister_ray.serve.detect import DECODE_THREAD_PREFIX

    with TestClient(_app(tmp_path), raise_server_exceptions=False) as c:
        r = c.post("/detect", headers={"X-API-Key": WRITE}, files={"file": ("a.mkv", videos["matroska"].read_bytes())})
        assert r.status_code == 200, r.text
    from ray._common.test_utils import wait_for_condition

    wait_for_condition(lambda: not [t for t in threading.enumerate() if t.name.startswith(DECODE_THREAD_PREFIX)],
                       timeout=10)
