"""Work-order list indexes: filters by service type or priority, newest first

The dispatcher's list filters by service type or priority and reads newest first. With
only (service_code, is_open) SQLite sorted every row of a common type to find the newest 50
(30 ms for LA's bulky items); (service_code, id) and (priority, id) hand them over in order.

Revision ID: 0008
Revises: 0001
Create Date: 2026-12-04 17:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0008'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_work_order_type_newest', 'work_order', ['service_code', 'id'])
    op.create_index('ix_work_order_priority_newest', 'work_order', ['priority', 'id'])


def downgrade() -> None:
    op.drop_index('ix_work_order_priority_newest', table_name='work_order')
    op.drop_index('ix_work_order_type_newest', table_name='work_order')
