"""``POST /detect``: classify an uploaded video; per-window probabilities and detected events.

The upload is written to a temporary file (at most ``serve.upload_max_bytes``, else 413). Its container is
decided from its first bytes (:mod:`bigsister_ray.video.sniff`: MP4/MOV, Matroska/WebM, AVI or MPEG-TS; the
client's file name is never used), anything else is a 400 naming the accepted formats, and the file is kept
under the sniffed format's suffix. Longer than ``serve.upload_max_seconds``, frames larger than
``serve.upload_max_pixels``, undecodable, or still decoding after ``serve.upload_decode_timeout_s``: 400 with
the reason. Otherwise it is decoded (that demuxer forced, local file protocol only, on a thread of its own that
the deadline stops: :class:`bigsister_ray.serve.detect.UploadDecode`) and windowed exactly like
``bigsister detect`` (:mod:`bigsister_ray.serve.detect`), and its windows are scored by the Classifier
deployment, batched together with the live streams' windows.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

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


async def save_upload(file: UploadFile, limit: int) -> tuple[Path, Any]:
    """Copy ``file`` to a temporary file, refusing it (413) as soon as it passes ``limit`` bytes.

    Returns the file and its :class:`~bigsister_ray.video.sniff.ContainerFormat`, sniffed from the first bytes
    (400 naming the accepted formats for anything else); the file's suffix is the sniffed format's.
    """
    from bigsister_ray.video.sniff import SNIFF_BYTES, accepted_formats, sniff

    shown = file.filename or "upload"
    fd, name = tempfile.mkstemp(prefix="bigsister-detect-", suffix=".part")
    size, head, fmt = 0, b"", None
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := await file.read(_COPY_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                if fmt is None and len(head) < SNIFF_BYTES:
                    head += chunk[: SNIFF_BYTES - len(head)]
                    if len(head) >= SNIFF_BYTES:
                        fmt = sniff(head, shown)  # refused before the rest is read
                out.write(chunk)
        if size == 0:
            raise HTTPException(status_code=400,
                                detail=f"the uploaded file is empty: expected a video ({accepted_formats()})")
        fmt = fmt or sniff(head, shown)
        final = name[: -len(".part")] + fmt.suffix
        os.replace(name, final)
    except VideoDecodeError as err:
        os.unlink(name)
        raise HTTPException(status_code=400, detail=str(err)) from err
    except BaseException:
        os.unlink(name)
        raise
    return Path(final), fmt


@router.post("/detect", response_model=DetectResponse, responses={
    400: {"description": "not an accepted container (MP4/MOV, Matroska/WebM, AVI, MPEG-TS), not decodable, too "
                         "long, frames too large, or decoding took too long"},
    413: {"description": "upload too large"},
    503: {"description": "every upload decoder is busy; retry after the Retry-After seconds"}})
async def detect(request: Request, file: UploadFile = File(..., description="A video file."),
                 ctx: ServeContext = Depends(get_ctx)) -> dict:
    """Per-window probabilities and the events the alert rules find in an uploaded video.

    Accepted containers: MP4/MOV, Matroska/WebM, AVI, MPEG-TS, recognised from the content (the file name is
    not used). Memory per request is bounded whatever the upload: the upload itself is on disk; decoding holds
    one decoded full-size frame and at most one chunk of ``CHUNK_FRAMES`` (64) sampled frames, each scaled at
    decode time, i.e. ``64 x size x size x 3`` bytes (``size``: the checkpoint's ``clip.size``); windows are
    scored one batch at a time, ``max_batch_size x clip.frames x size x size x 3`` bytes plus the model's
    batch. The next chunk is decoded only when the previous batch was scored.
    """
    from bigsister_ray.clip import ClipSpec
    from bigsister_ray.serve.detect import DecodersBusy, UploadDecode, detection_result, iter_window_batches, scores_dict

    limit = ctx.settings.serve.upload_max_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit + _MULTIPART_SLACK:
        raise _too_large(limit)
    path, fmt = await save_upload(file, limit)
    sv = ctx.settings.serve
    name = file.filename or "upload"
    decode = None
    try:
        info = await ctx.classifier_info()
        spec = ClipSpec(**info["clip"])
        labels = info["labels"]
        batch_size = int(info.get("max_batch_size", 16))
        deadline = time.monotonic() + sv.upload_decode_timeout_s
        try:
            decode = UploadDecode(lambda cancel: iter_window_batches(
                path, spec, batch_size, max_seconds=sv.upload_max_seconds, max_pixels=sv.upload_max_pixels,
                container=fmt, cancel=cancel, io_timeout_s=sv.upload_decode_timeout_s))
        except DecodersBusy as err:
            raise HTTPException(status_code=503, detail=str(err), headers={"Retry-After": "5"}) from err
        rows = []
        while True:
            try:
                batch = await asyncio.wait_for(decode.next(), timeout=max(0.0, deadline - time.monotonic()))
            except VideoDecodeError as err:
                raise HTTPException(status_code=400, detail=f"{name}: {str(err).split(': ', 1)[-1]}") from err
            except asyncio.TimeoutError as err:
                raise HTTPException(status_code=400, detail=f"{name}: decoding took longer than "
                                    f"serve.upload_decode_timeout_s ({sv.upload_decode_timeout_s:g} s); send a shorter or smaller video") from err
            if batch is None:
                break
            probs = await ctx.classifier.classify_many.remote(np.stack([w.frames for w in batch]))
            rows.extend((w.start_s, w.end_s, scores_dict(labels, np.asarray(p))) for w, p in zip(batch, probs))
        return detection_result(rows, labels, ctx.settings.alerts, info.get("thresholds") or {})
    finally:
        # Unlink first, with no await before it: a cancelled request (client gone) can be cancelled again while
        # this block awaits, and the file must not outlive the request. The open reader keeps its data until closed.
        path.unlink(missing_ok=True)
        if decode is not None:
            decode.cancel()  # a decode still running stops at its next frame and closes the video on its thread
