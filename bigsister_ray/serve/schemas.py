"""Request and response models of the serving HTTP API (the contract in DESIGN.md).

Stream URLs are never echoed with credentials: responses carry ``url`` redacted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "StreamState",
    "StreamRegister",
    "StreamPatch",
    "StreamStatusOut",
    "StreamOwner",
    "StreamOut",
    "StreamList",
    "ShardOut",
    "ShardList",
    "DetectWindow",
    "DetectEvent",
    "DetectResponse",
    "Health",
    "Readiness",
]

from bigsister_ray.config import AlertRule
from bigsister_ray.video.stream import StreamState


class StreamRegister(BaseModel):
    """``POST /streams`` body."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(..., min_length=1, max_length=2048,
                     description="rtsp://, rtsps://, http(s):// (MPEG-TS, MJPEG, HLS) or a file under serve.streams.media_root.")
    name: str = Field(..., min_length=1, max_length=200, description="Human name shown in alerts.")
    location: str | None = Field(None, max_length=500, description="Where the camera is (shown in alerts).")
    realtime: bool = Field(True, description="Files: replay at real-time pace (true) or as fast as possible (false). Ignored for live sources.")


class StreamPatch(BaseModel):
    """``PATCH /streams/{id}`` body: only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200, description="Human name shown in alerts.")
    location: str | None = Field(None, max_length=500, description="Where the camera is (shown in alerts).")
    enabled: bool | None = Field(None, description="false: the stream stays registered but no shard runs it; true: a shard takes it again.")
    realtime: bool | None = Field(None, description="Files: replay at real-time pace (true) or as fast as possible (false).")
    rules: dict[str, AlertRule] | None = Field(None, description=(
        "The camera's alert rules per class, or '*' for every class, each a full alert rule (threshold, k of n, "
        "cooldown_s, enabled: whether the class is watched, active_hours and timezone; unset fields take the rule "
        "defaults); they replace the camera's previous rules. {}: the deployment's rules again."))


class StreamStatusOut(BaseModel):
    """Live state of a stream's decoder."""

    state: StreamState
    last_frame_at: datetime | None = None
    fps: float = 0.0
    frames_decoded: int = 0
    windows_classified: int = 0
    frames_dropped: int = 0
    reconnects: int = 0
    watchdog_restarts: int = 0
    callback_errors: int = 0
    last_error: str | None = Field(None, description="The last failure, URL redacted.")
    backoff_s: float | None = Field(None, description="Current reconnect delay (grows while the source keeps failing).")
    next_retry_s: float | None = Field(None, description="Seconds until the next reconnect attempt.")
    finished: bool = Field(False, description="A file source reached its end.")


class StreamOwner(BaseModel):
    """The shard that holds a stream's lease."""

    shard_id: str
    node_id: str | None = None
    token: int = Field(..., description="Fencing token of the lease: grows by one every time the stream changes hands.")
    expires_at: datetime | None = None


class StreamOut(BaseModel):
    """A registered stream, its status, and the shard (and node) that watches it (null while none holds it)."""

    id: str
    name: str
    url: str = Field(..., description="Redacted: credentials removed.")
    location: str | None = None
    realtime: bool = True
    enabled: bool = True
    rules: dict[str, AlertRule] = Field(default_factory=dict, description="The camera's own alert rules per class ('*': every class).")
    created_at: datetime | None = None
    status: StreamStatusOut
    owner: StreamOwner | None = None


class StreamList(BaseModel):
    streams: list[StreamOut]


class ShardOut(BaseModel):
    """One StreamShard: where it runs, how many streams it may hold and holds, when it last renewed."""

    shard_id: str
    node_id: str
    capacity: int
    load: int
    heartbeat_at: datetime
    started_at: datetime | None = None
    streams: list[str] = Field(default_factory=list, description="Ids of the streams whose lease it holds.")


class ShardList(BaseModel):
    shards: list[ShardOut]
    streams: int = Field(..., description="Registered streams.")
    unowned: list[str] = Field(default_factory=list, description="Streams no live shard holds (waiting for one).")


class DetectWindow(BaseModel):
    start_s: float
    end_s: float
    scores: dict[str, float]


class DetectEvent(BaseModel):
    label: str
    start_s: float
    end_s: float
    peak_score: float


class DetectResponse(BaseModel):
    """``POST /detect`` answer: per-window probabilities and the incidents the alert rules find."""

    windows: list[DetectWindow]
    events: list[DetectEvent]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    model_loaded: bool
    database: bool
    detail: dict[str, str] = Field(default_factory=dict, description="Why a check failed.")
