"""The records every data stage hands on: videos (with their annotated spans), clips, and input errors.

* :class:`VideoRecord` is what a reader (:mod:`bigsister_ray.data.readers`) found: one video, its class, its
  group (the unit of the train/val/test split) and the annotated :class:`Span` s inside it.
* :class:`ClipRecord` is one row of the clip index (:mod:`bigsister_ray.data.index`): which seconds of which
  video make one clip, its task label and its split.
* :class:`InputError` is one input that could not be used, with the stage and the reason; the pipeline
  writes them to ``errors.jsonl`` and ``errors.md`` and goes on with the rest.

All models forbid unknown keys, so a typo in a manifest or a stale index line is an error, not a silent default.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Span", "VideoRecord", "ClipRecord", "InputError", "ClipKind"]

ClipKind = Literal["positive", "negative", "whole"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Span(_Record):
    """An annotated interval of a video, in seconds. ``kind`` is ``event`` (AI Hub ``<event>``) or ``action``."""

    kind: Literal["event", "action"]
    name: str
    start_s: float = Field(ge=0)
    end_s: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> "Span":
        if self.end_s < self.start_s:
            raise ValueError(f"span {self.name!r}: end_s ({self.end_s}) must be >= start_s ({self.start_s})")
        return self

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


class VideoRecord(_Record):
    """One video as a reader found it. ``label`` is the canonical class (:func:`bigsister_ray.labels.canonical_label`).

    Geometry and timing come from the annotation where it has them (AI Hub headers) or from probing the
    file; ``None`` means unknown. ``meta`` holds source details as strings (e.g. ``size_bytes``, ``take``).
    """

    path: str
    label: str
    group: str
    source: str
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    num_frames: int | None = None
    duration_s: float | None = None
    spans: list[Span] = Field(default_factory=list)
    annotation: str | None = None
    meta: dict[str, str] = Field(default_factory=dict)

    @property
    def known_duration_s(self) -> float | None:
        """The duration in seconds from the best field available (duration, else frames / fps)."""
        if self.duration_s is not None and self.duration_s > 0:
            return self.duration_s
        if self.num_frames and self.num_frames > 0 and self.fps and self.fps > 0:
            return self.num_frames / self.fps
        return None


class ClipRecord(_Record):
    """One clip of the index: ``[start_s, end_s]`` of ``video`` (the clip is centred on it, see ``clip.sample_indices``)."""

    clip_id: str
    video: str
    label: str
    label_idx: int = Field(ge=0)
    group: str
    split: str
    start_s: float = Field(ge=0)
    end_s: float = Field(ge=0)
    kind: ClipKind


class InputError(_Record):
    """An input that was skipped: ``path`` (video or annotation), ``stage`` (read, label, probe, decode, ...) and why."""

    path: str
    stage: str
    reason: str
