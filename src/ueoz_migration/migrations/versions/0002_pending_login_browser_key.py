"""pending logins remember the browser that started them

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 01:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pending_logins", schema=None) as batch_op:
        batch_op.add_column(sa.Column("browser_key_hash", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pending_logins", schema=None) as batch_op:
        batch_op.drop_column("browser_key_hash")
