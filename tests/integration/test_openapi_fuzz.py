"""The whole OpenAPI of the in-process ingress, fuzzed with schemathesis: no input gives a 5xx.

No Ray: :func:`bigsister_ray.serve.api.create_api` with a real SQLite store. The Classifier and StreamShard
handles are stand-ins whose methods answer at once with plausible values (model loaded, shard healthy, 0.5 for
every label); the test is about the Ingress's input handling, not about the deployments. Every operation is
called with a write key, and again with no key (401, never 5xx). Bounded: a few examples per operation.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings

from tests._handles import ingress_app

schemathesis = pytest.importorskip("schemathesis")

WRITE = "unit-write-key-0123456789"




@pytest.fixture()
def app(tmp_path):
    from bigsister_ray.config import Settings

    (tmp_path / "media").mkdir()
    settings = Settings(auth={"keys": [{"name": "w", "key": WRITE, "scope": "write"}]},
                        database={"url": f"sqlite:///{tmp_path / 'x.db'}"},
                        serve={"upload_max_bytes": 256 * 1024, "upload_decode_timeout_s": 10.0,
                               "streams": {"media_root": str(tmp_path / "media")}})
    return ingress_app(settings)


@pytest.mark.parametrize("headers", [{"X-API-Key": WRITE}, {}], ids=["with-key", "no-key"])
def test_no_input_gives_a_5xx(app, headers, monkeypatch):
    import socket

    def unresolved(*args, **kwargs):  # no DNS from the fuzzer's host names
        raise socket.gaierror(socket.EAI_NONAME, "not resolved in tests")

    monkeypatch.setattr(socket, "getaddrinfo", unresolved)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures, calls = [], []
    for result in schema.get_all_operations():
        operation = result.ok()

        @hsettings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def check(case):
            r = case.call(headers=headers)
            calls.append(r.status_code)
            if r.status_code >= 500:
                failures.append((case.method, case.formatted_path, r.status_code, r.text[:300]))

        check()
    assert len(calls) >= 10, calls  # the fuzzer reached the operations
    if not headers:
        assert set(calls) <= {401, 200, 404, 405, 422}, sorted(set(calls))
    assert not failures, failures[:5]
