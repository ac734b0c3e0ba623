"""Stream leases (owner, node, fencing token, expiry, saved state) and shard heartbeats.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stream_leases",
        sa.Column("stream_id", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=True),
        sa.Column("node_id", sa.String(length=200), nullable=True),
        sa.Column("token", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("stream_id"),
    )
    op.create_index(op.f("ix_stream_leases_expires_at"), "stream_leases", ["expires_at"], unique=False)
    op.create_table(
        "stream_shards",
        sa.Column("shard_id", sa.String(length=200), nullable=False),
        sa.Column("node_id", sa.String(length=200), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("load", sa.Integer(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("shard_id"),
    )
    op.create_index(op.f("ix_stream_shards_heartbeat_at"), "stream_shards", ["heartbeat_at"], unique=False)


def downgrade() -> None:
    op.drop_table("stream_shards")
    op.drop_table("stream_leases")
