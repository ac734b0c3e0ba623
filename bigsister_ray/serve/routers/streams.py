"""``/streams``: register, list, inspect and remove camera streams; ``/shards``: who watches what.

A registration is stored in the database first (so it survives a restart); a StreamShard with room claims its
lease within one lease round (the Ingress asks one to run a round at once) and starts decoding it. An
unreachable camera is still registered (201): its status shows ``reconnecting`` with a growing backoff.
Status comes from what each stream's owner saves with its lease every round (at most ``lease_ttl_s / 3`` old).
``PATCH /streams/{id}`` changes the name, location, pace, whether it runs, and the camera's own alert rules; its
shard applies them from its next lease round (a disabled stream is stopped at its owner's next renewal).
``GET /streams/{id}/frame`` is the camera's newest frame as its shard last saved it (``serve.streams.latest_frame``).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Response
from fastapi.responses import FileResponse

from bigsister_ray.errors import ConfigError, StreamError
from bigsister_ray.serve.context import ServeContext, get_ctx
from bigsister_ray.serve.evidence import latest_frame_relpath
from bigsister_ray.serve.guard import REGISTERED_BY, Registration, admit_registration
from bigsister_ray.incidents.models import utcnow
from bigsister_ray.serve.schemas import (
    ShardList,
    ShardOut,
    StreamList,
    StreamOut,
    StreamOwner,
    StreamPatch,
    StreamRegister,
    StreamStatusOut,
)

__all__ = ["router", "shards_router", "stream_out", "latest_frame_file"]

log = logging.getLogger("ray.serve")

router = APIRouter(prefix="/streams", tags=["streams"])
shards_router = APIRouter(prefix="/shards", tags=["streams"])


def stream_out(rec, lease: Any | None, now: datetime | None = None) -> StreamOut:
    """A stored stream plus the status its owner saved (``connecting`` while no live shard holds it)."""
    now = now or utcnow()
    enabled = bool(getattr(rec, "enabled", True))
    held = lease is not None and lease.owner is not None and lease.expires_at is not None and lease.expires_at >= now
    status = (lease.status if held else None) or {}
    if not enabled and not held:
        status = {"state": "stopped", "last_error": "disabled: PATCH /streams/{id} with enabled: true runs it again"}
    elif not held:
        status = {"state": "connecting", "last_error": rec.last_error or "waiting for a stream shard to take it"}
    elif not status:
        status = {"state": "connecting"}
    if held and lease.finished:
        status = {**status, "state": "stopped", "finished": True}
    owner = StreamOwner(shard_id=lease.owner, node_id=lease.node_id, token=lease.token, expires_at=lease.expires_at) if held else None
    return StreamOut(
        id=rec.id,
        name=rec.name,
        url=rec.url,  # the store's public schema is already redacted
        location=rec.location,
        realtime=bool((rec.options or {}).get("realtime", True)),
        enabled=enabled,
        rules=_stored_rules(rec),
        created_at=rec.created_at,
        status=StreamStatusOut(**status),
        owner=owner,
    )


def _stored_rules(rec) -> dict[str, Any]:
    from bigsister_ray.alerts.rules import overrides_from_options

    try:
        return overrides_from_options(rec.options, where=f"stream {rec.id} options")
    except ConfigError as err:  # stored before the rules were validated: shown empty, reported
        log.warning("%s", err)
        return {}


def _validate_url(ctx: ServeContext, url: str) -> None:
    from bigsister_ray.security.urls import check_stream_url
    from bigsister_ray.video.sources import redact_url, resolve_source

    settings = ctx.settings
    try:
        resolve_source(url, settings.serve.streams.media_root)
        check_stream_url(url, settings.auth, settings.serve.port, redacted=redact_url(url))
    except StreamError as err:
        raise HTTPException(status_code=400, detail=str(err)) from err


async def _poke(ctx: ServeContext) -> None:
    """Ask a shard for a lease round now (a new stream is claimed at once instead of at the next round)."""
    try:
        await asyncio.wait_for(ctx.shards.poke.remote(), timeout=5.0)
    except Exception as err:  # the next scheduled round claims it anyway
        log.warning("no stream shard answered a lease round request: %r", err)


@router.post("", status_code=201, response_model=StreamOut, responses={
    409: {"description": "serve.streams.max_streams or auth.max_streams_per_key reached: delete a stream first"},
    413: {"description": "request body larger than a small JSON body"},
    429: {"description": "auth.registrations_per_minute used up for this key; retry after the Retry-After seconds"}})
async def register_stream(body: StreamRegister, ctx: ServeContext = Depends(get_ctx),
                          registration: Registration = Depends(admit_registration)) -> StreamOut:
    """Register a stream; a shard with room starts watching it. 400 when the URL is refused (scheme, host policy,
    media root); 409 when the deployment's or the key's stream cap is reached; 429 (Retry-After) when the key
    registers faster than ``auth.registrations_per_minute``. The registering key's name is kept with the stream."""
    from bigsister_ray.incidents.models import StreamCreate

    await asyncio.to_thread(_validate_url, ctx, body.url)
    rec = await registration.store(ctx, StreamCreate(
        name=body.name, url=body.url, location=body.location,
        options={"realtime": body.realtime, REGISTERED_BY: registration.owner}))
    await _poke(ctx)
    return stream_out(rec, await asyncio.to_thread(ctx.leases.lease, rec.id))


@router.get("", response_model=StreamList)
async def list_streams(ctx: ServeContext = Depends(get_ctx)) -> StreamList:
    """Every registered stream with its status and owner."""
    recs = await asyncio.to_thread(ctx.store.list_streams)
    leases = {lease.stream_id: lease for lease in await asyncio.to_thread(ctx.leases.leases)}
    now = utcnow()
    return StreamList(streams=[stream_out(r, leases.get(r.id), now) for r in recs])


@router.get("/{stream_id}", response_model=StreamOut)
async def get_stream(stream_id: str, ctx: ServeContext = Depends(get_ctx)) -> StreamOut:
    rec = await asyncio.to_thread(ctx.store.get_stream, stream_id)
    if rec is None:
        raise HTTPException(status_code=404, detail=f"no stream {stream_id!r} (list them with GET /streams)")
    return stream_out(rec, await asyncio.to_thread(ctx.leases.lease, stream_id))


def latest_frame_file(store: Any, media_dir: Path, stream_id: str) -> Path:
    """The stream's newest-frame JPEG; HTTPException 404 for an unknown stream or one without a frame yet."""
    if store.get_stream(stream_id) is None:
        raise HTTPException(status_code=404, detail=f"no stream {stream_id!r} (list them with GET /streams)")
    path = Path(media_dir).resolve() / latest_frame_relpath(stream_id)
    if not path.is_file():
        raise HTTPException(status_code=404, detail=f"stream {stream_id!r} has no frame yet: its shard saves one each "
                            "lease round once frames arrive (see its status; serve.streams.latest_frame turns this on)")
    return path


@router.get("/{stream_id}/frame", response_class=FileResponse, responses={
    200: {"content": {"image/jpeg": {}}, "description": "The newest frame; Last-Modified says when it was saved."},
    404: {"description": "no such stream, or no frame of it yet"}})
async def get_stream_frame(stream_id: str, ctx: ServeContext = Depends(get_ctx)) -> FileResponse:
    """The camera's newest frame as a JPEG, as the model sees it (scaled to the clip size), saved by the stream's
    shard every lease round while frames arrive; a stopped camera keeps its last one."""
    path = await asyncio.to_thread(latest_frame_file, ctx.store, ctx.settings.incidents.media_dir, stream_id)
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, no-cache"})


@router.patch("/{stream_id}", response_model=StreamOut, responses={
    404: {"description": "no such stream"},
    422: {"description": "a field has a bad value (the message names it), or a rule names an unknown class"}})
async def patch_stream(stream_id: str, body: StreamPatch, ctx: ServeContext = Depends(get_ctx)) -> StreamOut:
    """Change a stream: name, location, realtime, enabled, and its alert rules per class (``rules`` replaces them;
    ``{}`` returns to the deployment's rules). The stream's shard applies the change from its next lease round
    (at most ``lease_ttl_s / 3`` later); a disabled stream is stopped then, its open incidents are ended, and no
    shard takes it until it is enabled again."""
    from bigsister_ray.alerts.rules import overrides_from_options
    from bigsister_ray.incidents.models import StreamUpdate

    rec = await asyncio.to_thread(ctx.store.get_stream, stream_id)
    if rec is None:
        raise HTTPException(status_code=404, detail=f"no stream {stream_id!r} (list them with GET /streams)")
    given = body.model_dump(exclude_unset=True)
    for key in ("name", "enabled"):
        if key in given and given[key] is None:
            raise HTTPException(status_code=422, detail=f"{key}: expected a value, got null")
    changes: dict[str, Any] = {k: given[k] for k in ("name", "location", "enabled") if k in given}
    options = dict(rec.options or {})
    if given.get("realtime") is not None:
        options["realtime"] = bool(given["realtime"])
    if body.rules is not None:
        rules = {label: rule.model_dump(mode="json", exclude_unset=True) for label, rule in body.rules.items()}
        try:
            overrides_from_options({"alerts": rules}, where="rules")
        except ConfigError as err:
            raise HTTPException(status_code=422, detail=str(err)) from err
        if rules:
            options["alerts"] = rules
        else:
            options.pop("alerts", None)
    if options != (rec.options or {}):
        changes["options"] = options
    updated = await asyncio.to_thread(ctx.store.update_stream, stream_id, StreamUpdate(**changes))
    if updated is None:
        raise HTTPException(status_code=404, detail=f"no stream {stream_id!r} (deleted meanwhile)")
    if changes.get("enabled") is False:
        await asyncio.to_thread(ctx.store.end_dangling, stream_id=stream_id)
    if "enabled" in changes:
        await _poke(ctx)
    return stream_out(updated, await asyncio.to_thread(ctx.leases.lease, stream_id))


@router.delete("/{stream_id}", status_code=204)
async def delete_stream(stream_id: str, ctx: ServeContext = Depends(get_ctx)) -> Response:
    """Mark the registration deleted and free its lease at once (its shard stops it on its next lease round, at
    most ``lease_ttl_s / 3`` later), and end its open incidents (their close replies are queued)."""
    deleted = await asyncio.to_thread(ctx.store.delete_stream, stream_id)
    if not deleted:
        raise HTTPException(status_code=404, detail=f"no stream {stream_id!r} (list them with GET /streams)")
    await asyncio.to_thread(ctx.store.end_dangling, stream_id=stream_id)
    await _poke(ctx)
    frame = Path(ctx.settings.incidents.media_dir).resolve() / latest_frame_relpath(stream_id)
    await asyncio.to_thread(frame.unlink, missing_ok=True)
    return Response(status_code=204)


@shards_router.get("", response_model=ShardList)
async def list_shards(ctx: ServeContext = Depends(get_ctx)) -> ShardList:
    """The live shards (heartbeat within a lease TTL): node, capacity, load, and the streams each holds."""
    ttl = ctx.settings.serve.shards.lease_ttl_s
    now = utcnow()
    shards = await asyncio.to_thread(ctx.leases.live_shards, ttl, now=now)
    leases = await asyncio.to_thread(ctx.leases.leases)
    recs = await asyncio.to_thread(ctx.store.list_streams)
    held: dict[str, list[str]] = {}
    for lease in leases:
        if lease.owner is not None and lease.expires_at is not None and lease.expires_at >= now:
            held.setdefault(lease.owner, []).append(lease.stream_id)
    owned = {sid for sids in held.values() for sid in sids}
    return ShardList(
        shards=[ShardOut(shard_id=sh.shard_id, node_id=sh.node_id, capacity=sh.capacity, load=sh.load,
                         heartbeat_at=sh.heartbeat_at, started_at=getattr(sh, "started_at", None),
                         streams=sorted(held.get(sh.shard_id, []))) for sh in shards],
        streams=len(recs),
        unowned=sorted(r.id for r in recs if r.id not in owned),
    )
