"""The web console's pages under ``/ui``: server-rendered templates, forms with CSRF tokens, sessions by cookie.

::

    GET  /ui/login, POST /ui/login, POST /ui/logout     an API key in, a session cookie out
    GET  /ui/cameras, POST /ui/cameras                  the camera grid; add a camera (write)
    GET  /ui/cameras/{id}, POST /ui/cameras/{id}        edit name, location, enabled, rules (write)
    GET  /ui/cameras/{id}/frame                         the camera's newest frame (JPEG) for the grid
    POST /ui/cameras/{id}/delete                        remove a camera (write)
    GET  /ui/incidents                                  the list, filtered by camera, class, status, time
    GET  /ui/incidents/{id}                             clip, score timeline, actions, audit trail
    POST /ui/incidents/{id}/act                         ack | false_alarm | resolve | reopen, a note (write)
    GET  /ui/incidents/{id}/snapshot, .../clip          the evidence, for the session's own eyes
    GET  /ui/system                                     model, shards, Slack delivery

The Ingress's key check leaves ``/ui`` to this router (:data:`~bigsister_ray.serve.context.CONSOLE_PREFIX`);
the body size limit still applies. Every page checks the session cookie (:mod:`.sessions`): none, or an
expired one, redirects to ``/ui/login?next=<the page>``; a read key sees every page, a write key may act. A
signed alert link (:mod:`bigsister_ray.alerts.links`) opens its incident's page without a login, read-only.
Every POST checks the form's token against the session's first: without it nothing changes (403).

Actions go through the same functions as the HTTP API (the store, the streams router), so the console, the
API and Slack agree.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, Response
from markupsafe import Markup
from starlette.background import BackgroundTask

from bigsister_ray.config import AlertRule
from bigsister_ray.serve.context import ServeContext
from bigsister_ray.serve.ui.console import (
    ACTION_LABELS,
    P,
    PAGE_SIZE,
    STATIC,
    STATUSES,
    Console,
    Redirect,
    Refused,
    guarded_by,
    http_detail,
    parse_time,
    redirect,
    rules_for_form,
    rules_from_form,
)
from bigsister_ray.serve.ui.plot import timeline_svg
from bigsister_ray.serve.ui.sessions import COOKIE_NAME, ConsoleSession, safe_next

__all__ = ["make_console_router"]

log = logging.getLogger("ray.serve")


def make_console_router(ctx: ServeContext) -> APIRouter:
    """The ``/ui`` pages over ``ctx`` (the Ingress's own context: its store, handles and settings)."""
    console = Console(ctx)
    router = APIRouter(prefix=P, include_in_schema=False)
    guarded = guarded_by(console)

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        """The stylesheet and the script (public: nothing secret in them)."""
        if name not in STATIC:
            return Response(status_code=404)
        data = (resources.files("bigsister_ray.serve.ui") / "static" / name).read_bytes()
        return Response(data, media_type=STATIC[name], headers={"Cache-Control": "public, max-age=300"})

    # ---- login ---------------------------------------------------------------------------------------------------
    @router.get("")
    @router.get("/")
    async def home(request: Request) -> Response:
        return redirect(f"{P}/incidents")

    @router.get("/login")
    @guarded
    async def login_page(request: Request) -> Response:
        session = console.session(request)
        target = safe_next(request.query_params.get("next"))
        if session is not None and session.operator:
            return redirect(target)
        return console.render(request, session if session is not None and session.scope == "anonymous" else None,
                              "login.html", next=target, error=None)

    @router.post("/login")
    @guarded
    async def login(request: Request) -> Response:
        session = console.session(request)
        form = await console.form(request, session)
        target = safe_next(str(form.get("next") or ""))
        key = str(form.get("api_key") or "").strip()
        auth = ctx.authenticator
        principal = None
        if auth is None:
            from bigsister_ray.security.auth import Principal

            principal = Principal(name="anonymous", scope="write")
        elif key or not auth.enabled:
            principal = auth.identify(key)
        if principal is None:
            log.warning("console: refused a login with an unknown API key")
            return console.render(request, session, "login.html", status=401, next=target,
                                  error="That is not one of this service's API keys: paste a read or write key "
                                        "(auth.keys or auth.keys_file).")
        response = redirect(target)
        console.set_cookie(response, request, ConsoleSession.login(principal.name, principal.scope))
        log.info("console: %s logged in (%s)", principal.name, principal.scope)
        return response

    @router.post("/logout")
    @guarded
    async def logout(request: Request) -> Response:
        await console.form(request, console.session(request))
        response = redirect(f"{P}/login")
        response.delete_cookie(COOKIE_NAME, path=P, httponly=True, samesite="lax", secure=console.secure(request))
        return response

    # ---- cameras -------------------------------------------------------------------------------------------------
    async def _labels() -> list[str]:
        try:
            info = await asyncio.wait_for(ctx.classifier_info(), timeout=5.0)
            return [lab for lab in info.get("labels", []) if lab != "normal"]
        except Exception as err:  # the page still shows; rules for classes need the model's labels
            log.warning("console: the Classifier did not describe its labels: %r", err)
            return []

    async def _cameras() -> list[Any]:
        from bigsister_ray.incidents.models import utcnow
        from bigsister_ray.serve.routers.streams import stream_out

        recs = await asyncio.to_thread(ctx.store.list_streams)
        leases = {lease.stream_id: lease for lease in await asyncio.to_thread(ctx.leases.leases)}
        now = utcnow()
        return [{"rec": r, "out": stream_out(r, leases.get(r.id), now)} for r in recs]

    async def _cameras_page(request: Request, session: ConsoleSession, status: int = 200, error: str | None = None,
                            values: dict | None = None) -> Response:
        return console.render(request, session, "cameras.html", status=status, nav="cameras", refresh=10, cameras=await _cameras(),
                              error=error, values=values or {})

    @router.get("/cameras")
    @guarded
    async def cameras(request: Request) -> Response:
        return await _cameras_page(request, console.operator(request))

    @router.post("/cameras")
    @guarded
    async def add_camera(request: Request) -> Response:
        from pydantic import ValidationError

        from bigsister_ray.security.auth import Principal
        from bigsister_ray.serve.guard import admit_registration
        from bigsister_ray.serve.routers.streams import register_stream
        from bigsister_ray.serve.schemas import StreamRegister

        session = console.operator(request, write=True)
        form = await console.form(request, session)
        values = {k: str(form.get(k) or "").strip() for k in ("name", "url", "location")}
        try:
            body = StreamRegister(name=values["name"], url=values["url"], location=values["location"] or None,
                                  realtime=form.get("realtime") is not None)
        except ValidationError as err:
            msg = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
            return await _cameras_page(request, session, 400, f"the camera was not added: {msg}", values)
        try:
            registration = await admit_registration(request, Principal(session.user or "console", session.scope), ctx)
            await register_stream(body, ctx, registration)
        except HTTPException as err:
            return await _cameras_page(request, session, err.status_code, f"the camera was not added: {http_detail(err)}", values)
        return redirect(f"{P}/cameras")

    @router.get("/cameras/{stream_id}")
    @guarded
    async def camera(request: Request, stream_id: str) -> Response:
        session = console.operator(request)
        return await _camera_page(request, session, stream_id)

    async def _camera_page(request: Request, session: ConsoleSession, stream_id: str, status: int = 200,
                           error: str | None = None) -> Response:
        from bigsister_ray.serve.routers.streams import stream_out

        rec = await asyncio.to_thread(ctx.store.get_stream, stream_id)
        if rec is None:
            raise Refused(404, f"no camera {stream_id!r}: it may have been deleted (see the camera list)")
        out = stream_out(rec, await asyncio.to_thread(ctx.leases.lease, stream_id))
        return console.render(request, session, "camera.html", status=status, nav="cameras", rec=rec, out=out,
                              labels=await _labels(), rules=rules_for_form(getattr(out, "rules", {}) or {}),
                              error=error, defaults=AlertRule())

    @router.get("/cameras/{stream_id}/frame")
    @guarded
    async def camera_frame(request: Request, stream_id: str) -> Response:
        from bigsister_ray.serve.routers.streams import latest_frame_file

        console.operator(request)
        try:
            path = await asyncio.to_thread(latest_frame_file, ctx.store, ctx.settings.incidents.media_dir, stream_id)
        except HTTPException as err:
            raise Refused(err.status_code, http_detail(err)) from err
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, no-cache"})

    @router.post("/cameras/{stream_id}")
    @guarded
    async def edit_camera(request: Request, stream_id: str) -> Response:
        from pydantic import ValidationError

        from bigsister_ray.serve.routers.streams import patch_stream
        from bigsister_ray.serve.schemas import StreamPatch

        session = console.operator(request, write=True)
        form = await console.form(request, session)
        try:
            body = StreamPatch(name=str(form.get("name") or "").strip(),
                               location=str(form.get("location") or "").strip() or None,
                               enabled=form.get("enabled") is not None, realtime=form.get("realtime") is not None,
                               rules=rules_from_form(form, await _labels()))
            await patch_stream(stream_id, body, ctx)
        except ValidationError as err:
            msg = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
            return await _camera_page(request, session, stream_id, 400, f"nothing was changed: {msg}")
        except HTTPException as err:
            return await _camera_page(request, session, stream_id, err.status_code, f"nothing was changed: {http_detail(err)}")
        return redirect(f"{P}/cameras/{stream_id}?saved=1")

    @router.post("/cameras/{stream_id}/delete")
    @guarded
    async def delete_camera(request: Request, stream_id: str) -> Response:
        from bigsister_ray.serve.routers.streams import delete_stream

        session = console.operator(request, write=True)
        await console.form(request, session)
        try:
            await delete_stream(stream_id, ctx)
        except HTTPException as err:
            raise Refused(err.status_code, http_detail(err)) from err
        return redirect(f"{P}/cameras")

    # ---- incidents -----------------------------------------------------------------------------------------------
    @router.get("/incidents")
    @guarded
    async def incidents(request: Request) -> Response:
        session = console.operator(request)
        q = request.query_params
        filters = {k: (q.get(k) or "").strip() for k in ("camera", "label", "status", "since", "until")}
        if filters["status"] and filters["status"] not in STATUSES:
            raise Refused(400, f"status: expected one of {', '.join(STATUSES)}, got {filters['status'][:30]!r}")
        try:
            offset = max(0, int(q.get("offset") or 0))
        except ValueError:
            offset = 0
        since, until = parse_time(filters["since"], "since"), parse_time(filters["until"], "until")
        items, total = await asyncio.to_thread(
            ctx.store.list_incidents, stream_id=filters["camera"] or None, label=filters["label"] or None,
            status=filters["status"] or None, since=since, until=until, limit=PAGE_SIZE, offset=offset)
        streams = await asyncio.to_thread(ctx.store.list_streams, True)
        base = {k: v for k, v in filters.items() if v}
        pages = {"prev": f"?{urlencode({**base, 'offset': max(0, offset - PAGE_SIZE)})}" if offset > 0 else None,
                 "next": f"?{urlencode({**base, 'offset': offset + PAGE_SIZE})}" if offset + PAGE_SIZE < total else None}
        return console.render(request, session, "incidents.html", nav="incidents", refresh=5, items=items, total=total,
                              offset=offset, filters=filters, streams=streams, labels=await _labels(), pages=pages)

    async def _viewer(request: Request, incident_id: int) -> ConsoleSession:
        """The session that may see the incident: an operator's, or a signed link's viewer (new when it came with
        the link; the page's answer sets its cookie)."""
        from bigsister_ray.alerts.links import LinkError

        session = console.session(request)
        if session is not None and session.sees_incident(incident_id):
            return session
        q = request.query_params
        if "sig" in q or "exp" in q:
            try:
                console.links.verify(request.url.path, q.get("exp"), q.get("sig"))
            except LinkError as err:
                log.info("console: %s", err)
                raise Redirect(f"{P}/login?{urlencode({'next': request.url.path, 'why': 'link'})}") from err
            base = session if session is not None else ConsoleSession.anonymous()
            return base.as_link_viewer(incident_id, int(str(q.get("exp"))))
        raise Redirect(console.login_url(request))

    @router.get("/incidents/{incident_id}")
    @guarded
    async def incident(request: Request, incident_id: int) -> Response:
        session = await _viewer(request, incident_id)
        return await _incident_page(request, session, incident_id)

    async def _incident_page(request: Request, session: ConsoleSession, incident_id: int, *, status: int = 200,
                             error: str | None = None) -> Response:
        inc = await asyncio.to_thread(ctx.store.get_incident, incident_id)
        if inc is None:
            raise Refused(404, f"no incident {incident_id}: see the incident list")
        try:
            trail = await asyncio.to_thread(ctx.store.audit_trail, incident_id)
        except AttributeError:
            trail = []
        threshold = None
        try:
            info = await asyncio.wait_for(ctx.classifier_info(), timeout=5.0)
            threshold = (info.get("thresholds") or {}).get(inc.label)
        except Exception as err:  # the plot still shows, without the threshold line
            log.warning("console: the Classifier did not describe its thresholds: %r", err)
        plot = Markup(timeline_svg(inc.timeline or [], threshold=threshold, peak=(inc.peak_start_s, inc.peak_end_s),
                                   label=f"{inc.label} score"))
        from bigsister_ray.incidents.models import TRANSITIONS, ACTIONS

        allowed = [a for a, target in ACTIONS.items() if target in TRANSITIONS.get(inc.status, frozenset())]
        response = console.render(request, session, "incident.html", status=status, nav="incidents", inc=inc, plot=plot,
                                  trail=trail, actions=allowed, error=error, has_clip=bool(getattr(inc, "has_clip", False)))
        return response

    @router.post("/incidents/{incident_id}/act")
    @guarded
    async def act(request: Request, incident_id: int) -> Response:
        from bigsister_ray.incidents.store import IncidentNotFoundError, InvalidTransitionError

        session = console.operator(request, write=True)
        form = await console.form(request, session)
        action = str(form.get("action") or "")
        if action not in ACTION_LABELS:
            raise Refused(400, f"action: expected one of {', '.join(ACTION_LABELS)}, got {action[:30]!r}")
        note = str(form.get("note") or "").strip()[:2000] or None
        try:
            await asyncio.to_thread(ctx.store.act, incident_id, action, actor=f"console:{session.user}", note=note)
        except IncidentNotFoundError as err:
            raise Refused(404, str(err)) from err
        except InvalidTransitionError as err:
            return await _incident_page(request, session, incident_id, status=409, error=str(err))
        response = redirect(f"{P}/incidents/{incident_id}")
        response.background = BackgroundTask(_refresh_slack, request, incident_id)
        return response

    def _refresh_slack(request: Request, incident_id: int) -> None:
        """Send the Slack message edit the action queued now, after the answer (as a Slack button press does); what
        fails stays in the outbox for the shards' sweepers."""
        try:
            from bigsister_ray.serve.routers.slack import deliver_now
        except ImportError:  # a version without Slack actions: the sweepers deliver what is due
            return
        deliver_now(request.app, ctx, incident_id)

    @router.get("/incidents/{incident_id}/snapshot")
    @guarded
    async def snapshot(request: Request, incident_id: int) -> Response:
        from bigsister_ray.incidents.store import IncidentNotFoundError

        await _viewer(request, incident_id)
        try:
            data = await asyncio.to_thread(ctx.store.get_snapshot, incident_id)
        except IncidentNotFoundError as err:
            raise Refused(404, str(err)) from err
        if data is None:
            raise Refused(404, f"incident {incident_id} has no snapshot")
        return Response(content=data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @router.get("/incidents/{incident_id}/clip")
    @guarded
    async def clip(request: Request, incident_id: int) -> Response:
        await _viewer(request, incident_id)
        try:
            from bigsister_ray.serve.routers.incident_media import clip_file
        except ImportError as err:
            raise Refused(404, "this version of the service keeps no evidence clips") from err
        try:
            path = await asyncio.to_thread(clip_file, ctx.store, ctx.settings.incidents.media_dir, incident_id)
        except HTTPException as err:
            raise Refused(err.status_code, http_detail(err)) from err
        return FileResponse(path, media_type="video/mp4", headers={"Cache-Control": "private, max-age=3600"})

    # ---- system --------------------------------------------------------------------------------------------------
    @router.get("/system")
    @guarded
    async def system(request: Request) -> Response:
        from bigsister_ray.incidents.models import utcnow

        session = console.operator(request)
        model: dict[str, Any] = {}
        model_error = None
        try:
            model = await asyncio.wait_for(ctx.classifier.info.remote(), timeout=5.0)
        except Exception as err:  # shown on the page
            model_error = f"the Classifier did not answer: {type(err).__name__}: {str(err)[:300]}"
        delivery: dict[str, Any] = {}
        delivery_error = None
        try:
            delivery = await asyncio.wait_for(ctx.shards.health.remote(), timeout=5.0)
        except Exception as err:  # shown on the page
            delivery_error = f"no stream shard answered: {type(err).__name__}: {str(err)[:300]}"
        ttl = ctx.settings.serve.shards.lease_ttl_s
        shards = await asyncio.to_thread(ctx.leases.live_shards, ttl, now=utcnow())
        streams = await asyncio.to_thread(ctx.store.list_streams)
        recent, _ = await asyncio.to_thread(ctx.store.list_incidents, limit=200)
        counts: dict[str, int] = {}
        for inc in recent:
            counts[inc.alert_status] = counts.get(inc.alert_status, 0) + 1
        failures = [inc for inc in recent if inc.alert_status == "failed" or (inc.alert_reason and inc.alert_status != "sent")][:20]
        alerts = ctx.settings.alerts
        slack = alerts.slack
        notifier = {"kind": alerts.notifier, "channel": getattr(slack, "channel", None)}
        return console.render(request, session, "system.html", nav="system", model=model, model_error=model_error,
                              delivery=delivery, delivery_error=delivery_error, shards=shards, streams=streams,
                              counts=counts, failures=failures, notifier=notifier, checkpoint=ctx.settings.serve.checkpoint)

    return router
