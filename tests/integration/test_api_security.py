"""Every route of the real ingress app needs a key (except /healthz), with the right scope; docs per public_docs;
readiness degrades with a reason when the database is down. No Ray: the FastAPI app is built from a
ServeContext with a real SQLite store; the deployment handles are absent (so a route that got past the key
check would fail differently, never with 401/403).
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bigsister_ray.config import Settings
from bigsister_ray.incidents.store import IncidentStore
from bigsister_ray.serve.context import SIGNED_PATHS

WRITE = "unit-write-key-0123456789"
READ = "unit-read-key-0123456789"


def _app(tmp_path, public_docs: bool = True, db_url: str | None = None):
    from bigsister_ray.security.auth import Authenticator
    from bigsister_ray.serve.api import create_api
    from bigsister_ray.serve.context import ServeContext

    settings = Settings(auth={"keys": [{"name": "w", "key": WRITE, "scope": "write"},
                                       {"name": "r", "key": READ, "scope": "read"}], "public_docs": public_docs},
                        database={"url": db_url or f"sqlite:///{tmp_path / 'x.db'}"})
    store = IncidentStore(settings.database.url, busy_timeout_ms=500)
    if db_url is None:
        store.create_tables()
    ctx = ServeContext(settings=settings, store=store, shards=None, classifier=None,
                       authenticator=Authenticator.from_config(settings.auth))
    return create_api(ctx)


def _routes(app):
    """Every (method, path) of the app's OpenAPI description (the routes it serves), path parameters filled."""
    for path, ops in app.openapi()["paths"].items():
        path = path.replace("{stream_id}", "abc").replace("{incident_id}", "1")
        for method in ops:
            yield method.upper(), path


def test_every_route_but_healthz_needs_a_key_and_writes_need_write_scope(tmp_path):
    app = _app(tmp_path)
    routes = sorted(set(_routes(app)))
    assert len(routes) >= 12 and ("GET", "/readyz") in routes and ("POST", "/streams") in routes and ("POST", "/detect") in routes
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/healthz").status_code == 200
        for method, path in routes:
            if path == "/healthz" or path in SIGNED_PATHS:
                continue  # /slack/actions takes Slack's signature instead of a key: tests/integration/test_slack_actions.py
            r = c.request(method, path)
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.headers.get("www-authenticate") == "Bearer"
            r = c.request(method, path, headers={"X-API-Key": "not-a-key-0123456789"})
            assert r.status_code == 401, (method, path)
            r = c.request(method, path, headers={"Authorization": f"Bearer {READ}"})
            if method in ("GET", "HEAD"):
                assert r.status_code not in (401, 403), (method, path, r.status_code)
            else:
                assert r.status_code == 403 and "'r'" in r.json()["detail"], (method, path, r.status_code)
                r = c.request(method, path, headers={"X-API-Key": WRITE})
                assert r.status_code not in (401, 403), (method, path, r.status_code)


def test_readyz_needs_a_read_key(tmp_path):
    with TestClient(_app(tmp_path), raise_server_exceptions=False) as c:
        assert c.get("/readyz").status_code == 401
        r = c.get("/readyz", headers={"X-API-Key": READ})
        assert r.status_code == 503  # no Classifier here: not ready, and says why
        assert "Classifier" in r.json()["detail"]["model"]


@pytest.mark.parametrize("public", [True, False])
def test_docs_are_public_only_with_public_docs(tmp_path, public):
    with TestClient(_app(tmp_path, public_docs=public)) as c:
        for path in ("/docs", "/openapi.json", "/docs/oauth2-redirect"):
            r = c.get(path)
            assert r.status_code == (200 if public else 401), (path, r.status_code)
            assert c.get(path, headers={"X-API-Key": READ}).status_code == 200, path
        if not public:
            assert c.get("/openapi.json", headers={"X-API-Key": "wrong-0123456789"}).status_code == 401


def test_readiness_degrades_with_the_reason_when_the_database_is_down(tmp_path):
    app = _app(tmp_path, db_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    with TestClient(app) as c:
        r = c.get("/readyz", headers={"X-API-Key": READ})
    assert r.status_code == 503
    body = r.json()
    assert body["ready"] is False and body["database"] is False
    assert "does not answer" in body["detail"]["database"]
    assert "127.0.0.1:1" in body["detail"]["database"]
