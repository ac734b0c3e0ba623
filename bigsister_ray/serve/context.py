"""What the HTTP routes need, in one object the app factory takes (so tests can build the API directly).

:class:`ServeContext` holds the settings, the incidents store (and its stream leases), the deployment handles and the request
authenticator. Routes get it with the :func:`get_ctx` dependency; :func:`authorize` checks the API key with
the scope the HTTP method needs (read for GET/HEAD/OPTIONS, write for everything else).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer

from bigsister_ray.config import Settings
from bigsister_ray.security.auth import AccessDenied

__all__ = ["ServeContext", "get_ctx", "authorize", "is_console_path", "PUBLIC_PATHS", "DOCS_PATHS", "CONSOLE_PREFIX",
           "SIGNED_PATHS"]

#: The route that always answers without a key: liveness (says nothing but "the process answers").
PUBLIC_PATHS = frozenset({"/healthz"})
#: Routes whose caller cannot send a key and signs each request instead (Slack's interactivity: its route checks
#: the signature); the guard still limits their bodies.
SIGNED_PATHS = frozenset({"/slack/actions"})
#: The OpenAPI description: public only when ``auth.public_docs`` (the published contract; nothing secret).
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
#: The web console (bigsister_ray.serve.ui): authenticated by its session cookie, so no key is asked for here.
CONSOLE_PREFIX = "/ui"


@dataclass
class ServeContext:
    """Dependencies of the ingress routes."""

    settings: Settings
    store: Any
    shards: Any
    classifier: Any
    authenticator: Any
    model_info: dict[str, Any] = field(default_factory=dict)
    leases: Any = None

    def __post_init__(self) -> None:
        if self.leases is None and self.store is not None:
            from bigsister_ray.incidents.leases import LeaseStore

            self.leases = LeaseStore(self.store)

    async def classifier_info(self) -> dict[str, Any]:
        """The Classifier's ``info()`` (labels, clip, thresholds, batch size), cached after the first answer."""
        if not self.model_info:
            self.model_info = await self.classifier.info.remote()
        return self.model_info


def is_console_path(path: str) -> bool:
    """A web console path (``/ui``, ``/ui/...``): its router checks the session cookie itself, not a key header."""
    return path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")


def get_ctx(request: Request) -> ServeContext:
    return request.app.state.ctx


#: The two ways to send a key, as the OpenAPI declares them (``/docs`` gets an Authorize button).
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key (read or write scope).")
BEARER = HTTPBearer(auto_error=False, description="The same API key as `Authorization: Bearer <key>`.")


def authorize(request: Request, _key: Any = Security(API_KEY_HEADER), _bearer: Any = Security(BEARER)) -> Any:
    """FastAPI dependency: the caller's principal; 401 without a valid key, 403 when its scope is too small.

    The key is read from the headers by :meth:`~bigsister_ray.security.auth.Authenticator.check` (the two
    security parameters only declare the schemes). The Ingress's :class:`~bigsister_ray.serve.guard.IngressGuard`
    applies this same function before the body is read; as a dependency it checks again and hands the
    principal to the routes.
    """
    ctx: ServeContext = request.app.state.ctx
    auth = ctx.authenticator
    path = request.url.path
    if auth is None or path in PUBLIC_PATHS or path in SIGNED_PATHS or is_console_path(path):
        return None
    if path in DOCS_PATHS and ctx.settings.auth.public_docs:
        return None
    try:
        return auth.check(request.headers, request.method)
    except AccessDenied as err:
        raise HTTPException(status_code=err.status, detail=err.detail, headers=err.headers or None) from err
