"""The serving app on the shared local Ray: probes, keys, /detect, batching, file streams, bad URLs, DELETE.

One app for the whole module (Serve start-up is slow). Its checkpoint is a tiny3d whose features measure motion
and whose linear head is trained here on synthetic clips (tests/_serve_support.py: ``motion_tiny3d``), so
detection has a known answer: the synthetic fight moves more than the walking around it.
"""

from __future__ import annotations

import asyncio
import shutil

import httpx
import numpy as np
import pytest

from tests._serve_support import (
    READ_KEY,
    TINY_SPEC,
    WRITE_KEY,
    fit_head,
    make_checkpoint,
    motion_tiny3d,
    start_app,
    serve_settings,
    wait_for,
)

APP = "serve-app-test"
TRUE_SPAN = (4.0, 8.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A motion checkpoint (head fitted on 6 calibration videos) and a held-out video with a known fight."""
    import torch

    from bigsister_ray.data.synth import render_video
    from bigsister_ray.serve.detect import iter_file_chunks
    from bigsister_ray.video.windows import iter_windows

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("serve-app")
    windows, targets = [], []
    for i in range(6):
        path = root / f"cal{i}.mp4"
        span = (3.0, 7.0)
        render_video(path, "fight", 10.0, fps=TINY_SPEC.fps, size=(96, 72), seed=100 + i, abnormal_span=span)
        for w in iter_windows(iter_file_chunks(path, TINY_SPEC), TINY_SPEC):
            centre = (w.start_s + w.end_s) / 2
            windows.append(w.frames)
            targets.append(0 if span[0] <= centre <= span[1] else 1)  # 0: fight, 1: normal
    model = motion_tiny3d()
    acc = fit_head(model, np.stack(windows), targets)
    assert acc > 0.85, f"the motion head did not fit its calibration clips (accuracy {acc:.2f})"
    ckpt = make_checkpoint(root / "ckpt", model=model, thresholds={"fight": 0.5})
    clip = root / "media" / "fight.mp4"
    clip.parent.mkdir()
    render_video(clip, "fight", 12.0, fps=TINY_SPEC.fps, size=(96, 72), seed=99, abnormal_span=TRUE_SPAN)
    return {"root": root, "checkpoint": ckpt, "clip": clip}


@pytest.fixture(scope="module")
def app(trained, ray_local):
    from ray import serve

    settings = serve_settings(trained["root"], trained["checkpoint"])
    # A dead camera's delays (0.5 s doubling) keep growing for a minute, so its test sees them grow however late
    # the shard's first status round comes.
    settings.serve.streams.backoff_max_s = 64.0
    base = start_app(settings, APP)
    client = httpx.Client(base_url=base, headers={"X-API-Key": WRITE_KEY}, timeout=60)
    yield {"base": base, "client": client, "settings": settings, **trained}
    client.close()
    serve.delete(APP)


def _handle(name: str):
    from ray import serve

    return serve.get_deployment_handle(name, app_name=APP)


def test_probes_docs_and_api_keys(app):
    c = app["client"]
    assert httpx.get(app["base"] + "/healthz").json() == {"status": "ok"}
    assert httpx.get(app["base"] + "/readyz").status_code == 401  # readiness detail is for key holders
    ready = c.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True, ready.text
    assert "/streams" in httpx.get(app["base"] + "/openapi.json").json()["paths"]
    assert httpx.get(app["base"] + "/docs").status_code == 200
    assert httpx.get(app["base"] + "/streams").status_code == 401
    assert httpx.get(app["base"] + "/streams", headers={"X-API-Key": "wrong-key-0123456789"}).status_code == 401
    reader = {"Authorization": f"Bearer {READ_KEY}"}
    assert httpx.get(app["base"] + "/streams", headers=reader).status_code == 200
    denied = httpx.post(app["base"] + "/streams", headers=reader, json={"url": "fight.mp4", "name": "x"})
    assert denied.status_code == 403, denied.text
    assert c.get("/incidents").status_code == 200


def test_detect_upload_finds_the_known_segment_and_matches_offline_detect(app):
    from bigsister_ray.serve.detect import detect_file

    with open(app["clip"], "rb") as fh:
        r = app["client"].post("/detect", files={"file": ("fight.mp4", fh, "video/mp4")})
    assert r.status_code == 200, r.text
    body = r.json()
    # 12 s at 8 fps = 96 frames: windows of 8 every 4 -> 23 windows, each with a probability per label.
    assert len(body["windows"]) == 23
    for w in body["windows"]:
        assert set(w["scores"]) == {"fight", "normal"}
        assert abs(sum(w["scores"].values()) - 1.0) < 1e-4
    fights = [e for e in body["events"] if e["label"] == "fight"]
    assert len(fights) == 1, body["events"]
    window_s = TINY_SPEC.duration_s
    assert abs(fights[0]["start_s"] - TRUE_SPAN[0]) <= window_s, fights
    assert abs(fights[0]["end_s"] - TRUE_SPAN[1]) <= window_s, fights
    # `bigsister detect` shares the decoding, windowing and rules: same windows, same events.
    offline = detect_file(app["clip"], app["checkpoint"], app["settings"])
    assert [(w["start_s"], w["end_s"]) for w in offline["windows"]] == [(w["start_s"], w["end_s"]) for w in body["windows"]]
    np.testing.assert_allclose([w["scores"]["fight"] for w in offline["windows"]],
                               [w["scores"]["fight"] for w in body["windows"]], atol=1e-5)
    assert len(offline["events"]) == len(body["events"])
    for off, served in zip(offline["events"], body["events"]):
        assert set(off) == set(served)
        for key, value in off.items():
            assert served[key] == (pytest.approx(value) if isinstance(value, float) else value), (key, off, served)


def test_detect_refuses_oversized_and_undecodable_uploads(app):
    c = app["client"]
    # An MP4 header (so the container check passes) padded past the upload limit: refused for its size.
    head = app["clip"].read_bytes()[:64]
    big = head + b"\0" * (app["settings"].serve.upload_max_bytes + 1 - len(head))
    r = c.post("/detect", files={"file": ("big.mp4", big, "video/mp4")})
    assert r.status_code == 413, r.text
    r = c.post("/detect", files={"file": ("junk.mp4", b"this is not a video" * 100, "video/mp4")})
    assert r.status_code == 400, r.text
    assert "junk.mp4" in r.json()["detail"]
    r = c.post("/detect", files={"file": ("empty.mp4", b"", "video/mp4")})
    assert r.status_code == 400, r.text


def test_classifier_batches_concurrent_windows_into_softmax_probabilities(app):
    import torch

    from bigsister_ray.models import load_checkpoint, predict_proba

    rng = np.random.default_rng(0)
    windows = rng.integers(0, 256, size=(24, TINY_SPEC.frames, TINY_SPEC.size, TINY_SPEC.size, 3), dtype=np.uint8)
    classifier = _handle("Classifier")
    before = classifier.info.remote().result()

    async def many():
        return await asyncio.gather(*(classifier.classify.remote(w) for w in windows))

    probs = np.asarray(asyncio.run(many()))
    after = classifier.info.remote().result()
    assert probs.shape == (24, 2)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    loaded = load_checkpoint(app["checkpoint"])
    with torch.inference_mode():
        direct = predict_proba(loaded.model, windows, loaded.meta)
    np.testing.assert_allclose(probs, direct, atol=1e-5)
    assert after["windows"] - before["windows"] == 24
    assert after["batches"] - before["batches"] < 24, "windows sent together were not batched"
    assert after["max_batch_size"] == 8 and after["batch_wait_timeout_s"] == pytest.approx(0.02)
    with pytest.raises(Exception, match="expected a window shaped"):
        classifier.classify.remote(np.zeros((3, 32, 32, 3), np.uint8)).result()


def test_classify_many_scores_windows_sent_together_like_one_by_one(app):
    """What the Windower and /detect send: n windows in one call, also more than one batch holds (8 here)."""
    rng = np.random.default_rng(1)
    windows = rng.integers(0, 256, size=(11, TINY_SPEC.frames, TINY_SPEC.size, TINY_SPEC.size, 3), dtype=np.uint8)
    classifier = _handle("Classifier")
    before = classifier.info.remote().result()
    together = np.asarray(classifier.classify_many.remote(windows).result())
    after = classifier.info.remote().result()
    one_by_one = np.asarray([classifier.classify.remote(w).result() for w in windows[:3]])
    assert together.shape == (11, 2)
    np.testing.assert_allclose(together[:3], one_by_one, atol=1e-5)
    assert after["windows"] - before["windows"] == 11
    assert after["batches"] - before["batches"] >= 2, "11 windows cannot fit one batch of 8"
    for bad in (np.zeros((2, 3, 32, 32, 3), np.uint8), windows[0], windows[:0], windows.astype(np.float32)):
        with pytest.raises(Exception, match="expected windows shaped n x"):
            classifier.classify_many.remote(bad).result()


def test_refused_stream_urls_say_why(app):
    c = app["client"]
    for url, why in (("ftp://camera.example/stream", "scheme"), ("../outside.mp4", ".."),
                     ("missing.mp4", "no such file"), ("http://169.254.169.254/latest", "metadata")):
        r = c.post("/streams", json={"url": url, "name": "bad"})
        assert r.status_code == 400, (url, r.text)
        assert why in r.json()["detail"], (url, r.json())
    assert not [st for st in c.get("/streams").json()["streams"] if st["name"] == "bad"], "a refused URL was registered"


def test_ten_file_streams_progress_and_delete_frees_them(app):
    c = app["client"]
    media = app["root"] / "media"
    before = _handle("Classifier").info.remote().result()
    ids = []
    for i in range(10):
        shutil.copy(app["clip"], media / f"cam{i}.mp4")
        r = c.post("/streams", json={"url": f"cam{i}.mp4", "name": f"cam {i}", "location": "lobby", "realtime": True})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["status"]["state"] in ("connecting", "live"), body
        ids.append(body["id"])

    def all_progress():
        streams = {s["id"]: s for s in c.get("/streams").json()["streams"]}
        return all(streams[i]["status"]["windows_classified"] >= 3 for i in ids) and streams

    streams = wait_for(all_progress, 90, 1.0, "all ten file streams to classify windows")
    for i in ids:
        st = streams[i]["status"]
        assert st["frames_dropped"] == 0, st  # files never drop
        assert st["state"] in ("live", "stopped"), st
        assert st["last_frame_at"] is not None and st["callback_errors"] == 0, st
    one = c.get(f"/streams/{ids[0]}").json()
    assert one["name"] == "cam 0" and one["location"] == "lobby" and one["url"] == "cam0.mp4"

    shard = _handle("StreamShard")
    info = shard.info.remote().result()
    assert set(ids) <= set(info["streams"]), info  # one shard (16 streams each) holds all ten
    owners = {s["id"]: s["owner"] for s in c.get("/streams").json()["streams"]}
    assert all(owners[i]["shard_id"] == info["shard_id"] and owners[i]["node_id"] == info["node_id"] for i in ids), owners
    shards = c.get("/shards").json()
    assert [s["shard_id"] for s in shards["shards"]] == [info["shard_id"]] and set(ids) <= set(shards["shards"][0]["streams"])
    # Every window the streams report went through the one Classifier (this test's own count: the counters are
    # the app's, shared with the module's other tests).
    cls = _handle("Classifier").info.remote().result()
    classified = sum(streams[i]["status"]["windows_classified"] for i in ids)
    assert cls["windows"] - before["windows"] >= classified >= 30, (cls, before, classified)
    for i in ids:
        assert c.delete(f"/streams/{i}").status_code == 204
        assert c.get(f"/streams/{i}").status_code == 404
    assert c.delete(f"/streams/{ids[0]}").status_code == 404

    def released():
        held = set(shard.info.remote().result()["streams"])
        threads = shard.stream_threads.remote().result()
        return not (set(ids) & held) and not (set(ids) & set(threads))

    wait_for(released, 30, 0.5, "the shard to stop the deleted streams and end their threads")
    assert not set(ids) & set(c.get("/shards").json()["shards"][0]["streams"])


def test_unreachable_camera_backs_off_and_leaves_other_streams_alone(app):
    from tests._stream_server import closed_port

    c = app["client"]
    dead = c.post("/streams", json={"url": f"http://127.0.0.1:{closed_port()}/cam.ts", "name": "dead camera"})
    assert dead.status_code == 201, dead.text
    dead_id = dead.json()["id"]
    shutil.copy(app["clip"], app["root"] / "media" / "ok.mp4")
    ok_id = c.post("/streams", json={"url": "ok.mp4", "name": "good camera"}).json()["id"]
    backoffs = []
    streams = app["settings"].serve.streams

    def nominal(failures: int) -> float:
        return min(streams.backoff_max_s, streams.backoff_initial_s * 2 ** failures)

    def backing_off():
        st = c.get(f"/streams/{dead_id}").json()["status"]
        assert st["state"] in ("connecting", "reconnecting", "error"), st
        if st["backoff_s"] is not None:
            # the delay of the wait in progress, or of the one just ended while the next attempt runs
            assert st["backoff_s"] in (nominal(st["reconnects"]), nominal(st["reconnects"] - 1)), st
            if not backoffs or st["backoff_s"] != backoffs[-1]:
                backoffs.append(st["backoff_s"])
        return len(backoffs) >= 3 and st

    st = wait_for(backing_off, 120, 0.2, "three growing reconnect delays",
                  describe=lambda: f"delays seen {backoffs}; status {c.get(f'/streams/{dead_id}').json()}")
    assert backoffs == sorted(backoffs) and backoffs[-1] > backoffs[0], backoffs
    assert st["reconnects"] >= 2 and st["last_error"], st
    good = wait_for(lambda: (s := c.get(f"/streams/{ok_id}").json()["status"])["windows_classified"] >= 2 and s,
                    60, 0.5, "the healthy stream to progress beside the dead one")
    assert good["state"] in ("live", "stopped") and good["callback_errors"] == 0, good
    assert c.get("/readyz").status_code == 200
    for sid in (dead_id, ok_id):
        assert c.delete(f"/streams/{sid}").status_code == 204


def test_prometheus_metrics_are_exported(app):
    """A camera's frames and windows show as the graph's metrics on the node's Prometheus endpoint (Ray exports them)."""
    import ray

    c = app["client"]
    shutil.copy(app["clip"], app["root"] / "media" / "metered.mp4")
    sid = c.post("/streams", json={"url": "metered.mp4", "name": "metered camera"}).json()["id"]
    wait_for(lambda: c.get(f"/streams/{sid}").json()["status"]["windows_classified"] >= 2, 60, 0.5,
             "the camera to classify windows")
    assert c.delete(f"/streams/{sid}").status_code == 204
    port = ray._private.worker.global_worker.node.metrics_export_port
    wanted = {"ray_bigsister_frames_decoded_total", "ray_bigsister_windows_classified_total",
              "ray_bigsister_classifier_batch_size_bucket", "ray_bigsister_inference_seconds_bucket",
              "ray_bigsister_frame_to_score_seconds_bucket", "ray_bigsister_streams"}

    def exported():
        lines = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines()
        names = {line.split("{")[0] for line in lines if line.startswith("ray_bigsister_")}
        # this app's own windows (another app's metrics on the same node, e.g. an earlier test module's, do not count)
        ours = any(f'application="{APP}"' in line for line in lines
                   if line.startswith("ray_bigsister_windows_classified_total"))
        return wanted <= names and ours and names

    wait_for(exported, 60, 2.0, f"metrics {sorted(wanted)} with this app's windows on the Ray metrics endpoint")


def test_an_unauthenticated_huge_upload_is_refused_through_serves_proxy_before_its_body(app):
    """Through Ray Serve's HTTP proxy, not only in-process: headers announcing 500 MB and no key get a 401 while the
    client has sent no body byte; with a key the announced size gets 413 the same way."""
    import socket
    from urllib.parse import urlsplit

    host, port = urlsplit(app["base"]).hostname, urlsplit(app["base"]).port

    def answer_to_headers(extra: str) -> str:
        with socket.create_connection((host, port), timeout=20) as sock:
            sock.sendall((f"POST /detect HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                          f"Content-Length: {500 * 1024 * 1024}\r\n{extra}\r\n").encode())
            return sock.recv(4096).decode(errors="replace")

    assert answer_to_headers("").startswith("HTTP/1.1 401"), "refused without a key before any body byte"
    assert answer_to_headers(f"X-API-Key: {WRITE_KEY}\r\n").startswith("HTTP/1.1 413")
