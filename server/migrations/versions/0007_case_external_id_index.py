"""Residents track a report by the city's own request number (LA `1-1523590121`): an index
on the case's external id, so that look-up is not a scan of every case.

Revision ID: 0007
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_case_external_id", "case_record", ["external_id"])


def downgrade() -> None:
    op.drop_index("ix_case_external_id", table_name="case_record")
