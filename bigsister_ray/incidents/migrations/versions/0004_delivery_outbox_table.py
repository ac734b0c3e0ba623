"""The delivery outbox becomes its own table, one row per incident and kind (alert, close, clip), replacing the
twin alert_* and close_* columns of incident; their state moves over.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: The per-kind columns of incident before this revision (without their prefix), in the new table's order.
FIELDS = ("status", "reason", "attempts", "next_attempt_at", "lease_owner", "lease_until", "sent_at")


def upgrade() -> None:
    op.create_table(
        "incident_deliveries",
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["incident_id"], ["incident.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("incident_id", "kind"),
    )
    for column in ("status", "next_attempt_at", "sent_at"):
        op.create_index(op.f(f"ix_incident_deliveries_{column}"), "incident_deliveries", [column], unique=False)
    columns = ", ".join(FIELDS)
    for kind in ("alert", "close"):
        source = ", ".join(f"{kind}_{f}" for f in FIELDS)
        op.execute(f"INSERT INTO incident_deliveries (incident_id, kind, {columns}, updated_at) "
                   f"SELECT id, '{kind}', {source}, updated_at FROM incident WHERE {kind}_status IS NOT NULL")
    for column in ("alert_next_attempt_at", "alert_status", "close_status"):
        op.drop_index(op.f(f"ix_incident_{column}"), table_name="incident")
    with op.batch_alter_table("incident") as batch:
        for kind in ("alert", "close"):
            for f in FIELDS:
                batch.drop_column(f"{kind}_{f}")


def downgrade() -> None:
    def ts(name: str) -> sa.Column:
        return sa.Column(name, sa.DateTime(timezone=True), nullable=True)

    with op.batch_alter_table("incident") as batch:
        for kind in ("alert", "close"):
            batch.add_column(sa.Column(f"{kind}_status", sa.String(length=16), nullable=kind == "close",
                                       server_default="pending" if kind == "alert" else None))
            batch.add_column(sa.Column(f"{kind}_reason", sa.String(), nullable=True))
            batch.add_column(sa.Column(f"{kind}_attempts", sa.Integer(), nullable=False, server_default="0"))
            for name in ("next_attempt_at", "lease_until", "sent_at"):
                batch.add_column(ts(f"{kind}_{name}"))
            batch.add_column(sa.Column(f"{kind}_lease_owner", sa.String(length=64), nullable=True))
    for kind in ("alert", "close"):
        sets = ", ".join(f"{kind}_{f} = (SELECT d.{f} FROM incident_deliveries d WHERE d.incident_id = incident.id "
                         f"AND d.kind = '{kind}')" for f in FIELDS if not (kind == "alert" and f in ("status", "attempts")))
        op.execute(f"UPDATE incident SET {sets}")
        for f in ("status", "attempts") if kind == "alert" else ():
            op.execute(f"UPDATE incident SET alert_{f} = COALESCE((SELECT d.{f} FROM incident_deliveries d "
                       f"WHERE d.incident_id = incident.id AND d.kind = 'alert'), alert_{f})")
    for column in ("alert_next_attempt_at", "alert_status", "close_status"):
        op.create_index(op.f(f"ix_incident_{column}"), "incident", [column], unique=False)
    op.drop_table("incident_deliveries")
