"""``/streams``: register, list, inspect and remove camera streams.

A registration is stored in the database first (so it survives a restart), then the Decoder starts decoding
it. An unreachable camera is still registered (201): its status shows ``reconnecting`` with a growing backoff.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Depends, HTTPException, Response

from bigsister_ray.errors import StreamError
from bigsister_ray.serve.context import ServeContext, get_ctx
from bigsister_ray.serve.schemas import StreamList, StreamOut, StreamRegister, StreamStatusOut

__all__ = ["router", "stream_out"]

log = logging.getLogger("ray.serve")

router = APIRouter(prefix="/streams", tags=["streams"])


def stream_out(rec, status: dict | None) -> StreamOut:
    """A stored stream plus its live status (``stopped`` when no runner has it)."""
    if status is None:
        status = {"state": "stopped", "last_error": rec.last_error or "not running in the Decoder"}
    return StreamOut(
        id=rec.id,
        name=rec.name,
        url=rec.url,  # the store's public schema is already redacted
        location=rec.location,
        realtime=bool((rec.options or {}).get("realtime", True)),
        created_at=rec.created_at,
        status=StreamStatusOut(**status),
    )


def _validate_url(ctx: ServeContext, url: str) -> None:
    from bigsister_ray.security.urls import check_stream_url
    from bigsister_ray.video.sources import redact_url, resolve_source

    settings = ctx.settings
    try:
        resolve_source(url, settings.serve.streams.media_root)
        check_stream_url(url, settings.auth, settings.serve.port, redacted=redact_url(url))
    except StreamError as err:
        raise HTTPException(status_code=400, detail=str(err)) from err


@router.post("", status_code=201, response_model=StreamOut)
async def register_stream(body: StreamRegister, ctx: ServeContext = Depends(get_ctx)) -> StreamOut:
    """Register a stream and start watching it. 400 when the URL is refused (scheme, host policy, media root)."""
    from bigsister_ray.incidents.models import StreamCreate

    await asyncio.to_thread(_validate_url, ctx, body.url)
    rec = await asyncio.to_thread(
        ctx.store.add_stream,
        StreamCreate(name=body.name, url=body.url, location=body.location, options={"realtime": body.realtime}),
    )
    try:
        status = await ctx.decoder.start_stream.remote(rec.id, body.url, body.realtime)
    except Exception as err:  # the registration is undone so that a restart does not resume a stream that never ran
        await asyncio.to_thread(ctx.store.delete_stream, rec.id)
        log.error("stream %s (%s) stored but not started; registration removed: %s", rec.id, rec.url, err)
        raise HTTPException(status_code=502, detail=f"the Decoder could not start stream {rec.url}: "
                                                    f"{type(err).__name__}: {str(err)[-300:]}") from err
    return stream_out(rec, status)


@router.get("", response_model=StreamList)
async def list_streams(ctx: ServeContext = Depends(get_ctx)) -> StreamList:
    """Every registered stream with its status."""
    recs = await asyncio.to_thread(ctx.store.list_streams)
    statuses = await ctx.decoder.statuses.remote()
    return StreamList(streams=[stream_out(r, statuses.get(r.id)) for r in recs])


@router.get("/{stream_id}", response_model=StreamOut)
async def get_stream(stream_id: str, ctx: ServeContext = Depends(get_ctx)) -> StreamOut:
    rec = await asyncio.to_thread(ctx.store.get_stream, stream_id)
    if rec is None:
        raise HTTPException(status_code=404, detail=f"no stream {stream_id!r} (list them with GET /streams)")
    return stream_out(rec, await ctx.decoder.status.remote(stream_id))


@router.delete("/{stream_id}", status_code=204)
async def delete_stream(stream_id: str, ctx: ServeContext = Depends(get_ctx)) -> Response:
    """Stop decoding, drop buffered frames, close open incidents, and mark the registration deleted."""
    deleted = await asyncio.to_thread(ctx.store.delete_stream, stream_id)
    if not deleted:
        raise HTTPException(status_code=404, detail=f"no stream {stream_id!r} (list them with GET /streams)")
    await ctx.decoder.stop_stream.remote(stream_id)
    await ctx.windower.forget.remote(stream_id)
    await ctx.alert_manager.flush.remote(stream_id)
    return Response(status_code=204)
