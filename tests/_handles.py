"""Stand-in Serve handles for tests that build the Ingress app in-process (no Ray): every method answers at once.

Used where a test targets the Ingress's own input handling (keys, body limits, uploads, the OpenAPI), not the
deployments behind it; tests of the deployments use the real ones on a local Ray.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["Handles"]


class _Remote:
    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn

    async def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)


class Handles:
    """Classifier and StreamShard stand-ins: ``info`` gives ``info``; ``classify_many`` scores every window 0.5 for
    each label; ``health`` is ok; ``poke`` does nothing."""

    def __init__(self, info: dict) -> None:
        self.info = _Remote(lambda: info)
        self.classify_many = _Remote(lambda b: np.full((len(b), len(info["labels"])), 0.5, dtype=np.float32))
        self.health = _Remote(lambda: {"ok": True})
        self.poke = _Remote(lambda: None)
