"""Settings come from the environment; production refuses to start without its secrets."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.orm import sessionmaker

from ueoz_migration.cli import main
from ueoz_migration.config import ConfigError, Settings
from ueoz_migration.workers.outbox import OutboxSender

#: Everything production needs, and nothing more.
PRODUCTION = {
    "APP_ENV": "production",
    "SECRET_KEY": "s" * 32,
    "AUDIT_KEY": "a" * 32,
    "PESEL_HASH_KEY": "p" * 32,
    "DATABASE_URL": "postgresql://db/ueoz",
    "BASE_URL": "https://ueoz.example",
    "OIDC_KEYS_DIR": "/etc/ueoz/oidc-keys",
    "OIDC_SUBJECT_KEY": "o" * 32,
}


def without(environ: dict[str, str], name: str) -> dict[str, str]:
    return {key: value for key, value in environ.items() if key != name}


def test_the_embedded_default_needs_no_variables(tmp_path):
    settings = Settings.from_env({"INSTANCE_DIR": str(tmp_path)})

    assert settings.database_url == f"sqlite:///{tmp_path / 'ueoz.sqlite3'}"
    assert settings.mail_backend == "maildir"
    assert settings.oidc_keys_dir == tmp_path / "oidc-keys"
    assert settings.demo_systems_url == "http://127.0.0.1:5002"


def test_development_secrets_are_made_once_and_kept(tmp_path):
    first = Settings.from_env({"INSTANCE_DIR": str(tmp_path)})
    second = Settings.from_env({"INSTANCE_DIR": str(tmp_path)})

    assert first.secret_key == second.secret_key
    assert first.audit_key == second.audit_key


def test_production_without_secrets_refuses_to_start(tmp_path):
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"APP_ENV": "production", "INSTANCE_DIR": str(tmp_path)})

    assert (
        "SECRET_KEY, AUDIT_KEY, PESEL_HASH_KEY, DATABASE_URL, BASE_URL, OIDC_KEYS_DIR, "
        "OIDC_SUBJECT_KEY; refusing to start"
    ) in str(error.value)


def test_production_keeps_its_signing_keys_and_subject_key_outside_the_database(tmp_path):
    # Made up on the spot, the subject key would give every domain system new people.
    for name in ("OIDC_KEYS_DIR", "OIDC_SUBJECT_KEY"):
        with pytest.raises(ConfigError, match=f"needs {name}; refusing to start"):
            Settings.from_env(without(PRODUCTION, name))


def test_domain_systems_in_the_environment_are_refused_with_where_they_went(tmp_path):
    # Its systems and return addresses would otherwise be ignored without a word.
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"INSTANCE_DIR": str(tmp_path), "DOMAIN_SYSTEMS": "P1|P1|https://p1"})

    assert str(error.value) == (
        "DOMAIN_SYSTEMS is no longer read: register each domain system with "
        "`ueoz-migration clients add` (docs/integration.md) and unset it."
    )


def test_an_app_env_that_is_nearly_production_is_refused(tmp_path):
    # "prod" would otherwise be a development service: demo pages, no Secure cookie.
    with pytest.raises(ConfigError, match="APP_ENV must be one of production, development"):
        Settings.from_env({"APP_ENV": "prod", "INSTANCE_DIR": str(tmp_path)})


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RESEND_LIMIT_PER_HOUR", "abc", "RESEND_LIMIT_PER_HOUR must be a whole number, got 'abc'"),
        (
            "SEARCH_TIMEOUT_SECONDS",
            "ten",
            "SEARCH_TIMEOUT_SECONDS must be a positive number of seconds, got 'ten'",
        ),
        (
            "ATTEMPT_TTL_HOURS",
            "nan",
            "ATTEMPT_TTL_HOURS must be a positive number of hours, got 'nan'",
        ),
        (
            "SMTP_DATA_TIMEOUT_SECONDS",
            "2m",
            "SMTP_DATA_TIMEOUT_SECONDS must be a positive number of seconds, got '2m'",
        ),
        (
            "SMTP_STARTTLS",
            "maybe",
            "SMTP_STARTTLS must be true or false (1/0, yes/no, on/off), got 'maybe'",
        ),
    ],
)
def test_a_setting_of_the_wrong_type_stops_the_command_with_one_line(
    tmp_path, variable, value, message
):
    # Read when the command runs, before it touches anything: the operator sees which variable.
    environ = {"APP_ENV": "development", "INSTANCE_DIR": str(tmp_path), variable: value}

    result = CliRunner().invoke(main, ["eploz", "seed-demo"], env=environ, catch_exceptions=False)

    assert result.exit_code == 1
    assert result.output == f"Error: {message}\n"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MAIL_MAX_TRIES", "0", "MAIL_MAX_TRIES must be a whole number of at least 1, got '0'"),
        ("SMTP_PORT", "70000", "SMTP_PORT must be a whole number from 1 to 65535, got '70000'"),
        (
            "SEARCH_RETRY_BASE_SECONDS",
            "-1",
            "SEARCH_RETRY_BASE_SECONDS must be a positive number of seconds, got '-1'",
        ),
        (
            "VERIFICATION_LINK_TTL_HOURS",
            "1e300",
            "VERIFICATION_LINK_TTL_HOURS must be a positive number of hours, got '1e300'",
        ),
    ],
)
def test_a_number_out_of_range_is_refused_naming_it(tmp_path, variable, value, message):
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"INSTANCE_DIR": str(tmp_path), variable: value})

    assert str(error.value) == message


@pytest.mark.parametrize(
    ("value", "on"), [("on", True), ("YES", True), ("off", False), ("0", False)]
)
def test_yes_no_settings_take_every_yes_no_word(tmp_path, value, on):
    settings = Settings.from_env({"INSTANCE_DIR": str(tmp_path), "SMTP_STARTTLS": value})

    assert settings.smtp_starttls is on


def test_settings_take_fractions_and_treat_an_empty_variable_as_unset(tmp_path):
    settings = Settings.from_env(
        {
            "INSTANCE_DIR": str(tmp_path),
            "VERIFICATION_LINK_TTL_HOURS": "0.5",
            "SEARCH_TIMEOUT_SECONDS": " 2.5 ",
            "RESEND_LIMIT_PER_HOUR": "",
        }
    )

    assert settings.verification_link_ttl == timedelta(minutes=30)
    assert settings.search_timeout == timedelta(seconds=2.5)
    assert settings.resend_limit_per_hour == 3


BLANK_SETTINGS = (
    "APP_ENV",
    "DATABASE_URL",
    "INSTANCE_DIR",
    "BASE_URL",
    "MAIL_BACKEND",
    "MAILDIR_PATH",
    "MAIL_FROM",
    "SMTP_HOST",
    "HELPDESK_PHONE",
    "HELPDESK_EMAIL",
    "STANDIN_URL",
    "DEMO_SYSTEMS_URL",
    "DOMAIN_SYSTEMS",
    "OIDC_KEYS_DIR",
    "OIDC_SUBJECT_KEY",
    "SMTP_PORT",
    "LOG_JSON",
)


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_variable_is_unset_whatever_the_setting(tmp_path, monkeypatch, blank):
    # `MAIL_FROM=` in a unit file must not send mail from no one, nor `INSTANCE_DIR=` put
    # the keys into whatever folder the process starts in.
    monkeypatch.chdir(tmp_path)
    instance = Path("var").absolute()

    settings = Settings.from_env(dict.fromkeys(BLANK_SETTINGS, blank))

    assert settings == Settings.from_env({})
    assert (settings.env, settings.instance_dir, settings.mail_backend) == (
        "development",
        instance,
        "maildir",
    )
    assert settings.database_url == f"sqlite:///{instance / 'ueoz.sqlite3'}"
    assert (settings.mail_from, settings.smtp_host) == ("UEOZ <no-reply@ueoz.example>", "127.0.0.1")
    assert settings.base_url == "http://127.0.0.1:5000"
    assert settings.oidc_keys_dir == instance / "oidc-keys"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "foo://x",
            "DATABASE_URL must be a postgresql://user:password@host:5432/name or sqlite:///path "
            "address, not foo://…",
        ),
        (
            "not-a-url",
            "DATABASE_URL must be a postgresql://user:password@host:5432/name or sqlite:///path "
            "address",
        ),
        (
            "mysql://ueoz:s3cret@db/ueoz",
            "DATABASE_URL must be a postgresql://user:password@host:5432/name or sqlite:///path "
            "address, not mysql://…",
        ),
        ("postgresql://ueoz:s3cret@db:notaport/ueoz", "DATABASE_URL's port is not a number"),
    ],
)
def test_a_database_url_the_service_cannot_use_is_one_line_without_its_password(
    tmp_path, url, message
):
    environ = {"INSTANCE_DIR": str(tmp_path / "instance"), "DATABASE_URL": url}

    for command in (["db", "upgrade"], ["audit", "verify"], ["worker", "--once"]):
        result = CliRunner().invoke(main, command, env=environ | {"AUDIT_KEY": "k"})

        assert (result.exit_code, result.output) == (1, f"Error: {message}\n"), command
    assert not (tmp_path / "instance").exists()  # refused before any key was made


def test_the_pesel_hashes_have_a_key_of_their_own(tmp_path):
    """An auditor holds the audit key; with it alone no pesel_hash can be turned back."""
    settings = Settings.from_env({"INSTANCE_DIR": str(tmp_path)})

    assert settings.pesel_key != settings.audit_key
    assert (tmp_path / "pesel_key").read_text().encode() == settings.pesel_key
    # Kept: a restart finds its people again.
    assert Settings.from_env({"INSTANCE_DIR": str(tmp_path)}).pesel_key == settings.pesel_key


def test_an_instance_from_before_the_split_keeps_hashing_with_its_audit_key(tmp_path):
    (tmp_path / "audit_key").write_text("the-old-development-audit-key")

    settings = Settings.from_env({"INSTANCE_DIR": str(tmp_path)})

    assert settings.pesel_key == settings.audit_key == b"the-old-development-audit-key"


@pytest.mark.parametrize("name", ["SECRET_KEY", "AUDIT_KEY", "PESEL_HASH_KEY", "OIDC_SUBJECT_KEY"])
def test_production_refuses_a_secret_shorter_than_32_bytes(name):
    with pytest.raises(ConfigError) as error:
        Settings.from_env({**PRODUCTION, name: "x" * 31})

    assert str(error.value) == (
        f"APP_ENV=production needs {name} of at least 32 bytes; refusing to start."
    )


def test_production_names_every_short_secret_at_once():
    weak = {"SECRET_KEY": "s", "AUDIT_KEY": "a", "PESEL_HASH_KEY": "p"}

    with pytest.raises(ConfigError, match="needs SECRET_KEY and AUDIT_KEY and PESEL_HASH_KEY of"):
        Settings.from_env({**PRODUCTION, **weak})


def test_production_counts_bytes_not_characters():
    # 16 Polish letters of two bytes each: 32 bytes.
    assert Settings.from_env({**PRODUCTION, "SECRET_KEY": "ż" * 16}).secret_key == "ż" * 16


def test_production_refuses_one_key_for_the_pesel_hashes_and_the_audit_chain():
    with pytest.raises(ConfigError) as error:
        Settings.from_env({**PRODUCTION, "PESEL_HASH_KEY": PRODUCTION["AUDIT_KEY"]})

    assert str(error.value) == (
        "APP_ENV=production needs a PESEL_HASH_KEY other than AUDIT_KEY (re-key the PESEL "
        "hashes with `ueoz-migration pesel rekey`); refusing to start."
    )


def test_the_auditors_commands_refuse_a_short_audit_key_in_production(tmp_path):
    environ = {"APP_ENV": "production", "AUDIT_KEY": "a", "DATABASE_URL": "postgresql://db/u"}

    with pytest.raises(ConfigError, match="needs AUDIT_KEY of at least 32 bytes"):
        Settings.from_env(environ, existing_audit_key=True)


def test_development_takes_short_and_shared_keys_as_they_are(tmp_path):
    environ = {"INSTANCE_DIR": str(tmp_path), "SECRET_KEY": "s", "AUDIT_KEY": "a"}

    settings = Settings.from_env({**environ, "PESEL_HASH_KEY": "a"})

    assert (settings.secret_key, settings.audit_key, settings.pesel_key) == ("s", b"a", b"a")


def test_production_needs_the_pesel_hash_key(tmp_path):
    environ = without(PRODUCTION, "PESEL_HASH_KEY")
    with pytest.raises(ConfigError, match="PESEL_HASH_KEY"):
        Settings.from_env(environ)


def test_an_instance_given_its_audit_key_before_the_split_keeps_its_hashes(tmp_path):
    settings = Settings.from_env({"INSTANCE_DIR": str(tmp_path), "AUDIT_KEY": "from-the-env"})

    assert settings.pesel_key == b"from-the-env"


def test_the_auditors_commands_need_neither_the_pesel_key_nor_the_secret_key(tmp_path):
    environ = {
        "APP_ENV": "production",
        "AUDIT_KEY": "a" * 32,
        "DATABASE_URL": "postgresql://db/ueoz",
        "INSTANCE_DIR": str(tmp_path),
    }

    settings = Settings.from_env(environ, existing_audit_key=True)

    assert (settings.audit_key, settings.pesel_key, settings.secret_key) == (b"a" * 32, b"", "")
    assert list(tmp_path.iterdir()) == []  # no key made up on disk


def test_a_resend_limit_of_zero_is_refused(tmp_path):
    # Zero would refuse even the first link: nobody could finish the e-mail form.
    with pytest.raises(
        ConfigError, match="RESEND_LIMIT_PER_HOUR must be a whole number of at least 1"
    ):
        Settings.from_env({"INSTANCE_DIR": str(tmp_path), "RESEND_LIMIT_PER_HOUR": "0"})


def test_development_keys_are_readable_by_their_owner_only(tmp_path):
    Settings.from_env({"INSTANCE_DIR": str(tmp_path)})

    for name in ("secret_key", "audit_key", "pesel_key", "oidc_subject_key"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name


def test_production_logs_json_unless_told_otherwise(tmp_path):
    environ = PRODUCTION | {"INSTANCE_DIR": str(tmp_path)}
    assert Settings.from_env(environ).log_json is True
    assert Settings.from_env({**environ, "LOG_JSON": "0"}).log_json is False
    assert Settings.from_env({"INSTANCE_DIR": str(tmp_path)}).log_json is False


@pytest.mark.parametrize(
    "name", ["SEARCH_TIMEOUT_SECONDS", "ATTEMPT_TTL_HOURS", "SMTP_DATA_TIMEOUT_SECONDS"]
)
def test_a_duration_of_zero_is_refused(tmp_path, name):
    with pytest.raises(ConfigError, match=f"{name} must be a positive number"):
        Settings.from_env({"INSTANCE_DIR": str(tmp_path), name: "0"})


def test_a_pesel_key_taken_over_from_an_old_instance_is_readable_by_its_owner_only(tmp_path):
    (tmp_path / "audit_key").write_text("the-old-development-audit-key")

    Settings.from_env({"INSTANCE_DIR": str(tmp_path)})

    assert (tmp_path / "pesel_key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("content", [None, "not a certificate\n"], ids=["missing", "not-pem"])
def test_an_smtp_ca_file_tls_cannot_load_is_refused_naming_it(tmp_path, content):
    path = tmp_path / "relay-ca.pem"
    if content is not None:
        path.write_text(content)

    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"INSTANCE_DIR": str(tmp_path), "SMTP_CA_FILE": str(path)})

    assert str(refused.value).startswith(
        f"SMTP_CA_FILE must be a file of PEM certificates, got {str(path)!r}: "
    )


def test_a_killed_mail_sender_leaves_its_message_for_5_minutes_10_by_default(tmp_path):
    # docs/operations.md tells operators this wait: the lease of a message being delivered
    # outlasts every SMTP wait (16 replies of SMTP_TIMEOUT_SECONDS, 10 s, and the server's
    # answer to the message, SMTP_DATA_TIMEOUT_SECONDS, 2 minutes) and 30 s to record it.
    settings = Settings.from_env({"INSTANCE_DIR": str(tmp_path)})

    sender = OutboxSender.from_settings(settings, sessionmaker(), transport=object())

    assert settings.smtp_data_timeout == timedelta(minutes=2)
    assert sender.lease == timedelta(minutes=5, seconds=10)


def test_the_anchor_key_is_a_file_in_the_instance_folder_but_in_production(tmp_path):
    development = Settings.from_env({"INSTANCE_DIR": str(tmp_path)})
    production = Settings.from_env(PRODUCTION | {"INSTANCE_DIR": str(tmp_path)})
    given = Settings.from_env(
        PRODUCTION | {"ANCHOR_KEY": "/etc/ueoz/anchor.pem", "ANCHOR_PUBLIC_KEY": "anchor.pub"}
    )

    assert development.anchor_key == tmp_path / "anchor_key.pem"
    assert not development.anchor_key.exists()  # made only where an anchor is written
    assert (production.anchor_key, production.anchor_public_key) == (None, None)
    assert given.anchor_key == Path("/etc/ueoz/anchor.pem")
    assert given.anchor_public_key == Path("anchor.pub").absolute()


def test_the_embedded_defaults_secrets_and_database_are_readable_by_their_owner_only(tmp_path):
    # Under the most permissive umask, any mode that shows is the one the code asked for.
    from sqlalchemy import text

    from ueoz_migration.adapters.wk.keys import dev_pair
    from ueoz_migration.db.engine import make_engine

    instance = tmp_path / "var"
    umask = os.umask(0)
    try:
        settings = Settings.from_env({"INSTANCE_DIR": str(instance)})
        dev_pair(instance / "wk", "sp-signing", "UEOZ SP")
        engine = make_engine(settings.database_url)
        with engine.begin() as connection:  # the WAL's files exist while it is open
            connection.execute(text("CREATE TABLE t (x)"))
            modes = {
                path.name: path.stat().st_mode & 0o777
                for path in (*instance.iterdir(), *(instance / "wk").iterdir())
                if path.is_file()
            }
        engine.dispose()
    finally:
        os.umask(umask)

    assert instance.stat().st_mode & 0o777 == 0o700
    assert modes == dict.fromkeys(
        [
            "secret_key",
            "audit_key",
            "pesel_key",
            "oidc_subject_key",
            "ueoz.sqlite3",
            "ueoz.sqlite3-wal",
            "ueoz.sqlite3-shm",
            "sp-signing.pem",
        ],
        0o600,
    )
