"""The operator's web console under ``/ui``: pages rendered on the server (Jinja2 templates), forms with CSRF
tokens, sessions in a signed cookie. :func:`make_console_router` builds it over the Ingress's context."""

from bigsister_ray.serve.ui.routes import make_console_router
from bigsister_ray.serve.ui.sessions import CONSOLE_PREFIX, ConsoleSession, SessionCodec

__all__ = ["make_console_router", "CONSOLE_PREFIX", "ConsoleSession", "SessionCodec"]
