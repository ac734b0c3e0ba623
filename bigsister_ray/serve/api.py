"""The FastAPI app factory: the HTTP contract of DESIGN.md, built from a :class:`ServeContext`.

Every route except ``/healthz`` needs an API key (see :mod:`bigsister_ray.security.auth`): read scope for GET
(``/readyz`` included), write scope for the rest. ``/docs`` and ``/openapi.json`` are public only while
``auth.public_docs`` is on (the default: the published contract), else they need a read key too. The key and
the body size are checked before the body is read (:class:`bigsister_ray.serve.guard.IngressGuard`); the
OpenAPI declares both ways to send the key (``X-API-Key``, ``Authorization: Bearer``).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from bigsister_ray.serve.context import PUBLIC_PATHS, SIGNED_PATHS, ServeContext, authorize
from bigsister_ray.serve.guard import IngressGuard, StreamLimits

__all__ = ["create_api"]

log = logging.getLogger("ray.serve")


def _incidents_router(ctx: ServeContext) -> Any | None:
    try:
        from bigsister_ray.incidents.api import make_incidents_router
    except ImportError as err:
        log.warning("Ingress: /incidents routes unavailable (%s)", err)
        return None

    def actor(principal: Any = Depends(authorize)) -> str:
        return principal.name if principal is not None else "api"

    return make_incidents_router(lambda: ctx.store, actor=actor)


def create_api(ctx: ServeContext) -> FastAPI:
    """The ingress app: /streams, /detect, /incidents (and their clips), /slack/actions, /ui, /healthz, /readyz, /docs."""
    from bigsister_ray.errors import BigSisterError
    from bigsister_ray.serve.routers import detect_router, health_router, shards_router, streams_router

    app = FastAPI(
        title="bigsister-ray",
        description="CCTV abnormal-behaviour detection: register camera streams, classify uploads, review incidents.",
        version="0.1.0",
        dependencies=[Depends(authorize)],
    )
    app.state.ctx = ctx
    app.state.stream_limits = StreamLimits(ctx.settings)
    # Outermost of the app's own middleware: the key and the body size before anything reads the body (the
    # docs routes included, which FastAPI serves outside the routers and their dependencies).
    app.add_middleware(IngressGuard)

    app.include_router(health_router)
    app.include_router(streams_router)
    app.include_router(shards_router)
    app.include_router(detect_router)
    incidents = _incidents_router(ctx)
    if incidents is not None:
        app.include_router(incidents)
    from bigsister_ray.serve.routers import incident_media, slack
    from bigsister_ray.serve.ui import make_console_router

    app.include_router(incident_media.router)  # GET /incidents/{id}/clip, with Range
    app.include_router(slack.router)  # POST /slack/actions: Slack's signature instead of a key
    app.include_router(make_console_router(ctx))  # /ui: the web console, by session cookie (docs/console.md)

    from bigsister_ray.incidents.store import IncidentNotFoundError, IncidentStoreError

    @app.exception_handler(BigSisterError)
    async def _bigsister_error(_: Request, err: BigSisterError) -> JSONResponse:
        # Our errors carry what to do. A database that cannot be reached is the service's problem (503), a
        # missing row is 404, anything else is the request's (400). Logged for the operator.
        status = 404 if isinstance(err, IncidentNotFoundError) else 503 if isinstance(err, IncidentStoreError) else 400
        log.warning("request failed (%d): %s", status, err)
        return JSONResponse({"detail": str(err)}, status_code=status)

    _public_routes_in_openapi(app)
    return app


def _public_routes_in_openapi(app: FastAPI) -> None:
    """The OpenAPI says the public routes (``/healthz``) need no key; every other operation lists the schemes."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for path in PUBLIC_PATHS | SIGNED_PATHS:
                for op in schema.get("paths", {}).get(path, {}).values():
                    op["security"] = []
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
