"""What the Ingress checks before a route runs: the API key and the body size before any body byte, and the
stream registration caps and rate.

FastAPI reads a request's body (a form is spooled to disk, JSON held in memory) before the route's
dependencies run, so :class:`IngressGuard` is a plain ASGI middleware in front of the app:

* **Key, from the headers alone.** The same rule as the :func:`~bigsister_ray.serve.context.authorize`
  dependency (which still runs on every route): ``/healthz`` public, the docs per ``auth.public_docs``, the web
  console (``/ui``) left to its session cookie, ``/slack/actions`` to Slack's request signature, read scope for
  GET/HEAD/OPTIONS, write for the rest. 401/403 without reading the body.
* **Body size.** ``POST /detect`` takes ``serve.upload_max_bytes`` plus the multipart framing
  (:data:`UPLOAD_FRAMING_BYTES`); every other route a JSON body of at most :data:`JSON_MAX_BYTES`. A
  Content-Length above the route's limit is a 413 before any body byte is read; a body without one (chunked)
  is counted as it arrives and refused with a 413 as soon as it passes the limit, so at most the limit plus one
  received chunk is ever read. A refusal sent before the body was read closes the connection
  (``Connection: close``) rather than letting the server drain what the client is still sending.

Registration limits, for ``POST /streams`` (:func:`admit_registration`, :class:`Registration`):

* ``serve.streams.max_streams`` registered streams in the deployment, and ``auth.max_streams_per_key`` per key
  (0: none), counted from the ``registered_by`` option each registration records: 409 beyond, saying which
  cap and what to do. Checked and stored one registration at a time per Ingress replica.
* ``auth.registrations_per_minute`` per key: a token bucket per key name in the Ingress replica holding a
  minute's worth of registrations; 429 with ``Retry-After`` (whole seconds until the next one is accepted).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

from fastapi import Depends, HTTPException, Request
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bigsister_ray.config import Settings
from bigsister_ray.serve.context import ServeContext, authorize, get_ctx

__all__ = [
    "IngressGuard",
    "BodyTooLarge",
    "body_limit",
    "JSON_MAX_BYTES",
    "UPLOAD_FRAMING_BYTES",
    "UPLOAD_PATH",
    "REGISTERED_BY",
    "RegistrationRate",
    "StreamLimits",
    "Registration",
    "admit_registration",
]

#: Largest body of every route but the upload: the JSON bodies the API takes are a few hundred bytes.
JSON_MAX_BYTES = 64 * 1024
#: Multipart framing (boundaries, part headers) allowed on top of ``serve.upload_max_bytes`` for the upload.
UPLOAD_FRAMING_BYTES = 64 * 1024
#: The route that takes a video upload.
UPLOAD_PATH = "/detect"
#: The stream option naming the key that registered it.
REGISTERED_BY = "registered_by"


class BodyTooLarge(Exception):
    """A request body passed its route's limit while it was read; the guard has answered 413 already."""


def body_limit(settings: Settings, path: str) -> int:
    """The most body bytes a request to ``path`` may send."""
    if path == UPLOAD_PATH:
        return settings.serve.upload_max_bytes + UPLOAD_FRAMING_BYTES
    return JSON_MAX_BYTES


def _too_large_detail(settings: Settings, path: str, limit: int) -> str:
    if path == UPLOAD_PATH:
        return f"upload larger than serve.upload_max_bytes ({settings.serve.upload_max_bytes} bytes)"
    return f"request body larger than {limit} bytes: this route takes a small JSON body"


async def _answer(send: Send, status: int, detail: str, headers: dict[str, str] | None = None,
                  close: bool = False) -> None:
    """A JSON ``{"detail": ...}`` response sent straight to the server (nothing is read from the request)."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    if close:
        raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _CountedBody:
    """The request's ``receive`` counting body bytes, and its ``send``: past ``limit`` it answers 413 (unless a
    response has started) and raises :class:`BodyTooLarge` to the app; whatever the app sends after is dropped."""

    def __init__(self, receive: Receive, send: Send, limit: int, detail: str) -> None:
        self._receive, self._send = receive, send
        self.limit, self.detail = limit, detail
        self.received = 0
        self.refused = False
        self._started = False

    async def receive(self) -> Message:
        if self.refused:
            raise BodyTooLarge(self.detail)
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self.refused = True
                if not self._started:
                    await _answer(self._send, 413, self.detail, close=True)
                raise BodyTooLarge(self.detail)
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return  # the 413 is this request's answer
        if message["type"] == "http.response.start":
            self._started = True
        await self._send(message)


class IngressGuard:
    """ASGI middleware: the API key and the body size checked before the app reads the body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)  # headers only: this Request has no way to read the body
        headers = request.headers
        unread = _has_body(headers)
        try:
            authorize(request)
        except HTTPException as err:
            await _answer(send, err.status_code, str(err.detail), err.headers, close=unread)
            return
        ctx: ServeContext = request.app.state.ctx
        path = request.url.path
        limit = body_limit(ctx.settings, path)
        detail = _too_large_detail(ctx.settings, path, limit)
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _answer(send, 400, f"invalid Content-Length {declared[:40]!r}: expected a byte count", close=True)
                return
            if int(declared) > limit:
                await _answer(send, 413, detail, close=True)
                return
        counted = _CountedBody(receive, send, limit, detail)
        try:
            await self.app(scope, counted.receive, counted.send)
        except BodyTooLarge:
            if not counted.refused:
                raise


def _has_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    return "transfer-encoding" in headers or (length is not None and length.strip() not in ("", "0"))


# ---- stream registrations -----------------------------------------------------------------------------------
class RegistrationRate:
    """A token bucket per key name: ``per_minute`` tokens at most, refilled at ``per_minute / 60`` a second.

    ``clock`` gives monotonic seconds (tests pass their own). Buckets are kept per configured key name, so
    their number is bounded by the keys.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, at)

    def take(self, name: str) -> float:
        """Take one token for ``name``: 0.0 when it had one, else the seconds until it will (nothing taken)."""
        if self.per_minute <= 0:
            return 0.0
        now = self.clock()
        rate = self.per_minute / 60.0
        tokens, at = self._buckets.get(name, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - at) * rate)
        if tokens >= 1.0:
            self._buckets[name] = (tokens - 1.0, now)
            return 0.0
        self._buckets[name] = (tokens, now)
        return (1.0 - tokens) / rate


class StreamLimits:
    """The registration rate per key and the lock that makes check-then-store one step in this replica."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.rate = RegistrationRate(settings.auth.registrations_per_minute, clock)
        self.lock = asyncio.Lock()

    def check_caps(self, streams: list[Any], owner: str) -> None:
        """409 when ``streams`` (the registered ones) leave no room for one more, in total or for ``owner``."""
        cap = self.settings.serve.streams.max_streams
        if len(streams) >= cap:
            raise HTTPException(status_code=409, detail=(
                f"{len(streams)} streams are registered, the most serve.streams.max_streams ({cap}) allows: "
                "delete one (DELETE /streams/{id}) or raise serve.streams.max_streams"))
        per_key = self.settings.auth.max_streams_per_key
        if per_key > 0:
            mine = sum(1 for s in streams if (s.options or {}).get(REGISTERED_BY) == owner)
            if mine >= per_key:
                raise HTTPException(status_code=409, detail=(
                    f"key {owner!r} has {mine} streams registered, the most auth.max_streams_per_key ({per_key}) "
                    "allows: delete one of them (DELETE /streams/{id}) or ask for a higher auth.max_streams_per_key"))


def stream_limits(app: Any) -> StreamLimits:
    """The app's :class:`StreamLimits` (made by :func:`~bigsister_ray.serve.api.create_api`)."""
    return app.state.stream_limits


@dataclass
class Registration:
    """An admitted ``POST /streams``: the registering key's name and the limits to store it under."""

    owner: str
    limits: StreamLimits

    async def store(self, ctx: ServeContext, create: Any) -> Any:
        """Store ``create`` (a ``StreamCreate`` whose options record :data:`REGISTERED_BY`) if the caps allow."""
        async with self.limits.lock:
            streams = await asyncio.to_thread(ctx.store.list_streams)
            self.limits.check_caps(streams, self.owner)
            return await asyncio.to_thread(ctx.store.add_stream, create)


async def admit_registration(request: Request, principal: Any = Depends(authorize),
                             ctx: ServeContext = Depends(get_ctx)) -> Registration:
    """Dependency of ``POST /streams``: 429 with Retry-After when the key used up its registrations per minute."""
    owner = principal.name if principal is not None else "anonymous"
    limits = stream_limits(request.app)
    wait = limits.rate.take(owner)
    if wait > 0:
        per_minute = ctx.settings.auth.registrations_per_minute
        seconds = max(1, math.ceil(wait))
        raise HTTPException(status_code=429, headers={"Retry-After": str(seconds)}, detail=(
            f"key {owner!r} used up its registrations for now (auth.registrations_per_minute: {per_minute}): "
            f"retry after {seconds} s"))
    return Registration(owner=owner, limits=limits)
