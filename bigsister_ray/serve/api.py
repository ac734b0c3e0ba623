"""The FastAPI app factory: the HTTP contract of DESIGN.md, built from a :class:`ServeContext`.

Every route except ``/healthz`` needs an API key (see :mod:`bigsister_ray.security.auth`): read scope for GET
(``/readyz`` included), write scope for the rest. ``/docs`` and ``/openapi.json`` are public only while
``auth.public_docs`` is on (the default: the published contract), else they need a read key too.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from bigsister_ray.serve.context import DOCS_PATHS, ServeContext, authorize

__all__ = ["create_api"]

log = logging.getLogger("ray.serve")


def _incidents_router(ctx: ServeContext) -> Any | None:
    try:
        from bigsister_ray.incidents.api import make_incidents_router
    except ImportError as err:
        log.warning("Ingress: /incidents routes unavailable (%s)", err)
        return None
    return make_incidents_router(lambda: ctx.store)


def create_api(ctx: ServeContext) -> FastAPI:
    """The ingress app: /streams, /detect, /incidents, /healthz, /readyz, /docs."""
    from bigsister_ray.errors import BigSisterError
    from bigsister_ray.serve.routers import detect_router, health_router, shards_router, streams_router

    app = FastAPI(
        title="bigsister-ray",
        description="CCTV abnormal-behaviour detection: register camera streams, classify uploads, review incidents.",
        version="0.1.0",
        dependencies=[Depends(authorize)],
    )
    app.state.ctx = ctx

    @app.middleware("http")
    async def _docs_need_a_key(request: Request, call_next):
        # FastAPI serves /docs and /openapi.json outside the routers (no dependencies run): checked here, so that
        # with auth.public_docs off they need a read key like every other route.
        if request.url.path in DOCS_PATHS and not ctx.settings.auth.public_docs:
            try:
                authorize(request)
            except HTTPException as err:
                return JSONResponse({"detail": err.detail}, status_code=err.status_code, headers=err.headers)
        return await call_next(request)

    app.include_router(health_router)
    app.include_router(streams_router)
    app.include_router(shards_router)
    app.include_router(detect_router)
    incidents = _incidents_router(ctx)
    if incidents is not None:
        app.include_router(incidents)

    from bigsister_ray.incidents.store import IncidentNotFoundError, IncidentStoreError

    @app.exception_handler(BigSisterError)
    async def _bigsister_error(_: Request, err: BigSisterError) -> JSONResponse:
        # Our errors carry what to do. A database that cannot be reached is the service's problem (503), a
        # missing row is 404, anything else is the request's (400). Logged for the operator.
        status = 404 if isinstance(err, IncidentNotFoundError) else 503 if isinstance(err, IncidentStoreError) else 400
        log.warning("request failed (%d): %s", status, err)
        return JSONResponse({"detail": str(err)}, status_code=status)

    return app
