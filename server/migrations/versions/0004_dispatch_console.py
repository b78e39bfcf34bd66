"""The dispatcher console: each crew's yard, each job's place in its crew's route

Revision ID: 0004
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("crew", schema=None) as batch_op:
        batch_op.add_column(sa.Column("yard_lat", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("yard_lon", sa.Float(), nullable=True))
    with op.batch_alter_table("work_order", schema=None) as batch_op:
        batch_op.add_column(sa.Column("route_position", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("work_order", schema=None) as batch_op:
        batch_op.drop_column("route_position")
    with op.batch_alter_table("crew", schema=None) as batch_op:
        batch_op.drop_column("yard_lon")
        batch_op.drop_column("yard_lat")
