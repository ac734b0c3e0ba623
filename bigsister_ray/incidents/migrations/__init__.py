"""Alembic migrations of the incidents database (``env.py`` and ``versions/``), shipped inside the package so an
installed wheel can upgrade its database: ``bigsister db upgrade`` or :func:`bigsister_ray.incidents.migrate.upgrade`.

A new revision: change the models, then write ``versions/NNNN_<what>.py`` with ``revision = "NNNN"`` and
``down_revision`` the previous one (``alembic.autogenerate.produce_migrations`` against a database at head
drafts its operations); tests/unit/test_migrations.py fails until the upgraded schema matches the models.
"""
