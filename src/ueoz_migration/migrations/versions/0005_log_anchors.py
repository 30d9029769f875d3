"""signed heads of the transition log written out by audit anchor

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A new table only: the previous release's code runs on against this schema.
    op.create_table(
        "log_anchors",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("last_log_id", sa.BigInteger(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_anchors")),
    )
    with op.batch_alter_table("log_anchors", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_log_anchors_size"), ["size"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("log_anchors", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_log_anchors_size"))
    op.drop_table("log_anchors")
