"""An HTTP playlist served on 127.0.0.1 cannot make FFmpeg read local files."""

from __future__ import annotations

import pytest

from bigsister_ray.errors import StreamError


def test_an_http_playlist_cannot_make_ffmpeg_read_local_files(tmp_path):
    """The http(s) protocol whitelist has no ``file``: a remote playlist naming file:// segments is refused."""
    from bigsister_ray.video.sources import open_source, resolve_source
    from tests._stream_server import StreamServer, make_hls

    hls = make_hls(tmp_path / "hls", seconds=1.0)
    static = tmp_path / "static"
    static.mkdir()
    (static / "evil.m3u8").write_text(hls.read_text().replace("index0.ts", f"file://{hls.parent / 'index0.ts'}"))
    (static / "good.m3u8").write_text(hls.read_text())
    (static / "index0.ts").write_bytes((hls.parent / "index0.ts").read_bytes())
    media = tmp_path / "media"
    media.mkdir()
    with StreamServer(static=static) as server:
        good = open_source(resolve_source(server.url("/static/good.m3u8"), media), open_timeout_s=10, read_timeout_s=10)
        good.close()  # the same playlist with http segments opens: the refusal below is the whitelist's
        with pytest.raises(StreamError, match="cannot open"):
            c = open_source(resolve_source(server.url("/static/evil.m3u8"), media), open_timeout_s=10, read_timeout_s=10)
            for _ in c.demux(video=0):  # some FFmpeg versions open lazily: reading the segment must fail
                pass
            c.close()
