"""The Ingress deployment: the FastAPI app (``@serve.ingress``) holding handles to the rest of the graph."""

from __future__ import annotations

import logging

from ray import serve

from bigsister_ray.config import Settings

__all__ = ["Ingress"]

log = logging.getLogger("ray.serve")


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress:
    """HTTP entry point. Handles to the StreamShards and the Classifier come in the constructor."""

    def __init__(self, settings: Settings, shards, classifier) -> None:
        from bigsister_ray.incidents.store import IncidentStore
        from bigsister_ray.security.auth import Authenticator
        from bigsister_ray.serve.context import ServeContext

        settings = Settings.model_validate(settings) if isinstance(settings, dict) else settings
        store = IncidentStore.from_settings(settings)
        store.create_tables()
        self.ctx = ServeContext(
            settings=settings,
            store=store,
            shards=shards,
            classifier=classifier,
            authenticator=Authenticator.from_config(settings.auth),
        )

    def __serve_build_asgi_app__(self):
        from bigsister_ray.serve.api import create_api

        return create_api(self.ctx)
