"""A database of its own on the test PostgreSQL server, for tests that need a clean schema.

``.ci/start_postgres.sh`` starts the server and prints ``BIGSISTER_TEST_POSTGRES_URL``; without it the
PostgreSQL cases skip. tests/conftest.py clears BIGSISTER_* per test, so the URL is read at import time.
"""

from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

__all__ = ["PG_URL_ENV", "PG_URL", "fresh_postgres"]

PG_URL_ENV = "BIGSISTER_TEST_POSTGRES_URL"
PG_URL = os.environ.get(PG_URL_ENV)


def fresh_postgres(name: str) -> str:
    """Drop and create database ``name`` on the test server; return its URL. Skips without a server."""
    if not PG_URL:
        pytest.skip(f"{PG_URL_ENV} is not set (eval \"$(bash .ci/start_postgres.sh)\" starts a throwaway server)")
    base = make_url(PG_URL).set(drivername="postgresql+psycopg")
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)
