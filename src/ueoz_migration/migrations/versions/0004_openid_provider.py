"""openid provider: clients, authorizations, sso sessions, codes, tokens, back-channel logouts

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08 04:21:14
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Only new tables and one new nullable column: the previous release runs on against it.
    op.create_table(
        "backchannel_logouts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backchannel_logouts")),
    )
    with op.batch_alter_table("backchannel_logouts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_backchannel_logouts_pending", ["sent_at", "failed_at", "due_at"], unique=False
        )

    op.create_table(
        "oidc_authorizations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oidc_authorizations")),
    )
    with op.batch_alter_table("oidc_authorizations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_oidc_authorizations_expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "oidc_clients",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("auth_method", sa.String(length=40), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=True),
        sa.Column("redirect_uris", sa.Text(), nullable=False),
        sa.Column("post_logout_redirect_uris", sa.Text(), nullable=False),
        sa.Column("backchannel_logout_uri", sa.String(length=2000), nullable=True),
        sa.Column("initiate_login_uri", sa.String(length=2000), nullable=True),
        sa.Column("jwks", sa.Text(), nullable=True),
        sa.Column("jwks_uri", sa.String(length=2000), nullable=True),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("subject_type", sa.String(length=10), nullable=False),
        sa.Column("id_token_alg", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oidc_clients")),
    )
    op.create_table(
        "sso_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("pesel_hash", sa.String(length=64), nullable=False),
        sa.Column("acr", sa.String(length=100), nullable=False),
        sa.Column("auth_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("name_id", sa.String(length=200), nullable=False),
        sa.Column("session_index", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sso_sessions")),
        sa.UniqueConstraint("sid", name=op.f("uq_sso_sessions_sid")),
    )
    with op.batch_alter_table("sso_sessions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sso_sessions_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_sso_sessions_pesel_hash"), ["pesel_hash"], unique=False
        )

    op.create_table(
        "oidc_codes",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("redirect_uri", sa.String(length=2000), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("nonce", sa.String(length=255), nullable=True),
        sa.Column("code_challenge", sa.String(length=128), nullable=False),
        sa.Column("code_challenge_method", sa.String(length=10), nullable=False),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("sso_session_id", sa.String(length=64), nullable=False),
        sa.Column("auth_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acr", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reused_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["ueoz_accounts.id"],
            name=op.f("fk_oidc_codes_account_id_ueoz_accounts"),
        ),
        sa.PrimaryKeyConstraint("code_hash", name=op.f("pk_oidc_codes")),
    )
    with op.batch_alter_table("oidc_codes", schema=None) as batch_op:
        batch_op.create_index("ix_oidc_codes_client_nonce", ["client_id", "nonce"], unique=False)
        batch_op.create_index(batch_op.f("ix_oidc_codes_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "oidc_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("sso_session_id", sa.String(length=64), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["ueoz_accounts.id"],
            name=op.f("fk_oidc_tokens_account_id_ueoz_accounts"),
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_oidc_tokens")),
    )
    with op.batch_alter_table("oidc_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_oidc_tokens_code_hash"), ["code_hash"], unique=False)
        batch_op.create_index(batch_op.f("ix_oidc_tokens_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_oidc_tokens_sso_session_id"), ["sso_session_id"], unique=False
        )

    op.create_table(
        "sso_session_clients",
        sa.Column("sso_session_id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["ueoz_accounts.id"],
            name=op.f("fk_sso_session_clients_account_id_ueoz_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["sso_session_id"],
            ["sso_sessions.id"],
            name=op.f("fk_sso_session_clients_sso_session_id_sso_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("sso_session_id", "client_id", name=op.f("pk_sso_session_clients")),
    )
    with op.batch_alter_table("pending_logins", schema=None) as batch_op:
        batch_op.add_column(sa.Column("authorization_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("loa", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pending_logins", schema=None) as batch_op:
        batch_op.drop_column("loa")
        batch_op.drop_column("authorization_id")

    op.drop_table("sso_session_clients")
    with op.batch_alter_table("oidc_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oidc_tokens_sso_session_id"))
        batch_op.drop_index(batch_op.f("ix_oidc_tokens_expires_at"))
        batch_op.drop_index(batch_op.f("ix_oidc_tokens_code_hash"))

    op.drop_table("oidc_tokens")
    with op.batch_alter_table("oidc_codes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oidc_codes_expires_at"))
        batch_op.drop_index("ix_oidc_codes_client_nonce")

    op.drop_table("oidc_codes")
    with op.batch_alter_table("sso_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sso_sessions_pesel_hash"))
        batch_op.drop_index(batch_op.f("ix_sso_sessions_expires_at"))

    op.drop_table("sso_sessions")
    op.drop_table("oidc_clients")
    with op.batch_alter_table("oidc_authorizations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oidc_authorizations_expires_at"))

    op.drop_table("oidc_authorizations")
    with op.batch_alter_table("backchannel_logouts", schema=None) as batch_op:
        batch_op.drop_index("ix_backchannel_logouts_pending")

    op.drop_table("backchannel_logouts")
