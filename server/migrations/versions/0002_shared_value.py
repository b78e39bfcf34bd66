"""shared_value: state every worker and host shares (token secret, rate-limit counts)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'shared_value',
        sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column('value', sa.LargeBinary(), nullable=False),
        sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('key'),
    )
    with op.batch_alter_table('shared_value', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_shared_value_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('shared_value', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_shared_value_expires_at'))
    op.drop_table('shared_value')
