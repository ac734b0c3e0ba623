"""The clips of the index, decoded: one video's clips as ``uint8 T x S x S x 3`` arrays, or an input error each.

:func:`iter_clip_frames` opens one reader per video (inside the function, so inside the Ray worker) and decodes
exactly the frames :func:`bigsister_ray.clip.sample_indices` picks for its clips, scaled at decode time by
:class:`bigsister_ray.video.files.ScaledFrameReader`. A missing, zero-byte, truncated or corrupt video is
yielded as an :class:`bigsister_ray.data.records.InputError` for each of its clips, so one bad video never stops
the rest.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from bigsister_ray.clip import ClipSpec, sample_indices
from bigsister_ray.data.records import ClipRecord, InputError, VideoRecord
from bigsister_ray.errors import VideoDecodeError
from bigsister_ray.video.files import ScaledFrameReader, VideoInfo, frame_timing

__all__ = ["clip_indices", "iter_clip_frames"]


def clip_indices(clip: ClipRecord, info: VideoInfo, spec: ClipSpec) -> np.ndarray:
    """The frame indices of one clip of the index (centred on its ``[start_s, end_s]``; short videos loop)."""
    return sample_indices(info.num_frames, info.fps, spec, clip.start_s, clip.end_s)


def iter_clip_frames(
    video: VideoRecord,
    clips: Sequence[ClipRecord],
    spec: ClipSpec,
    num_threads: int = 1,
    chunk: int = 8,
) -> Iterator[tuple[ClipRecord, np.ndarray | InputError]]:
    """For each clip of ``video``: ``(clip, uint8 T x S x S x 3)`` or ``(clip, InputError)``.

    decord numbers the frames (:func:`bigsister_ray.video.files.frame_timing`); one ``ScaledFrameReader``
    decodes them, both opened here (inside the worker). Clips are decoded in the order of their first frame
    (results come in that order); frames shared by overlapping clips are decoded once, and only the small frames
    of clips still to come are held. A video that cannot be opened yields an :class:`InputError` for each of its
    clips; a clip whose frames cannot be decoded yields one for that clip and the others go on. ``chunk`` is
    accepted for compatibility; no full-resolution frame is held, so memory does not depend on it.
    """
    del chunk
    if not clips:
        return
    try:
        info = frame_timing(video.path, num_threads=num_threads)  # the clips' own frames prove the stream decodes
        frames = ScaledFrameReader(video.path, spec, info.fps, num_threads=num_threads)
    except VideoDecodeError as err:
        for clip in clips:
            yield clip, InputError(path=video.path, stage="decode", reason=str(err))
        return
    with frames:
        planned = [(clip, clip_indices(clip, info, spec)) for clip in clips]
        planned.sort(key=lambda ci: int(ci[1].min()))
        cache: dict[int, np.ndarray] = {}
        for n, (clip, idx) in enumerate(planned):
            # Frames later clips need (overlapping windows) are kept while they are decoded anyway.
            later = {int(i) for _, nxt in planned[n + 1 : n + 8] for i in nxt if i <= idx.max()}
            try:
                frames.fill(sorted({int(i) for i in idx}), cache, keep=later)
                clip_frames = np.stack([cache[int(i)] for i in idx])
            except (VideoDecodeError, ValueError) as err:
                yield clip, InputError(path=video.path, stage="decode", reason=f"clip {clip.clip_id}: {err}")
                continue
            finally:
                upcoming = int(planned[n + 1][1].min()) if n + 1 < len(planned) else None
                for i in [i for i in cache if upcoming is None or i < upcoming]:
                    del cache[i]
            yield clip, clip_frames
