"""Alembic environment of the incidents database.

:func:`bigsister_ray.incidents.migrate.upgrade` passes an open connection in ``config.attributes["connection"]``
(inside its transaction and lock); run by the ``alembic`` command instead, ``sqlalchemy.url`` names the database.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from bigsister_ray.incidents.migrate import VERSION_TABLE, target_metadata

config = context.config


def _configure(connection) -> None:  # noqa: ANN001
    context.configure(
        connection=connection,
        target_metadata=target_metadata(),
        version_table=VERSION_TABLE,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata(),
                      version_table=VERSION_TABLE, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    _configure(config.attributes["connection"])
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.begin() as conn:
            _configure(conn)
    finally:
        engine.dispose()
