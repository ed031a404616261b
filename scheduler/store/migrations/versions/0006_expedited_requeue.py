"""expedited requeue: a job back after an infrastructure failure goes first in its org,
offered the nodes its attempt still had

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expedite", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("prefer_nodes", sa.Text(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("prefer_nodes")
        batch_op.drop_column("expedite")
