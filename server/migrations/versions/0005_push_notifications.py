"""Web Push: residents' and crews' subscriptions, the notification outbox, the VAPID key

Revision ID: 0005
Revises: 0001
Create Date: 2026-12-04 13:17:46.703540
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0005'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('vapid_key',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('private_key', sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
    sa.Column('public_key', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('push_subscription',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('endpoint', sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
    sa.Column('endpoint_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('p256dh', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('auth', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('language', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('case_id', sa.Integer(), nullable=True),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('last_kind', sqlmodel.sql.sqltypes.AutoString(length=30), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['case_record.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['app_user.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('endpoint_hash', 'case_id', name='uq_push_subscription_case'),
    sa.UniqueConstraint('endpoint_hash', 'user_id', name='uq_push_subscription_user')
    )
    with op.batch_alter_table('push_subscription', schema=None) as batch_op:
        batch_op.create_index('ix_push_subscription_case', ['case_id'], unique=False)
        batch_op.create_index('ix_push_subscription_user', ['user_id'], unique=False)

    op.create_table('push_notification',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subscription_id', sa.Integer(), nullable=False),
    sa.Column('event_uid', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=30), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('urgency', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
    sa.Column('ttl_seconds', sa.Integer(), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('lease_until', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('claimed_by', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('sent_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('last_status', sa.Integer(), nullable=True),
    sa.Column('last_error', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.ForeignKeyConstraint(['subscription_id'], ['push_subscription.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('subscription_id', 'event_uid', name='uq_push_notification_once')
    )
    with op.batch_alter_table('push_notification', schema=None) as batch_op:
        batch_op.create_index('ix_push_notification_due', ['state', 'next_attempt_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('push_notification', schema=None) as batch_op:
        batch_op.drop_index('ix_push_notification_due')

    op.drop_table('push_notification')
    with op.batch_alter_table('push_subscription', schema=None) as batch_op:
        batch_op.drop_index('ix_push_subscription_user')
        batch_op.drop_index('ix_push_subscription_case')

    op.drop_table('push_subscription')
    op.drop_table('vapid_key')
