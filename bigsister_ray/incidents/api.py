"""The incidents router: list, read, snapshot, and review transitions.

``make_incidents_router(store_provider)`` takes a callable returning the :class:`IncidentStore`, so the Serve
ingress passes its own and tests pass one on a temporary database::

    GET  /incidents                   filter by stream_id, label, status, since, until; limit/offset
    GET  /incidents/{id}              one incident with its score timeline
    GET  /incidents/{id}/snapshot     image/jpeg of the peak window (404 when there is none)
    GET  /incidents/{id}/audit        who acted on it, when, with what note
    POST /incidents/{id}/ack          open -> acknowledged
    POST /incidents/{id}/false-alarm  open|acknowledged -> false_alarm
    POST /incidents/{id}/resolve      open|acknowledged -> resolved
    POST /incidents/{id}/reopen       false_alarm|resolved -> open       (409 for any other move, 404 unknown id)

The actions take an optional JSON body ``{"note": "..."}`` and are recorded in the audit trail with the
caller's name (the ``actor`` dependency: the API key's name in the Serve ingress, ``api`` without one).
"""

# No `from __future__ import annotations`: FastAPI resolves the route annotations (StoreDep is local).
from datetime import datetime, timezone
from typing import Annotated, Callable

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from fastapi import Path as PathParam

from bigsister_ray.incidents.models import IncidentPublic, IncidentStatus
from bigsister_ray.incidents.schemas import ActionBody, AuditTrail, ErrorDetail, IncidentPage
from bigsister_ray.incidents.store import IncidentNotFoundError, IncidentStore, IncidentStoreError, InvalidTransitionError

__all__ = ["make_incidents_router"]

_ERRORS = {404: {"model": ErrorDetail}, 409: {"model": ErrorDetail}, 503: {"model": ErrorDetail}}


#: Largest id or offset a database integer holds (SQLite and PostgreSQL BIGINT): beyond it, 422, not a crash.
MAX_INT = 2**63 - 1
IncidentId = Annotated[int, PathParam(ge=1, le=MAX_INT, description="Incident id.")]


def _aware(value: datetime | None, name: str = "time") -> datetime | None:
    """``value`` with UTC assumed when naive, and within what the database stores (422 otherwise)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    try:
        value.astimezone(timezone.utc)
    except OverflowError as err:
        raise HTTPException(status_code=422, detail=f"{name}: {value.isoformat()} is out of range in UTC") from err
    return value


def _api_actor() -> str:
    return "api"


def make_incidents_router(store_provider: Callable[[], IncidentStore], *, dependencies: list | None = None,
                          actor: Callable[..., str] | None = None) -> APIRouter:
    """The ``/incidents`` routes over the store ``store_provider()`` returns (called per request).

    ``dependencies`` (e.g. an API-key check) apply to every route. ``actor``: a FastAPI dependency returning
    the caller's name for the audit trail (default: ``"api"``).
    """
    router = APIRouter(prefix="/incidents", tags=["incidents"], dependencies=dependencies or [])

    def get_store() -> IncidentStore:
        return store_provider()

    StoreDep = Annotated[IncidentStore, Depends(get_store)]
    ActorDep = Annotated[str, Depends(actor or _api_actor)]

    def unavailable(err: IncidentStoreError) -> HTTPException:
        return HTTPException(status_code=503, detail=f"incident store unavailable: {err}")

    @router.get("", response_model=IncidentPage, responses=_ERRORS)
    def list_incidents(
        store: StoreDep,
        stream_id: Annotated[str | None, Query(description="Only this stream.")] = None,
        label: Annotated[str | None, Query(description="Only this class.")] = None,
        status: Annotated[IncidentStatus | None, Query(description="Only this review status.")] = None,
        since: Annotated[datetime | None, Query(description="Incidents still going on or ended at/after this time (ISO 8601).")] = None,
        until: Annotated[datetime | None, Query(description="Incidents started at/before this time (ISO 8601).")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
    ) -> IncidentPage:
        since, until = _aware(since, "since"), _aware(until, "until")
        if since is not None and until is not None and since > until:
            raise HTTPException(status_code=422, detail=f"since ({since.isoformat()}) must be <= until ({until.isoformat()})")
        try:
            items, total = store.list_incidents(stream_id=stream_id, label=label, status=status.value if status else None,
                                                since=since, until=until, limit=limit, offset=offset)
        except IncidentStoreError as err:
            raise unavailable(err) from err
        return IncidentPage(items=items, total=total, limit=limit, offset=offset)

    @router.get("/{incident_id}", response_model=IncidentPublic, responses=_ERRORS)
    def get_incident(incident_id: IncidentId, store: StoreDep) -> IncidentPublic:
        try:
            inc = store.get_incident(incident_id)
        except IncidentStoreError as err:
            raise unavailable(err) from err
        if inc is None:
            raise HTTPException(status_code=404, detail=f"no incident {incident_id}")
        return inc

    @router.get("/{incident_id}/snapshot", responses={200: {"content": {"image/jpeg": {}}}, **_ERRORS}, response_class=Response)
    def get_snapshot(incident_id: IncidentId, store: StoreDep) -> Response:
        try:
            data = store.get_snapshot(incident_id)
        except IncidentNotFoundError as err:
            raise HTTPException(status_code=404, detail=str(err)) from err
        except IncidentStoreError as err:
            raise unavailable(err) from err
        if data is None:
            raise HTTPException(status_code=404, detail=f"incident {incident_id} has no snapshot")
        return Response(content=data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    def _act(incident_id: int, store: IncidentStore, action: str, who: str, body: ActionBody | None) -> IncidentPublic:
        try:
            return store.act(incident_id, action, actor=who or "api", note=body.note if body is not None else None)
        except IncidentNotFoundError as err:
            raise HTTPException(status_code=404, detail=str(err)) from err
        except InvalidTransitionError as err:
            raise HTTPException(status_code=409, detail=str(err)) from err
        except IncidentStoreError as err:
            raise unavailable(err) from err

    @router.get("/{incident_id}/audit", response_model=AuditTrail, responses=_ERRORS)
    def audit(incident_id: IncidentId, store: StoreDep) -> AuditTrail:
        try:
            return AuditTrail(incident_id=incident_id, items=store.audit_trail(incident_id))
        except IncidentNotFoundError as err:
            raise HTTPException(status_code=404, detail=str(err)) from err
        except IncidentStoreError as err:
            raise unavailable(err) from err

    @router.post("/{incident_id}/ack", response_model=IncidentPublic, responses=_ERRORS)
    def acknowledge(incident_id: IncidentId, store: StoreDep, who: ActorDep, body: ActionBody | None = None) -> IncidentPublic:
        return _act(incident_id, store, "ack", who, body)

    @router.post("/{incident_id}/false-alarm", response_model=IncidentPublic, responses=_ERRORS)
    def false_alarm(incident_id: IncidentId, store: StoreDep, who: ActorDep, body: ActionBody | None = None) -> IncidentPublic:
        return _act(incident_id, store, "false_alarm", who, body)

    @router.post("/{incident_id}/resolve", response_model=IncidentPublic, responses=_ERRORS)
    def resolve(incident_id: IncidentId, store: StoreDep, who: ActorDep, body: ActionBody | None = None) -> IncidentPublic:
        return _act(incident_id, store, "resolve", who, body)

    @router.post("/{incident_id}/reopen", response_model=IncidentPublic, responses=_ERRORS)
    def reopen(incident_id: IncidentId, store: StoreDep, who: ActorDep, body: ActionBody | None = None) -> IncidentPublic:
        """Take a verdict back (false alarm or resolved -> open): the incident is reviewed again and leaves the
        operator verdicts that ``export-feedback`` writes."""
        return _act(incident_id, store, "reopen", who, body)

    return router
