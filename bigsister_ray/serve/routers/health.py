"""``GET /healthz`` (the process answers) and ``GET /readyz`` (model loaded, database reachable)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from bigsister_ray.serve.context import ServeContext, get_ctx
from bigsister_ray.serve.schemas import Health, Readiness

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Alive: the ingress answers. Says nothing about the model or the database (see /readyz)."""
    return Health()


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(ctx: ServeContext = Depends(get_ctx)):
    """Ready: the Classifier has its model loaded and the database answers (and takes the stream shards' incident
    events: none waiting). 503 with the reason otherwise. Alert delivery problems and streams that no shard holds
    are reported in ``detail`` without making the service unready."""
    detail: dict[str, str] = {}
    model_ok = False
    try:
        info = await asyncio.wait_for(ctx.classifier.info.remote(), timeout=5.0)
        model_ok = bool(info.get("loaded"))
        if not model_ok:
            detail["model"] = "the Classifier answered but reports no model loaded"
    except asyncio.TimeoutError:
        detail["model"] = "the Classifier did not answer within 5 s (still loading the checkpoint, or overloaded)"
    except Exception as err:  # any failure of the Classifier call means "not ready"; reported, not hidden
        detail["model"] = f"the Classifier is unavailable: {type(err).__name__}: {str(err)[:300]}"
    db_ok = await asyncio.to_thread(ctx.store.ping)
    if not db_ok:
        detail["database"] = f"database {ctx.store.safe_url} does not answer"
    try:  # alert delivery problems are reported here; they do not make the service unready
        alerts = await asyncio.wait_for(ctx.shards.health.remote(), timeout=5.0)
        if not alerts.get("ok", True):
            detail["alerts"] = str({k: v for k, v in alerts.items() if k != "ok"})[:500]
        buffered = (alerts.get("buffer") or {}).get("buffered", 0)
        if buffered:  # the database answers reads but refuses the incidents: not ready until they are written
            db_ok = False
            detail["database"] = (f"{buffered} incident event(s) waiting in a stream shard, database not writable: "
                                  f"{(alerts.get('buffer') or {}).get('error')}")[:500]
    except Exception as err:  # reported in the detail, not hidden; readiness is the model and the database
        detail["alerts"] = f"no stream shard answered: {type(err).__name__}: {str(err)[:300]}"
    body = Readiness(ready=model_ok and db_ok, model_loaded=model_ok, database=db_ok, detail=detail)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)
