"""The web console's pages under ``/ui``: server-rendered templates, forms with CSRF tokens, sessions by cookie.

::

    GET  /ui/login, POST /ui/login, POST /ui/logout     an API key in, a session cookie out
    GET  /ui/cameras, POST /ui/cameras                  the camera grid; add a camera (write)
    GET  /ui/cameras/{id}, POST /ui/cameras/{id}        edit name, location, enabled, rules (write)
    POST /ui/cameras/{id}/delete                        remove a camera (write)
    GET  /ui/incidents                                  the list, filtered by camera, class, status, time
    GET  /ui/incidents/{id}                             clip, score timeline, actions, audit trail
    POST /ui/incidents/{id}/act                         ack | false_alarm | resolve with a note (write)
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
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.background import BackgroundTask
from starlette.datastructures import FormData

from bigsister_ray.config import AlertRule
from bigsister_ray.serve.context import ServeContext
from bigsister_ray.serve.ui.plot import timeline_svg
from bigsister_ray.serve.ui.sessions import (
    CONSOLE_PREFIX,
    COOKIE_NAME,
    CSRF_FIELD,
    ConsoleSession,
    SessionCodec,
    csrf_ok,
    safe_next,
)

__all__ = ["make_console_router", "Console"]

log = logging.getLogger("ray.serve")

P = CONSOLE_PREFIX
STATUSES = ("open", "acknowledged", "false_alarm", "resolved")
ACTION_LABELS = {"ack": "Ack", "false_alarm": "False alarm", "resolve": "Resolve"}
PAGE_SIZE = 50
#: The console's static files and their types.
STATIC = {"console.css": "text/css", "console.js": "text/javascript"}


# ---- rendering --------------------------------------------------------------------------------------------------
def _ago(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return "never"
    now = now or datetime.now(timezone.utc)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    s = max(0.0, (now - value).total_seconds())
    if s < 90:
        return f"{s:.0f} s ago"
    if s < 90 * 60:
        return f"{s / 60:.0f} min ago"
    if s < 36 * 3600:
        return f"{s / 3600:.1f} h ago"
    return f"{s / 86400:.1f} days ago"


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("bigsister_ray.serve.ui", "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["ago"] = _ago
    env.filters["when"] = _when
    env.globals.update(P=P, CSRF_FIELD=CSRF_FIELD, ACTION_LABELS=ACTION_LABELS, STATUSES=STATUSES)
    return env


class Redirect(Exception):
    """Raised by a check to answer with a redirect (to the login page) instead of the page."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


class Refused(Exception):
    """Raised by a check to answer with an error page: ``status`` and what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Console:
    """What every console page needs: the service's context, the session codec, the templates, the link checker."""

    def __init__(self, ctx: ServeContext) -> None:
        self.ctx = ctx
        self.codec = SessionCodec.from_settings(ctx.settings, ctx.authenticator)
        self.env = _environment()
        self._links: Any = None

    # ---- sessions ----------------------------------------------------------------------------------------------
    def session(self, request: Request) -> ConsoleSession | None:
        return self.codec.loads(request.cookies.get(COOKIE_NAME))

    def secure(self, request: Request) -> bool:
        mode = self.ctx.settings.serve.ui.secure_cookies
        if mode != "auto":
            return mode == "always"
        return request.url.scheme == "https" or str(self.ctx.settings.serve.public_url).startswith("https://")

    def set_cookie(self, response: Response, request: Request, session: ConsoleSession) -> None:
        response.set_cookie(COOKIE_NAME, self.codec.dumps(session), max_age=int(self.codec.ttl_s), path=P,
                            httponly=True, samesite="lax", secure=self.secure(request))

    def login_url(self, request: Request) -> str:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return f"{P}/login?{urlencode({'next': target})}"

    def operator(self, request: Request, *, write: bool = False) -> ConsoleSession:
        """The logged-in operator, or :class:`Redirect` to the login page; :class:`Refused` (403) when ``write`` is
        needed and the key only reads."""
        session = self.session(request)
        if session is None or not session.operator:
            raise Redirect(self.login_url(request))
        if write and not session.can_act:
            raise Refused(403, f"the key {session.user!r} may only read: log in with a write key to change anything")
        return session

    async def form(self, request: Request, session: ConsoleSession | None) -> FormData:
        """The posted form, after its token was checked against ``session``'s (:class:`Refused` 403 otherwise)."""
        form = await request.form()
        if not csrf_ok(session, form.get(CSRF_FIELD)):
            raise Refused(403, "the form's security token is missing or out of date: nothing was changed. Reload the "
                               "page and submit the form again")
        return form

    @property
    def links(self) -> Any:
        if self._links is None:
            from bigsister_ray.alerts.links import LinkSigner

            self._links = LinkSigner.from_settings(self.ctx.settings)
        return self._links

    # ---- responses -----------------------------------------------------------------------------------------------
    def render(self, request: Request, session: ConsoleSession | None, template: str, status: int = 200,
               **context: Any) -> HTMLResponse:
        session = session or ConsoleSession.anonymous()
        html = self.env.get_template(template).render(request=request, session=session, csrf=session.csrf,
                                                     nav=context.pop("nav", ""), **context)
        response = HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        if self.session(request) != session:
            self.set_cookie(response, request, session)
        return response

    def refused(self, request: Request, err: Refused) -> HTMLResponse:
        return self.render(request, self.session(request), "error.html", status=err.status, message=err.message)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _guarded(console: Console):
    """Wrap a page handler: :class:`Redirect` and :class:`Refused` become their responses."""

    def wrap(fn):
        import functools

        @functools.wraps(fn)
        async def handler(request: Request, *args: Any, **kwargs: Any) -> Response:
            try:
                return await fn(request, *args, **kwargs)
            except Redirect as r:
                return _redirect(r.url)
            except Refused as err:
                return console.refused(request, err)

        return handler

    return wrap


# ---- helpers over the service's own functions -------------------------------------------------------------------
def _parse_time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as err:
        raise Refused(400, f"{name}: expected a date and time such as 2026-01-31T08:00, got {value[:40]!r}") from err
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _rules_from_form(form: FormData, labels: list[str]) -> dict[str, Any]:
    """The camera's own rules from its form (``rule-<label>-<field>``), as ``PATCH /streams/{id}`` takes them: a class
    with every field empty and watched keeps the deployment's rule (left out); an unwatched class is
    ``{"enabled": false}``."""
    rules: dict[str, Any] = {}
    for label in labels:
        rule: dict[str, Any] = {}
        if form.get(f"rule-{label}-watch") is None:
            rule["enabled"] = False
        for fld, cast in (("threshold", float), ("k", int), ("n", int), ("cooldown_s", float)):
            raw = str(form.get(f"rule-{label}-{fld}") or "").strip()
            if raw:
                try:
                    rule[fld] = cast(raw)
                except ValueError as err:
                    raise Refused(400, f"rule for {label!r}: {fld} must be a number, got {raw[:20]!r}: nothing was "
                                       "changed") from err
        hours = [h.strip() for h in str(form.get(f"rule-{label}-active_hours") or "").split(",") if h.strip()]
        if hours:
            rule["active_hours"] = hours
        zone = str(form.get(f"rule-{label}-timezone") or "").strip()
        if zone and (rule or zone != "UTC"):
            rule["timezone"] = zone
        if rule:
            rules[label] = rule
    return rules


def _rules_for_form(rules: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The camera's stored rules (``AlertRule`` per class) as the form's field values."""
    out: dict[str, dict[str, Any]] = {}
    for label, rule in rules.items():
        data = rule.model_dump() if hasattr(rule, "model_dump") else dict(rule)
        data["active_hours"] = ", ".join(data.get("active_hours") or [])
        out[label] = data
    return out


def _http_detail(err: HTTPException) -> str:
    detail = err.detail
    if isinstance(detail, list):  # pydantic errors
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', ())[1:])}: {d.get('msg')}" for d in detail if isinstance(d, dict))
    return str(detail)


def make_console_router(ctx: ServeContext) -> APIRouter:
    """The ``/ui`` pages over ``ctx`` (the Ingress's own context: its store, handles and settings)."""
    console = Console(ctx)
    router = APIRouter(prefix=P, include_in_schema=False)
    guarded = _guarded(console)

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
        return _redirect(f"{P}/incidents")

    @router.get("/login")
    @guarded
    async def login_page(request: Request) -> Response:
        session = console.session(request)
        target = safe_next(request.query_params.get("next"))
        if session is not None and session.operator:
            return _redirect(target)
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
        response = _redirect(target)
        console.set_cookie(response, request, ConsoleSession.login(principal.name, principal.scope))
        log.info("console: %s logged in (%s)", principal.name, principal.scope)
        return response

    @router.post("/logout")
    @guarded
    async def logout(request: Request) -> Response:
        await console.form(request, console.session(request))
        response = _redirect(f"{P}/login")
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
            return await _cameras_page(request, session, err.status_code, f"the camera was not added: {_http_detail(err)}", values)
        return _redirect(f"{P}/cameras")

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
                              labels=await _labels(), rules=_rules_for_form(getattr(out, "rules", {}) or {}),
                              error=error, defaults=AlertRule())

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
                               rules=_rules_from_form(form, await _labels()))
            await patch_stream(stream_id, body, ctx)
        except ValidationError as err:
            msg = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
            return await _camera_page(request, session, stream_id, 400, f"nothing was changed: {msg}")
        except HTTPException as err:
            return await _camera_page(request, session, stream_id, err.status_code, f"nothing was changed: {_http_detail(err)}")
        return _redirect(f"{P}/cameras/{stream_id}?saved=1")

    @router.post("/cameras/{stream_id}/delete")
    @guarded
    async def delete_camera(request: Request, stream_id: str) -> Response:
        from bigsister_ray.serve.routers.streams import delete_stream

        session = console.operator(request, write=True)
        await console.form(request, session)
        try:
            await delete_stream(stream_id, ctx)
        except HTTPException as err:
            raise Refused(err.status_code, _http_detail(err)) from err
        return _redirect(f"{P}/cameras")

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
        since, until = _parse_time(filters["since"], "since"), _parse_time(filters["until"], "until")
        items, total = await asyncio.to_thread(
            ctx.store.list_incidents, stream_id=filters["camera"] or None, label=filters["label"] or None,
            status=filters["status"] or None, since=since, until=until, limit=PAGE_SIZE, offset=offset)
        streams = await asyncio.to_thread(ctx.store.list_streams, True)
        base = {k: v for k, v in filters.items() if v}
        pages = {"prev": f"?{urlencode({**base, 'offset': max(0, offset - PAGE_SIZE)})}" if offset > 0 else None,
                 "next": f"?{urlencode({**base, 'offset': offset + PAGE_SIZE})}" if offset + PAGE_SIZE < total else None}
        return console.render(request, session, "incidents.html", nav="incidents", refresh=5, items=items, total=total,
                              offset=offset, filters=filters, streams=streams, labels=await _labels(), pages=pages)

    async def _viewer(request: Request, incident_id: int) -> tuple[ConsoleSession, bool]:
        """The session that may see the incident (an operator, or a signed link's viewer) and whether it is new."""
        from bigsister_ray.alerts.links import LinkError

        session = console.session(request)
        if session is not None and session.sees_incident(incident_id):
            return session, False
        q = request.query_params
        if "sig" in q or "exp" in q:
            try:
                console.links.verify(request.url.path, q.get("exp"), q.get("sig"))
            except LinkError as err:
                log.info("console: %s", err)
                raise Redirect(f"{P}/login?{urlencode({'next': request.url.path, 'why': 'link'})}") from err
            base = session if session is not None else ConsoleSession.anonymous()
            return base.as_link_viewer(incident_id), True
        raise Redirect(console.login_url(request))

    @router.get("/incidents/{incident_id}")
    @guarded
    async def incident(request: Request, incident_id: int) -> Response:
        session, fresh = await _viewer(request, incident_id)
        return await _incident_page(request, session, incident_id, set_cookie=fresh)

    async def _incident_page(request: Request, session: ConsoleSession, incident_id: int, *, status: int = 200,
                             error: str | None = None, set_cookie: bool = False) -> Response:
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
        if set_cookie:
            console.set_cookie(response, request, session)
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
        response = _redirect(f"{P}/incidents/{incident_id}")
        response.background = BackgroundTask(_refresh_slack, request, incident_id)
        return response

    def _refresh_slack(request: Request, incident_id: int) -> None:
        """Rewrite the incident's Slack alert to show the action (as a Slack button press does), after the answer."""
        try:
            from bigsister_ray.serve.routers.slack import _refresh_later
        except ImportError:  # a version without Slack actions: the message keeps its first text
            return
        _refresh_later(request, ctx, incident_id, None)

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
            raise Refused(err.status_code, _http_detail(err)) from err
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
