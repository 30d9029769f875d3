"""the staff console: staff, their roles, who looked at whom; console logins; progress indexes

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 06:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
HELD = sa.text("revoked_at IS NULL")
MINTED = sa.text("event_code IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "staff",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("pesel_hash", sa.String(length=64), nullable=False),
        sa.Column("pesel", sa.String(length=11), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff")),
        sa.UniqueConstraint("pesel_hash", name=op.f("uq_staff_pesel_hash")),
    )
    op.create_table(
        "staff_roles",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("staff_id", BigId, nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("granted_by", sa.String(length=100), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(
            ["staff_id"], ["staff.id"], name=op.f("fk_staff_roles_staff_id_staff")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_roles")),
    )
    with op.batch_alter_table("staff_roles", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_staff_roles_staff_id"), ["staff_id"], unique=False)
        batch_op.create_index(
            "uq_staff_roles_held",
            ["staff_id", "role"],
            unique=True,
            sqlite_where=HELD,
            postgresql_where=HELD,
        )
    op.create_table(
        "staff_views",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("staff_id", BigId, nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("attempt_id", sa.String(length=32), nullable=True),
        sa.Column("purpose", sa.String(length=40), nullable=False),
        sa.Column("detail", sa.String(length=200), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["staff_id"], ["staff.id"], name=op.f("fk_staff_views_staff_id_staff")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_views")),
    )
    with op.batch_alter_table("staff_views", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_staff_views_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_staff_views_attempt_id"), ["attempt_id"], unique=False)
        batch_op.create_index(
            "ix_staff_views_staff_purpose_at", ["staff_id", "purpose", "at"], unique=False
        )
    # The previous release's code runs on against this schema: it never reads the column, and
    # its logins (NULL) are the migration's, as they were.
    with op.batch_alter_table("pending_logins", schema=None) as batch_op:
        batch_op.add_column(sa.Column("purpose", sa.String(length=20), nullable=True))
    # On a long log this builds for a while and holds off writes to the log meanwhile on
    # PostgreSQL: docs/operations.md ("Releasing") says how to build them beforehand
    # (CONCURRENTLY), which is why an index already there is left as it is.
    op.create_index(
        "ix_transition_log_progress",
        "transition_log",
        ["event", "outcome", "at", "attempt_id"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        "ix_transition_log_codes",
        "transition_log",
        ["at", "event_code"],
        unique=False,
        sqlite_where=MINTED,
        postgresql_where=MINTED,
        if_not_exists=True,
    )
    op.create_index(
        "ix_verification_links_used",
        "verification_links",
        ["used_at", "created_at"],
        unique=False,
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("ix_verification_links_used", table_name="verification_links")
    op.drop_index("ix_transition_log_codes", table_name="transition_log")
    op.drop_index("ix_transition_log_progress", table_name="transition_log")
    with op.batch_alter_table("pending_logins", schema=None) as batch_op:
        batch_op.drop_column("purpose")
    op.drop_table("staff_views")
    op.drop_table("staff_roles")
    op.drop_table("staff")
