"""``PATCH /streams/{id}`` on the real Ingress app (in-process, real SQLite): what it changes, how it validates,
and what disabling does to the stream's lease; the rules it stores are the rules the engine applies."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from bigsister_ray.alerts.rules import RuleEngine, WindowScore, overrides_from_options
from bigsister_ray.config import Settings
from bigsister_ray.incidents.leases import LeaseStore
from tests._handles import ingress_app

WRITE = "patch-write-key-0123456789"
READ = "patch-read-key-0123456789"
T0 = datetime(2026, 5, 4, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def api(tmp_path):
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "cam.mp4").write_bytes(b"\0")
    settings = Settings(auth={"keys": [{"name": "w", "key": WRITE, "scope": "write"},
                                       {"name": "r", "key": READ, "scope": "read"}]},
                        serve={"streams": {"media_root": str(tmp_path / "media")}},
                        database={"url": f"sqlite:///{tmp_path / 'patch.db'}"})
    app = ingress_app(settings)
    with TestClient(app, headers={"X-API-Key": WRITE}) as client:
        sid = client.post("/streams", json={"url": "cam.mp4", "name": "Gate", "location": "north"}).json()["id"]
        yield client, app.state.ctx.store, sid


def test_patch_changes_name_location_pace_and_rules(api):
    client, store, sid = api
    rules = {"fight": {"threshold": 0.8, "k": 2, "n": 3, "cooldown_s": 30, "active_hours": ["08:00-18:00"],
                       "timezone": "Asia/Seoul"},
             "*": {"enabled": False}}
    res = client.patch(f"/streams/{sid}", json={"name": "Gate 2", "location": None, "realtime": False, "rules": rules})
    assert res.status_code == 200, res.text
    body = res.json()
    assert (body["name"], body["location"], body["realtime"], body["enabled"]) == ("Gate 2", None, False, True)
    assert body["rules"]["fight"]["k"] == 2 and body["rules"]["*"]["enabled"] is False
    assert client.get(f"/streams/{sid}", headers={"X-API-Key": READ}).json()["rules"] == body["rules"]
    stored = store.get_stream(sid)
    assert stored.options["alerts"]["fight"] == rules["fight"] and stored.options["realtime"] is False
    assert stored.options["registered_by"] == "w"  # what POST recorded stays
    # only the fields given change
    again = client.patch(f"/streams/{sid}", json={"location": "south"}).json()
    assert (again["name"], again["location"], again["rules"]["fight"]["threshold"]) == ("Gate 2", "south", 0.8)
    assert client.patch(f"/streams/{sid}", json={"rules": {}}).json()["rules"] == {}
    assert "alerts" not in store.get_stream(sid).options


@pytest.mark.parametrize("body, says", [
    ({"rules": {"fight": {"k": 4, "n": 3}}}, "k (4) must be <= n (3)"),
    ({"rules": {"fight": {"threshold": 1.5}}}, "less than or equal to 1"),
    ({"rules": {"fight": {"active_hours": ["8-18"]}}}, "expected HH:MM-HH:MM"),
    ({"rules": {"fight": {"timezone": "Mars/Olympus"}}}, "expected an IANA zone"),
    ({"rules": {"fight": {"treshold": 0.5}}}, "treshold"),
    ({"rules": {"dance": {"k": 1, "n": 1}}}, "dance"),
    ({"name": ""}, "at least 1 character"),
    ({"name": None}, "name: expected a value"),
    ({"url": "rtsp://elsewhere/cam"}, "url"),
])
def test_bad_values_are_refused_with_what_is_wrong_and_change_nothing(api, body, says):
    client, store, sid = api
    before = store.get_stream(sid)
    res = client.patch(f"/streams/{sid}", json=body)
    assert res.status_code == 422 and says in res.text, res.text
    after = store.get_stream(sid)
    assert (after.name, after.options, after.updated_at) == (before.name, before.options, before.updated_at)


def test_patch_needs_a_write_key_and_a_known_stream(api):
    client, _, sid = api
    assert client.patch(f"/streams/{sid}", json={"name": "x"}, headers={"X-API-Key": READ}).status_code == 403
    assert client.patch("/streams/nope", json={"name": "x"}).status_code == 404


def test_disabling_frees_the_lease_and_no_shard_claims_it_until_enabled(api):
    client, store, sid = api
    leases = LeaseStore(store)
    fence = leases.claim(sid, "shard-a", "node-1", 30)
    assert fence is not None
    res = client.patch(f"/streams/{sid}", json={"enabled": False})
    assert res.status_code == 200 and res.json()["enabled"] is False
    assert res.json()["status"]["state"] == "stopped" and "enabled: true" in res.json()["status"]["last_error"]
    assert leases.renew("shard-a", [fence], 30) == set()  # its owner stops it at the next renewal
    assert sid not in leases.claimable(10) and leases.claim(sid, "shard-b", "node-2", 30) is None
    assert client.patch(f"/streams/{sid}", json={"enabled": True}).json()["enabled"] is True
    assert leases.claimable(10) == [sid]
    again = leases.claim(sid, "shard-b", "node-2", 30)
    assert again is not None and again.token == fence.token + 1


def test_the_patched_rules_are_what_the_engine_applies(api):
    """The options a PATCH stores, read the way a shard reads them, change which windows open an incident."""
    client, store, sid = api
    engine = RuleEngine(["fight", "normal"], Settings().alerts)

    def incidents_over(windows: int, first: int) -> int:
        overrides = overrides_from_options(store.get_stream(sid).options)
        opened = 0
        for i in range(first, first + windows):
            w = WindowScore(i * 0.5, i * 0.5 + 1, {"fight": 0.65, "normal": 0.35}, at=T0 + timedelta(seconds=i))
            opened += sum(e.kind == "opened" for e in engine.update(sid, w, overrides or None))
        return opened

    assert incidents_over(10, 0) == 1  # the defaults (threshold 0.6, 3 of 5) open one
    engine.reset(sid)
    client.patch(f"/streams/{sid}", json={"rules": {"fight": {"threshold": 0.7}}})
    assert incidents_over(10, 100) == 0
    client.patch(f"/streams/{sid}", json={"rules": {"fight": {"threshold": 0.6, "active_hours": ["22:00-06:00"]}}})
    assert incidents_over(10, 200) == 0  # 12:00 UTC is outside the active hours
    client.patch(f"/streams/{sid}", json={"rules": {"fight": {"threshold": 0.6, "active_hours": ["20:00-22:00"],
                                                              "timezone": "Asia/Seoul"}}})
    assert incidents_over(10, 300) == 1  # 12:00 UTC is 21:00 in Seoul
    engine.reset(sid)
    client.patch(f"/streams/{sid}", json={"rules": {"*": {"enabled": False}}})
    assert incidents_over(10, 400) == 0
