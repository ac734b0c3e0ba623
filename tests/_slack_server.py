"""A small, real HTTP server on 127.0.0.1 that speaks the Slack Web API methods the notifiers call.

Methods: ``auth.test``, ``chat.postMessage`` (with message metadata), ``chat.update`` (edits the message in
``messages``, kept in ``updates``), ``conversations.list``, ``conversations.history``, ``conversations.replies``,
``files.getUploadURLExternal``, the upload URL it hands out, ``files.completeUploadExternal`` (what files_upload_v2
calls; ``completed`` has each upload's channel, thread and bytes); plus ``/webhook`` (an incoming webhook). Every
Web API call this server's client made is in ``calls`` as ``(method, params)``. Scriptable failures, consumed one
request at a time: ``fail_next(n, status=429, retry_after=1)``, ``fail_next(n, status=500)``,
``fail_next(n, drop=True)`` (close the connection without an answer), ``fail_next(n, drop_after=True)`` (do the
work, then close the connection: the response is lost), ``fail_next(n, error="invalid_auth")``;
``stop()`` / ``start()`` take the whole server away and bring it back on the same port.

Each server has its own token. A Web API request with any other token is answered ``invalid_auth`` and is not
counted: it neither takes a scripted failure nor shows in ``requests`` (a client left over from an earlier test,
still retrying against a port the OS has since given to this server, must not change what this test sees).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

__all__ = ["FakeSlack", "Failure"]


@dataclass
class Failure:
    status: int = 200
    error: str | None = None
    retry_after: float | None = None
    drop: bool = False
    drop_after: bool = False  # do the work, then close the connection without an answer (a lost response)
    methods: tuple[str, ...] | None = None  # None: any method


@dataclass
class FakeSlack:
    token: str = field(default_factory=lambda: f"xoxb-test-{uuid.uuid4().hex[:12]}-SECRET")
    channels: dict[str, str] = field(default_factory=lambda: {"C0INCIDENT": "incidents"})
    host: str = "127.0.0.1"
    port: int = 0

    def __post_init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.uploads: dict[str, dict[str, Any]] = {}
        self.completed: list[dict[str, Any]] = []
        self.webhook_posts: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.requests: list[tuple[str, int]] = []  # (path, status answered; 0 for a drop)
        self.history_calls = 0
        self._failures: list[Failure] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ts = time.time()  # real epoch seconds, like Slack

    # ---- control -------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/api/"

    @property
    def webhook_url(self) -> str:
        return f"http://{self.host}:{self.port}/webhook/T000/B000/{self.token[-6:]}"

    def start(self) -> "FakeSlack":
        handler = self._handler_class()
        server = ThreadingHTTPServer((self.host, self.port), handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def fail_next(self, n: int = 1, *, status: int = 200, error: str | None = None, retry_after: float | None = None,
                  drop: bool = False, drop_after: bool = False, methods: tuple[str, ...] | None = None) -> None:
        with self._lock:
            self._failures.extend(Failure(status, error, retry_after, drop, drop_after, methods) for _ in range(n))

    def pending_failures(self) -> int:
        with self._lock:
            return len(self._failures)

    def top_level_messages(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if not m.get("thread_ts")]

    def replies(self, ts: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("thread_ts") == ts]

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        """The message ``ts`` in ``channel`` as it reads now (after any chat.update)."""
        return next((m for m in self.messages if m["channel"] == channel and m["ts"] == ts), None)

    def files_in_thread(self, ts: str) -> list[dict[str, Any]]:
        """The files uploaded into the thread of ``ts``: ``{"id", "filename", "title", "data"}`` each."""
        out = []
        for done in self.completed:
            if done["thread_ts"] == ts:
                for f in done["files"]:
                    up = self.uploads.get(f["id"], {})
                    out.append({"id": f["id"], "title": f.get("title"), "filename": up.get("filename"), "data": up.get("data")})
        return out

    # ---- internals -----------------------------------------------------------------------------
    def _take_failure(self, method: str) -> Failure | None:
        with self._lock:
            for i, f in enumerate(self._failures):
                if f.methods is None or method in f.methods:
                    return self._failures.pop(i)
        return None

    def _next_ts(self) -> str:
        with self._lock:
            self._ts += 1.0
            return f"{self._ts:.6f}"

    def _resolve_channel(self, name: str | None) -> str | None:
        if not name:
            return None
        if name in self.channels:
            return name
        bare = name.lstrip("#")
        for cid, cname in self.channels.items():
            if cname == bare:
                return cid
        return None

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):  # keep test output quiet
                return

            drop_response = False

            def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None,
                      record: bool = True) -> None:
                if self.drop_response and record:
                    fake.requests.append((self.path, 0))
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)
                if record:
                    fake.requests.append((self.path, status))

            def _params(self, raw: bytes) -> dict[str, Any]:
                ctype = self.headers.get("Content-Type", "")
                if "application/json" in ctype:
                    return json.loads(raw.decode() or "{}")
                return {k: v[0] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0") or 0)
                raw = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                method = path.rsplit("/", 1)[-1] if path.startswith("/api/") else path.split("/")[1]
                auth = self.headers.get("Authorization", "")
                if path.startswith("/api/") and auth and auth != f"Bearer {fake.token}":
                    self._json(200, {"ok": False, "error": "invalid_auth"}, record=False)  # not this server's client
                    return
                failure = fake._take_failure(method)
                if failure is not None and failure.drop_after:
                    self.drop_response = True
                    failure = None
                if failure is not None:
                    if failure.drop:
                        fake.requests.append((self.path, 0))
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    if failure.status != 200:
                        headers = {"Retry-After": str(int(failure.retry_after))} if failure.retry_after is not None else {}
                        if failure.status == 429:
                            self._json(429, {"ok": False, "error": "ratelimited"}, headers)
                        else:
                            body = b"upstream failure"
                            self.send_response(failure.status)
                            self.send_header("Content-Type", "text/plain")
                            self.send_header("Content-Length", str(len(body)))
                            self.end_headers()
                            self.wfile.write(body)
                            fake.requests.append((self.path, failure.status))
                        return
                    if failure.error:
                        self._json(200, {"ok": False, "error": failure.error})
                        return
                if path.startswith("/upload/"):
                    file_id = path.rsplit("/", 1)[-1]
                    if file_id not in fake.uploads:
                        self._json(404, {"ok": False, "error": "unknown upload"})
                        return
                    fake.uploads[file_id]["data"] = raw
                    body = f"OK - {len(raw)}".encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    fake.requests.append((self.path, 200))
                    return
                if path.startswith("/webhook/"):
                    fake.webhook_posts.append(json.loads(raw.decode() or "{}"))
                    body = b"ok"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    fake.requests.append((self.path, 200))
                    return
                if not path.startswith("/api/"):
                    self._json(404, {"ok": False, "error": "unknown_method"})
                    return
                auth = self.headers.get("Authorization", "")
                if auth != f"Bearer {fake.token}":
                    self._json(200, {"ok": False, "error": "invalid_auth" if auth else "not_authed"})
                    return
                params = self._params(raw)
                fake.calls.append((method, params))
                if method == "auth.test":
                    self._json(200, {"ok": True, "user_id": "U0BOT", "team_id": "T000", "bot_id": "B0BOT"})
                elif method == "chat.postMessage":
                    channel = fake._resolve_channel(params.get("channel"))
                    if channel is None:
                        self._json(200, {"ok": False, "error": "channel_not_found"})
                        return
                    if not params.get("text") and not params.get("blocks"):
                        self._json(200, {"ok": False, "error": "no_text"})
                        return
                    ts = fake._next_ts()
                    blocks = params.get("blocks")
                    if isinstance(blocks, str):
                        blocks = json.loads(blocks)
                    metadata = params.get("metadata")
                    if isinstance(metadata, str):
                        metadata = json.loads(metadata)
                    msg = {"channel": channel, "ts": ts, "text": params.get("text"), "blocks": blocks,
                           "thread_ts": params.get("thread_ts"), "metadata": metadata, "received_at": time.time()}
                    fake.messages.append(msg)
                    self._json(200, {"ok": True, "channel": channel, "ts": ts, "message": {"text": msg["text"]}})
                elif method == "chat.update":
                    channel = fake._resolve_channel(params.get("channel"))
                    msg = fake.message(channel, params.get("ts")) if channel else None
                    if msg is None:
                        self._json(200, {"ok": False, "error": "message_not_found" if channel else "channel_not_found"})
                        return
                    blocks = params.get("blocks")
                    if isinstance(blocks, str):
                        blocks = json.loads(blocks)
                    msg.update(text=params.get("text", msg["text"]), blocks=blocks if blocks is not None else msg["blocks"])
                    fake.updates.append({"channel": channel, "ts": msg["ts"], "text": msg["text"], "blocks": msg["blocks"],
                                         "received_at": time.time()})
                    self._json(200, {"ok": True, "channel": channel, "ts": msg["ts"], "text": msg["text"]})
                elif method == "conversations.list":
                    self._json(200, {"ok": True, "channels": [{"id": cid, "name": name} for cid, name in fake.channels.items()],
                                     "response_metadata": {"next_cursor": ""}})
                elif method in ("conversations.history", "conversations.replies"):
                    channel = fake._resolve_channel(params.get("channel"))
                    if channel is None or channel != params.get("channel"):
                        self._json(200, {"ok": False, "error": "channel_not_found"})  # the real API wants the id
                        return
                    with_meta = str(params.get("include_all_metadata", "")).lower() in ("1", "true")
                    if method == "conversations.history":
                        oldest = float(params.get("oldest") or 0)
                        found = [m for m in fake.messages if m["channel"] == channel and not m["thread_ts"] and float(m["ts"]) >= oldest]
                        found.reverse()  # newest first
                    else:
                        ts = params.get("ts")
                        found = [m for m in fake.messages if m["channel"] == channel and (m["ts"] == ts or m["thread_ts"] == ts)]
                    out = [{"type": "message", "ts": m["ts"], "text": m["text"], "thread_ts": m["thread_ts"],
                            **({"metadata": m["metadata"]} if with_meta and m["metadata"] else {})} for m in found]
                    fake.history_calls += 1
                    self._json(200, {"ok": True, "messages": out, "has_more": False})
                elif method == "files.getUploadURLExternal":
                    file_id = "F" + uuid.uuid4().hex[:10].upper()
                    fake.uploads[file_id] = {"filename": params.get("filename"), "length": int(params.get("length", 0)), "data": None}
                    self._json(200, {"ok": True, "file_id": file_id,
                                     "upload_url": f"http://{fake.host}:{fake.port}/upload/{file_id}"})
                elif method == "files.completeUploadExternal":
                    files = params.get("files")
                    if isinstance(files, str):
                        files = json.loads(files)
                    channel = fake._resolve_channel(params.get("channel_id"))
                    if params.get("channel_id") and channel is None:
                        self._json(200, {"ok": False, "error": "channel_not_found"})
                        return
                    unknown = [f["id"] for f in files if f["id"] not in fake.uploads or fake.uploads[f["id"]]["data"] is None]
                    if unknown:
                        self._json(200, {"ok": False, "error": "file_not_found"})
                        return
                    fake.completed.append({"files": files, "channel_id": channel, "thread_ts": params.get("thread_ts")})
                    self._json(200, {"ok": True, "files": [{"id": f["id"], "title": f.get("title")} for f in files]})
                else:
                    self._json(200, {"ok": False, "error": "unknown_method"})

        return Handler
