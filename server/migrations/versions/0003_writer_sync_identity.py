"""One writer and a sync that trusts no phone's clock: the database's sync identity and feed
horizon, the clients' clock floors, feed indexes, photo references, token keys.

Revision ID: 0003
Revises: 0001
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0003"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    identity = op.create_table(
        "sync_identity",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("database_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("horizon_txid", sa.BigInteger(), nullable=False),
        sa.Column("horizon_id", sa.BigInteger(), nullable=False),
        sa.Column("compacted_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    # The identity is created with the database: a restore carries it, a new database gets a new one.
    op.bulk_insert(identity, [{"id": 1, "database_id": uuid.uuid4().hex, "created_at": datetime.now(UTC),
                               "horizon_txid": 0, "horizon_id": 0, "compacted_at": None}])

    with op.batch_alter_table("sync_client") as batch:
        batch.add_column(sa.Column("device_floor", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("last_push_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))

    with op.batch_alter_table("sync_change") as batch:
        batch.create_index("ix_sync_change_entity", ["scope", "entity", "entity_id", "txid", "id"])
        batch.create_index("ix_sync_change_recorded", ["recorded_at"])

    op.create_table(
        "blob_ref",
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("work_order_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["work_order_id"], ["work_order.id"]),
        sa.PrimaryKeyConstraint("sha256", "work_order_id"),
    )
    with op.batch_alter_table("blob_ref") as batch:
        batch.create_index("ix_blob_ref_work_order", ["work_order_id"])
    # Photos already referenced by work orders (before this revision, any crew could read any).
    connection = op.get_bind()
    events = sa.table("work_order_event", sa.column("work_order_id", sa.Integer), sa.column("kind", sa.String),
                      sa.column("data", sa.JSON))
    refs = {
        (str(data["sha256"]), work_order_id)
        for work_order_id, data in connection.execute(
            sa.select(events.c.work_order_id, events.c.data).where(events.c.kind == "photo"))
        if isinstance(data, dict) and isinstance(data.get("sha256"), str)
    }
    if refs:
        op.bulk_insert(sa.table("blob_ref", sa.column("sha256", sa.String), sa.column("work_order_id", sa.Integer)),
                       [{"sha256": sha, "work_order_id": wid} for sha, wid in sorted(refs)])

    with op.batch_alter_table("app_user") as batch:
        batch.add_column(sa.Column("token_key", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
    users = sa.table("app_user", sa.column("id", sa.Integer), sa.column("token_key", sa.String))
    for (user_id,) in connection.execute(sa.select(users.c.id)).all():
        connection.execute(users.update().where(users.c.id == user_id).values(token_key=secrets.token_urlsafe(24)))
    with op.batch_alter_table("app_user") as batch:
        batch.alter_column("token_key", existing_type=sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("app_user") as batch:
        batch.drop_column("token_key")
    op.drop_table("blob_ref")
    with op.batch_alter_table("sync_change") as batch:
        batch.drop_index("ix_sync_change_recorded")
        batch.drop_index("ix_sync_change_entity")
    with op.batch_alter_table("sync_client") as batch:
        batch.drop_column("last_push_at")
        batch.drop_column("device_floor")
    op.drop_table("sync_identity")
