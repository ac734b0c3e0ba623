"""An evidence clip from a live shard: a file stream with a known fight, on the serving app on the shared local Ray,
opens an incident whose clip the shard cuts around the peak and the Ingress serves with Range requests through
Serve's HTTP proxy; the MP4 is decoded back with PyAV, and the outbox delivers it after the alert. The camera's
newest frame, which the shard saves, is served there too.

The checkpoint and the fight video come from test_serve_app's ``trained`` fixture (a motion tiny3d with a known
answer); this module runs its own app on its own database and media folders.
"""

from __future__ import annotations

import io
import shutil

import av
import httpx
import pytest
from PIL import Image

from tests._serve_support import READ_KEY, TINY_SPEC, WRITE_KEY, serve_settings, start_app, wait_for
from tests.integration.test_serve_app import TRUE_SPAN, trained  # noqa: F401  (a module-scoped fixture)

APP = "evidence-clip-test"


@pytest.fixture
def app(trained, ray_local, tmp_path):  # noqa: F811
    from ray import serve

    settings = serve_settings(tmp_path, trained["checkpoint"])
    settings = settings.model_copy(update={"incidents": settings.incidents.model_copy(update={"clip_before_s": 2.0,
                                                                                             "clip_after_s": 2.0})})
    shutil.copy(trained["clip"], tmp_path / "media" / "fight.mp4")
    base = start_app(settings, APP)
    client = httpx.Client(base_url=base, headers={"X-API-Key": WRITE_KEY}, timeout=60)
    yield {"client": client, "settings": settings, "base": base}
    client.close()
    serve.delete(APP)


def test_a_fight_on_a_file_stream_gets_a_clip_around_its_peak_served_with_range(app):
    c = app["client"]
    r = c.post("/streams", json={"url": "fight.mp4", "name": "Gate", "realtime": False})
    assert r.status_code == 201, r.text

    def incident_with_clip():
        items = c.get("/incidents").json()["items"]
        return next((i for i in items if i["has_clip"]), None)

    inc = wait_for(incident_with_clip, 120, 1.0, "an incident on the fight stream with its evidence clip")
    assert inc["label"] == "fight" and TRUE_SPAN[0] - 2 <= inc["peak_start_s"] <= TRUE_SPAN[1]
    reader = httpx.Client(base_url=app["base"], headers={"X-API-Key": READ_KEY}, timeout=60)
    full = reader.get(f"/incidents/{inc['id']}/clip")
    assert full.status_code == 200 and full.headers["content-type"] == "video/mp4"
    part = reader.get(f"/incidents/{inc['id']}/clip", headers={"Range": "bytes=0-1023"})
    assert part.status_code == 206 and part.content == full.content[:1024]
    assert httpx.get(f"{app['base']}/incidents/{inc['id']}/clip").status_code == 401
    with av.open(io.BytesIO(full.content)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
    assert stream.codec_context.name == "h264" and (frames[0].width, frames[0].height) == (TINY_SPEC.size, TINY_SPEC.size)
    span_s = (inc["peak_end_s"] - inc["peak_start_s"]) + 2.0 + 2.0
    assert 0.6 * span_s * TINY_SPEC.fps <= len(frames) <= span_s * TINY_SPEC.fps + 1, len(frames)
    path = app["settings"].incidents.media_dir / f"{inc['id']}/clip.mp4"
    assert path.read_bytes() == full.content and (path.stat().st_mode & 0o777) == 0o600

    # the camera's newest frame, saved by its shard, through the proxy too (the file ended: its last frame)
    sid = r.json()["id"]
    picture = wait_for(lambda: (f := reader.get(f"/streams/{sid}/frame")).status_code == 200 and f, 30, 0.5,
                       "the camera's newest frame")
    assert picture.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(picture.content)) as im:
        assert im.size == (TINY_SPEC.size, TINY_SPEC.size)

    from bigsister_ray.incidents.store import IncidentStore

    store = IncidentStore(app["settings"].database.url)
    def clip_sent() -> bool:
        delivery = store.delivery("clip", inc["id"])
        return delivery is not None and delivery.status == "sent"

    try:  # the outbox delivers the clip after the alert (here to the console notifier)
        wait_for(clip_sent, 60, 0.5, "the clip delivery to be sent")
        assert store.delivery("alert", inc["id"]).status == "sent"
    finally:
        store.dispose()
