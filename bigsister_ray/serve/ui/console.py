"""What every console page shares: the session cookie and its checks, the templates, the error answers, and
the reading of the forms into what the service's functions take. The pages themselves are in :mod:`.routes`."""

from __future__ import annotations

import functools
import logging
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.datastructures import FormData

from bigsister_ray.serve.context import ServeContext
from bigsister_ray.serve.ui.sessions import (
    CONSOLE_PREFIX,
    COOKIE_NAME,
    CSRF_FIELD,
    ConsoleSession,
    SessionCodec,
    csrf_ok,
)

__all__ = ["P", "STATUSES", "ACTION_LABELS", "PAGE_SIZE", "STATIC", "Console", "Redirect", "Refused", "redirect",
           "guarded_by", "parse_time", "rules_from_form", "rules_for_form", "http_detail"]

log = logging.getLogger("ray.serve")

P = CONSOLE_PREFIX
STATUSES = ("open", "acknowledged", "false_alarm", "resolved")
ACTION_LABELS = {"ack": "Ack", "false_alarm": "False alarm", "resolve": "Resolve", "reopen": "Reopen"}
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


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def guarded_by(console: Console):
    """Wrap a page handler: :class:`Redirect` and :class:`Refused` become their responses."""

    def wrap(fn):
        @functools.wraps(fn)
        async def handler(request: Request, *args: Any, **kwargs: Any) -> Response:
            try:
                return await fn(request, *args, **kwargs)
            except Redirect as r:
                return redirect(r.url)
            except Refused as err:
                return console.refused(request, err)

        return handler

    return wrap


# ---- helpers over the service's own functions -------------------------------------------------------------------
def parse_time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as err:
        raise Refused(400, f"{name}: expected a date and time such as 2026-01-31T08:00, got {value[:40]!r}") from err
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def rules_from_form(form: FormData, labels: list[str]) -> dict[str, Any]:
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


def rules_for_form(rules: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The camera's stored rules (``AlertRule`` per class) as the form's field values."""
    out: dict[str, dict[str, Any]] = {}
    for label, rule in rules.items():
        data = rule.model_dump() if hasattr(rule, "model_dump") else dict(rule)
        data["active_hours"] = ", ".join(data.get("active_hours") or [])
        out[label] = data
    return out


def http_detail(err: HTTPException) -> str:
    detail = err.detail
    if isinstance(detail, list):  # pydantic errors
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', ())[1:])}: {d.get('msg')}" for d in detail if isinstance(d, dict))
    return str(detail)
