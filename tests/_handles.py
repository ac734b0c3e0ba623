"""Stand-in Serve handles for tests that build the Ingress app in-process (no Ray): every method answers at once.

Used where a test targets the Ingress's own input handling (keys, body limits, uploads, the OpenAPI), not the
deployments behind it; tests of the deployments use the real ones on a local Ray.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["Handles", "ingress_app"]


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


def ingress_app(settings):
    """The real Ingress app (``create_api``) on ``settings``' database, with :class:`Handles` behind it: the tiny
    test model's description (labels fight/normal, ``TINY_SPEC``, batch 4) stands in for the Classifier's."""
    from bigsister_ray.incidents.store import IncidentStore
    from bigsister_ray.security.auth import Authenticator
    from bigsister_ray.serve.api import create_api
    from bigsister_ray.serve.context import ServeContext
    from tests._serve_support import TINY_SPEC

    store = IncidentStore(settings.database.url, busy_timeout_ms=500)
    store.create_tables()
    info = {"loaded": True, "labels": ["fight", "normal"], "clip": TINY_SPEC.model_dump(), "thresholds": {},
            "max_batch_size": 4}
    handles = Handles(info)
    ctx = ServeContext(settings=settings, store=store, shards=handles, classifier=handles,
                       authenticator=Authenticator.from_config(settings.auth), model_info=info)
    return create_api(ctx)
