"""``POST /detect``: classify an uploaded video; per-window probabilities and detected events.

The upload is written to a temporary file (at most ``serve.upload_max_bytes``, else 413); longer than
``serve.upload_max_seconds``, frames larger than ``serve.upload_max_pixels``, undecodable, or still decoding
after ``serve.upload_decode_timeout_s``: 400 with the reason. Otherwise it is decoded and
windowed exactly like ``bigsister detect`` (:mod:`bigsister_ray.serve.detect`), and its windows are scored by
the Classifier deployment, batched together with the live streams' windows.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Depends, File, HTTPException, Request, UploadFile

from bigsister_ray.errors import VideoDecodeError
from bigsister_ray.serve.context import ServeContext, get_ctx
from bigsister_ray.serve.schemas import DetectResponse

__all__ = ["router", "save_upload"]

router = APIRouter(tags=["detect"])

#: Multipart framing allowance on top of the file itself when checking Content-Length.
_MULTIPART_SLACK = 64 * 1024
_COPY_CHUNK = 1024 * 1024


def _too_large(limit: int) -> HTTPException:
    return HTTPException(status_code=413, detail=f"upload larger than serve.upload_max_bytes ({limit} bytes)")


async def save_upload(file: UploadFile, limit: int) -> Path:
    """Copy ``file`` to a temporary file, refusing it (413) as soon as it passes ``limit`` bytes."""
    suffix = Path(file.filename or "upload").suffix[:16]
    fd, name = tempfile.mkstemp(prefix="bigsister-detect-", suffix=suffix)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := await file.read(_COPY_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                out.write(chunk)
    except BaseException:
        os.unlink(name)
        raise
    if size == 0:
        os.unlink(name)
        raise HTTPException(status_code=400, detail="the uploaded file is empty: expected a video (mp4, avi, mkv, ts, ...)")
    return Path(name)


@router.post("/detect", response_model=DetectResponse, responses={
    400: {"description": "not a decodable video, too long, frames too large, or decoding took too long"},
    413: {"description": "upload too large"}})
async def detect(request: Request, file: UploadFile = File(..., description="A video file."),
                 ctx: ServeContext = Depends(get_ctx)) -> dict:
    """Per-window probabilities and the events the alert rules find in an uploaded video."""
    from bigsister_ray.clip import ClipSpec
    from bigsister_ray.serve.detect import detection_result, iter_window_batches, scores_dict

    limit = ctx.settings.serve.upload_max_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit + _MULTIPART_SLACK:
        raise _too_large(limit)
    path = await save_upload(file, limit)
    sv = ctx.settings.serve
    name = file.filename or "upload"
    batches = None
    decoding = False
    try:
        info = await ctx.classifier_info()
        spec = ClipSpec(**info["clip"])
        labels = info["labels"]
        batches = iter_window_batches(path, spec, int(info.get("max_batch_size", 16)),
                                      max_seconds=sv.upload_max_seconds, max_pixels=sv.upload_max_pixels)
        deadline = time.monotonic() + sv.upload_decode_timeout_s
        rows = []
        sentinel = object()
        while True:
            try:
                decoding = True
                batch = await asyncio.wait_for(asyncio.to_thread(next, batches, sentinel),
                                               timeout=max(0.0, deadline - time.monotonic()))
                decoding = False
            except VideoDecodeError as err:
                decoding = False
                raise HTTPException(status_code=400, detail=f"{name}: {str(err).split(': ', 1)[-1]}") from err
            except asyncio.TimeoutError as err:
                raise HTTPException(status_code=400, detail=f"{name}: decoding took longer than "
                                    f"serve.upload_decode_timeout_s ({sv.upload_decode_timeout_s:g} s); send a shorter or smaller video") from err
            if batch is sentinel:
                break
            probs = await ctx.classifier.classify_many.remote(np.stack([w.frames for w in batch]))
            rows.extend((w.start_s, w.end_s, scores_dict(labels, np.asarray(p))) for w, p in zip(batch, probs))
        return detection_result(rows, labels, ctx.settings.alerts, info.get("thresholds") or {})
    finally:
        # Unlink first, with no await before it: a cancelled request (client gone) can be cancelled again while
        # this block awaits, and the file must not outlive the request. The open reader keeps its data until closed.
        path.unlink(missing_ok=True)
        # A timed-out decode still runs on its thread: the generator cannot be closed under it; it ends with it.
        if batches is not None and not decoding:
            await asyncio.to_thread(batches.close)
