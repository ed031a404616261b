"""node agents: node-bound tokens, registrations and reports, health verdicts and events

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("node", sa.String(length=63), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(length=32), nullable=True),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("secret_hash"),
    )
    with op.batch_alter_table("agent_tokens", schema=None) as batch_op:
        batch_op.create_index("ix_agent_tokens_node", ["node"], unique=False)

    op.create_table(
        "agents",
        sa.Column("node", sa.String(length=63), nullable=False),
        sa.Column("session", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=253), nullable=False),
        sa.Column("probe_port", sa.Integer(), nullable=False),
        sa.Column("metrics_port", sa.Integer(), nullable=True),
        sa.Column("flavor", sa.String(length=63), nullable=True),
        sa.Column("accelerators", sa.Integer(), nullable=False),
        sa.Column("zone", sa.String(length=63), nullable=True),
        sa.Column("spine", sa.String(length=63), nullable=True),
        sa.Column("rack", sa.String(length=63), nullable=True),
        sa.Column("registered_at", sa.Float(), nullable=False),
        sa.Column("last_seen_at", sa.Float(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("last_sent_at", sa.Float(), nullable=False),
        sa.Column("report", sa.Text(), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("node"),
    )
    op.create_table(
        "health_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=160), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), server_default="", nullable=False),
        sa.Column("evidence", sa.Text(), server_default="{}", nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("health_events", schema=None) as batch_op:
        batch_op.create_index("ix_health_events_subject", ["subject"], unique=False)

    op.create_table(
        "node_verdicts",
        sa.Column("node", sa.String(length=63), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("since", sa.Float(), nullable=True),
        sa.Column("reasons", sa.Text(), server_default="[]", nullable=False),
        sa.Column("evidence", sa.Text(), server_default="{}", nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("node"),
    )


def downgrade() -> None:
    op.drop_table("node_verdicts")
    with op.batch_alter_table("health_events", schema=None) as batch_op:
        batch_op.drop_index("ix_health_events_subject")
    op.drop_table("health_events")
    op.drop_table("agents")
    with op.batch_alter_table("agent_tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_agent_tokens_node")
    op.drop_table("agent_tokens")
