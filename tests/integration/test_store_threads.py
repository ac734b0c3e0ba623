"""The incident store under concurrent senders and writers: threads write at once, nothing is lost or claimed twice,
and a sender skips rows another has locked (PostgreSQL)."""

from __future__ import annotations

import threading

import pytest

from tests.unit.test_incident_store import T0, _fresh, db_url, make, store  # noqa: F401 (shared fixtures)


def test_several_threads_write_at_once(store):
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            for i in range(20):
                store.record_event(make(f"t{t}-{i}"))
        except BaseException as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.list_incidents()[1] == 80


def test_claim_due_skips_rows_another_sender_has_locked(db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("SKIP LOCKED is PostgreSQL's; SQLite has one writer at a time")
    from sqlalchemy import text

    store = _fresh(db_url)
    ids = [store.record_event(make(f"s{i}"), now=T0) for i in range(3)]
    other = store.engine.connect()
    try:
        other.execute(text("SELECT incident_id FROM incident_deliveries WHERE incident_id = :id AND kind = 'alert' "
                           "FOR UPDATE"), {"id": ids[0]})  # a sender mid-claim
        result: dict = {}
        worker = threading.Thread(target=lambda: result.update(store.claim_due("alert", "B", 60, now=T0)))
        worker.start()
        worker.join(20)
        assert not worker.is_alive(), "claim_due waited for a locked row instead of skipping it"
        assert list(result) == ids[1:]
    finally:
        other.rollback()
        other.close()
        store.dispose()
