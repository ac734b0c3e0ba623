"""The project's exceptions. Messages say what was expected, what was found, and where.

    BigSisterError
    ├── ConfigError            a settings file, key or value is wrong (names the key)
    ├── DataError              a dataset cannot be read
    │   ├── AnnotationError    an annotation file is unreadable, unsafe or missing fields (names the file)
    │   └── VideoDecodeError   a video is missing, empty, truncated or corrupt (names the file)
    ├── CheckpointError        a checkpoint or weights file is missing, foreign or inconsistent
    ├── StreamError            a camera stream cannot be registered or opened (URL redacted)
    └── AlertDeliveryError     a notifier could not deliver (retryable or not)
"""

from __future__ import annotations

__all__ = [
    "BigSisterError",
    "ConfigError",
    "DataError",
    "AnnotationError",
    "VideoDecodeError",
    "CheckpointError",
    "StreamError",
    "AlertDeliveryError",
]


class BigSisterError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(BigSisterError, ValueError):
    """Invalid configuration; the message names the file and key."""


class DataError(BigSisterError):
    """A dataset cannot be read."""


class AnnotationError(DataError):
    """An annotation file is unreadable, unsafe (entity expansion) or misses required fields."""


class VideoDecodeError(DataError):
    """A video is missing, zero-byte, truncated or corrupt."""


class CheckpointError(BigSisterError):
    """A checkpoint is missing, not ours, or does not match the model."""


class StreamError(BigSisterError):
    """A stream URL is refused or cannot be opened."""


class AlertDeliveryError(BigSisterError):
    """A notifier failed. ``retryable`` says whether trying again can help."""

    def __init__(self, message: str, *, retryable: bool = True, reason: str | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.reason = reason
        self.retry_after_s = retry_after_s
