"""Streams and incidents: the schema as the first release created it.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    def ts(name: str, nullable: bool = True) -> sa.Column:
        return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)

    op.create_table(
        "stream",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("location", sa.String(length=500), nullable=True),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("url", sa.String(), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=True),
        sa.Column("last_error", sa.String(), nullable=True),
        ts("last_frame_at"),
        ts("created_at", nullable=False),
        ts("updated_at"),
        ts("deleted_at"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_stream_deleted_at"), "stream", ["deleted_at"], unique=False)
    op.create_table(
        "incident",
        sa.Column("stream_id", sa.String(length=64), nullable=False),
        sa.Column("stream_name", sa.String(length=200), nullable=False),
        sa.Column("location", sa.String(length=500), nullable=True),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        ts("started_at", nullable=False),
        ts("ended_at"),
        sa.Column("start_s", sa.Float(), nullable=False),
        sa.Column("end_s", sa.Float(), nullable=False),
        sa.Column("peak_score", sa.Float(), nullable=False),
        sa.Column("peak_start_s", sa.Float(), nullable=False),
        sa.Column("peak_end_s", sa.Float(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_key", sa.String(length=200), nullable=False),
        sa.Column("timeline", sa.JSON(), nullable=False),
        sa.Column("snapshot", sa.LargeBinary(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        ts("status_changed_at"),
        ts("created_at", nullable=False),
        ts("updated_at", nullable=False),
        sa.Column("alert_status", sa.String(length=16), nullable=False),
        sa.Column("alert_reason", sa.String(), nullable=True),
        sa.Column("alert_attempts", sa.Integer(), nullable=False),
        ts("alert_next_attempt_at"),
        sa.Column("alert_lease_owner", sa.String(length=64), nullable=True),
        ts("alert_lease_until"),
        ts("alert_sent_at"),
        sa.Column("notifier", sa.String(length=100), nullable=True),
        sa.Column("slack_channel", sa.String(length=64), nullable=True),
        sa.Column("slack_ts", sa.String(length=64), nullable=True),
        sa.Column("close_status", sa.String(length=16), nullable=True),
        sa.Column("close_reason", sa.String(), nullable=True),
        sa.Column("close_attempts", sa.Integer(), nullable=False),
        ts("close_next_attempt_at"),
        sa.Column("close_lease_owner", sa.String(length=64), nullable=True),
        ts("close_lease_until"),
        ts("close_sent_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_key"),
    )
    for column in ("alert_next_attempt_at", "alert_status", "close_status", "label", "started_at", "status", "stream_id"):
        op.create_index(op.f(f"ix_incident_{column}"), "incident", [column], unique=False)


def downgrade() -> None:
    op.drop_table("incident")
    op.drop_table("stream")
