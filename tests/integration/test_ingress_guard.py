"""The Ingress checks the key and the body size before it reads the body; stream registrations are capped and
rate limited per key; the OpenAPI declares how to send the key.

No Ray: the real app from :func:`bigsister_ray.serve.api.create_api` with a real SQLite store. Most tests drive
it in-process through ``httpx.ASGITransport``, which takes the next body chunk from the client's generator
only when the app asks for one, so the bytes the generator yielded are exactly the bytes the server read (a
positive control shows an accepted upload being read whole). One test runs the app under a real uvicorn on
127.0.0.1 and talks raw HTTP/1.1 to it: the answer comes before any body byte is sent, and the server closes
the connection instead of draining the body.
"""

from __future__ import annotations

import asyncio
import select
import socket
import threading

import httpx
import pytest

from bigsister_ray.config import Settings
from tests._handles import ingress_app
from tests._serve_support import wait_for

WRITE = "unit-write-key-0123456789"
OTHER = "unit-other-write-key-0123456789"
READ = "unit-read-key-0123456789"
MULTIPART = {"Content-Type": "multipart/form-data; boundary=guardboundary"}
#: The start of a well-formed upload: the file's bytes follow.
PART_HEAD = (b"--guardboundary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.mp4\"\r\n"
             b"Content-Type: video/mp4\r\n\r\n")
#: What a hostile client offers: far more than any limit here.
HUGE = 512 * 1024 * 1024
CHUNK = 4096




def _app(tmp_path, **overrides):

    media = tmp_path / "media"
    media.mkdir(exist_ok=True)
    (media / "cam.mp4").write_bytes(b"\0" * 16)
    auth = {"keys": [{"name": "w", "key": WRITE, "scope": "write"}, {"name": "o", "key": OTHER, "scope": "write"},
                     {"name": "r", "key": READ, "scope": "read"}], **overrides.pop("auth", {})}
    serve = {"upload_max_bytes": 1024 * 1024, "streams": {"media_root": str(media), **overrides.pop("streams", {})}}
    return ingress_app(Settings(auth=auth, serve=serve, database={"url": f"sqlite:///{tmp_path / 'x.db'}"}))


class _Body:
    """An async body of ``total`` bytes in ``chunk``-byte pieces that counts what was taken from it."""

    def __init__(self, total: int, chunk: int = CHUNK, head: bytes = b"") -> None:
        self.total, self.chunk, self.head = total, chunk, head
        self.yielded = 0

    async def __aiter__(self):
        sent = 0
        while sent < self.total:
            piece = (self.head[sent:sent + self.chunk] if sent < len(self.head) else b"")
            piece = piece.ljust(min(self.chunk, self.total - sent), b"x")
            sent += len(piece)
            self.yielded += len(piece)
            yield piece


def _post(app, path: str, body: _Body, headers: dict[str, str]) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://guard.test") as c:
            return await c.post(path, content=body.__aiter__(), headers=headers)

    return asyncio.run(go())


# ---- key and size before the body --------------------------------------------------------------------------
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize("key", [None, "not-a-key-0123456789", READ], ids=["no-key", "unknown-key", "read-key"])
def test_an_upload_without_a_write_key_is_refused_before_a_byte_is_read(tmp_path, declared, key):
    app = _app(tmp_path)
    body = _Body(HUGE)
    headers = {**MULTIPART, **({"Content-Length": str(HUGE)} if declared else {}), **({"X-API-Key": key} if key else {})}
    r = _post(app, "/detect", body, headers)
    assert r.status_code == (403 if key == READ else 401), (r.status_code, r.text)
    assert body.yielded <= CHUNK, body.yielded  # in fact none: the answer came from the headers
    assert body.yielded == 0
    assert r.headers["connection"] == "close"  # the server does not drain the rest
    if key != READ:
        assert r.headers["www-authenticate"] == "Bearer"


def test_an_authenticated_upload_with_a_declared_size_over_the_limit_is_a_413_before_a_byte_is_read(tmp_path):
    app = _app(tmp_path)
    body = _Body(HUGE)
    r = _post(app, "/detect", body, {**MULTIPART, "Content-Length": str(HUGE), "X-API-Key": WRITE})
    assert r.status_code == 413, (r.status_code, r.text)
    assert "serve.upload_max_bytes (1048576 bytes)" in r.json()["detail"]
    assert body.yielded == 0 and r.headers["connection"] == "close"


def test_an_authenticated_chunked_upload_is_cut_off_one_chunk_past_the_limit(tmp_path):
    from bigsister_ray.serve.guard import UPLOAD_FRAMING_BYTES

    app = _app(tmp_path)
    limit = 1024 * 1024 + UPLOAD_FRAMING_BYTES
    body = _Body(HUGE, chunk=64 * 1024, head=PART_HEAD)  # well-formed: the parser reads on until the guard stops it
    r = _post(app, "/detect", body, {**MULTIPART, "X-API-Key": WRITE})
    assert r.status_code == 413, (r.status_code, r.text)
    assert "serve.upload_max_bytes" in r.json()["detail"]
    assert limit < body.yielded <= limit + 64 * 1024, body.yielded


def test_control_an_upload_under_the_limit_is_read_whole(tmp_path):
    """Positive control for the counts above: an accepted upload is read to its end (then refused as no video)."""
    total = 256 * 1024
    tail = b"\r\n--guardboundary--\r\n"

    class _Upload(_Body):
        async def __aiter__(self):
            async for piece in _Body.__aiter__(self):
                yield piece
            self.yielded += len(tail)
            yield tail

    body = _Upload(total, head=PART_HEAD)
    r = _post(_app(tmp_path), "/detect", body, {**MULTIPART, "X-API-Key": WRITE})
    assert r.status_code == 400 and "expected" in r.json()["detail"], (r.status_code, r.text)
    assert body.yielded == total + len(tail)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_an_oversized_json_body_to_streams_is_a_413_without_being_read(tmp_path, declared):
    from bigsister_ray.serve.guard import JSON_MAX_BYTES

    app = _app(tmp_path)
    body = _Body(HUGE, head=b'{"url": "cam.mp4", "name": "')
    headers = {"Content-Type": "application/json", "X-API-Key": WRITE,
               **({"Content-Length": str(HUGE)} if declared else {})}
    r = _post(app, "/streams", body, headers)
    assert r.status_code == 413, (r.status_code, r.text)
    assert f"{JSON_MAX_BYTES} bytes" in r.json()["detail"]
    assert body.yielded == 0 if declared else JSON_MAX_BYTES < body.yielded <= JSON_MAX_BYTES + CHUNK
    # unauthenticated, the key is refused first
    body = _Body(HUGE)
    assert _post(app, "/streams", body, {"Content-Type": "application/json"}).status_code == 401
    assert body.yielded == 0


def test_a_bad_content_length_is_a_400(tmp_path):
    body = _Body(10)
    r = _post(_app(tmp_path), "/streams", body, {"X-API-Key": WRITE, "Content-Length": "ten"})
    assert r.status_code == 400 and "Content-Length" in r.json()["detail"]
    assert body.yielded == 0


def test_healthz_and_public_docs_need_no_key_and_small_bodies_pass(tmp_path):
    from fastapi.testclient import TestClient

    with TestClient(_app(tmp_path)) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/openapi.json").status_code == 200
        r = c.post("/streams", json={"url": "cam.mp4", "name": "lobby"}, headers={"X-API-Key": WRITE})
        assert r.status_code == 201, r.text


def test_a_real_server_answers_from_the_headers_and_closes_the_connection(tmp_path):
    """uvicorn on 127.0.0.1: no body byte is sent until the answer arrives, and none is needed."""
    uvicorn = pytest.importorskip("uvicorn")
    server = uvicorn.Server(uvicorn.Config(_app(tmp_path), host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=30, interval=0.01, what="uvicorn to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        for key, status in ((None, 401), (WRITE, 413)):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                auth = f"X-API-Key: {key}\r\n" if key else ""
                sock.sendall((f"POST /detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {HUGE}\r\n{auth}"
                              "Content-Type: multipart/form-data; boundary=guardboundary\r\n\r\n").encode())
                readable, _, _ = select.select([sock], [], [], 10)  # the body is sent only if the server waits
                assert readable, f"no answer within 10 s without the body ({key=})"
                reply = b""
                while chunk := sock.recv(65536):  # to the end: the server closes the connection
                    reply += chunk
                assert reply.startswith(f"HTTP/1.1 {status} ".encode()), reply[:200]
                assert b"connection: close" in reply.lower()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# ---- stream caps and registration rate ---------------------------------------------------------------------
def _register(c, key: str, name: str = "cam"):
    return c.post("/streams", json={"url": "cam.mp4", "name": name}, headers={"X-API-Key": key})


def test_the_deployment_stream_cap_is_a_409_saying_what_to_do(tmp_path):
    from fastapi.testclient import TestClient

    with TestClient(_app(tmp_path, streams={"max_streams": 3})) as c:
        ids = [_register(c, WRITE if i % 2 else OTHER, f"cam {i}").json()["id"] for i in range(3)]
        r = _register(c, WRITE)
        assert r.status_code == 409, r.text
        detail = r.json()["detail"]
        assert "serve.streams.max_streams (3)" in detail and "DELETE /streams/" in detail, detail
        assert c.delete(f"/streams/{ids[0]}", headers={"X-API-Key": WRITE}).status_code == 204
        assert _register(c, WRITE).status_code == 201  # room again
        assert len(c.get("/streams", headers={"X-API-Key": READ}).json()["streams"]) == 3


def test_the_per_key_cap_counts_the_key_that_registered(tmp_path):
    from fastapi.testclient import TestClient

    app = _app(tmp_path, auth={"max_streams_per_key": 2})
    with TestClient(app) as c:
        mine = [_register(c, WRITE, f"w {i}").json()["id"] for i in range(2)]
        r = _register(c, WRITE)
        assert r.status_code == 409, r.text
        detail = r.json()["detail"]
        assert "'w'" in detail and "auth.max_streams_per_key (2)" in detail and "DELETE /streams/" in detail, detail
        assert _register(c, OTHER).status_code == 201  # another key has its own room
        store = app.state.ctx.store
        assert {store.get_stream(i).options["registered_by"] for i in mine} == {"w"}
        assert c.delete(f"/streams/{mine[0]}", headers={"X-API-Key": OTHER}).status_code == 204
        assert _register(c, WRITE).status_code == 201


def test_registrations_per_minute_is_a_429_with_retry_after(tmp_path):
    from fastapi.testclient import TestClient

    now = [1000.0]
    app = _app(tmp_path, auth={"registrations_per_minute": 2})
    app.state.stream_limits.rate.clock = lambda: now[0]
    with TestClient(app) as c:
        assert [_register(c, WRITE).status_code for _ in range(2)] == [201, 201]
        r = _register(c, WRITE)
        assert r.status_code == 429, r.text
        assert r.headers["retry-after"] == "30"  # one registration every 30 s at 2 a minute
        assert "auth.registrations_per_minute" in r.json()["detail"] and "retry after 30 s" in r.json()["detail"]
        assert _register(c, OTHER).status_code == 201  # per key
        now[0] += 29.0
        r = _register(c, WRITE)
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        now[0] += 1.0
        assert _register(c, WRITE).status_code == 201


def test_the_rate_and_caps_are_off_at_zero(tmp_path):
    from bigsister_ray.serve.guard import RegistrationRate

    rate = RegistrationRate(0, clock=lambda: 0.0)
    assert all(rate.take("w") == 0.0 for _ in range(1000))
    assert Settings().auth.max_streams_per_key == 0 and Settings().serve.streams.max_streams == 1000


# ---- the OpenAPI ---------------------------------------------------------------------------------------------
def test_the_openapi_declares_the_key_schemes(tmp_path):
    schema = _app(tmp_path).openapi()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["APIKeyHeader"] == {**schemes["APIKeyHeader"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["HTTPBearer"]["type"] == "http" and schemes["HTTPBearer"]["scheme"] == "bearer"
    post = schema["paths"]["/streams"]["post"]
    assert {"APIKeyHeader": []} in post["security"] and {"HTTPBearer": []} in post["security"]
    assert {"409", "413", "429"} <= set(post["responses"])
    assert schema["paths"]["/healthz"]["get"]["security"] == []
