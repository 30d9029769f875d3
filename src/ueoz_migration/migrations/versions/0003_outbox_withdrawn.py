"""outbox messages the journey withdrew before they went out

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The previous release's code runs on against this schema: it leaves the new column
    # NULL and its senders ask the index's first two columns, as before.
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_index("ix_outbox_pending")
        batch_op.create_index(
            "ix_outbox_pending", ["sent_at", "failed_at", "withdrawn_at", "due_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_pending")
        batch_op.create_index("ix_outbox_pending", ["sent_at", "failed_at", "due_at"], unique=False)
        batch_op.drop_column("withdrawn_at")
