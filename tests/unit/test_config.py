"""Settings come from the environment; production refuses to start without its secrets."""

from __future__ import annotations

import pytest

from ueoz_migration.config import ConfigError, Settings


def test_the_embedded_default_needs_no_variables(tmp_path):
    settings = Settings.from_env({"INSTANCE_DIR": str(tmp_path)})

    assert settings.database_url == f"sqlite:///{tmp_path / 'ueoz.sqlite3'}"
    assert settings.mail_backend == "maildir"
    assert settings.domain_systems["P1"].return_urls == ("http://127.0.0.1:5000/demo/system/P1",)


def test_the_demo_systems_return_to_the_service_where_it_runs(tmp_path):
    settings = Settings.from_env({"INSTANCE_DIR": str(tmp_path), "BASE_URL": "http://h:8000/"})

    assert settings.domain_systems["GABINET"].default_return_url == (
        "http://h:8000/demo/system/GABINET"
    )


def test_development_secrets_are_made_once_and_kept(tmp_path):
    first = Settings.from_env({"INSTANCE_DIR": str(tmp_path)})
    second = Settings.from_env({"INSTANCE_DIR": str(tmp_path)})

    assert first.secret_key == second.secret_key
    assert first.audit_key == second.audit_key


def test_production_without_secrets_refuses_to_start(tmp_path):
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"APP_ENV": "production", "INSTANCE_DIR": str(tmp_path)})

    assert "SECRET_KEY, AUDIT_KEY, DATABASE_URL, BASE_URL, DOMAIN_SYSTEMS" in str(error.value)


def test_production_has_no_demo_systems_to_fall_back_on(tmp_path):
    # Without its domain systems, production would refuse every login as "unknown system".
    environ = {
        "APP_ENV": "production",
        "SECRET_KEY": "s",
        "AUDIT_KEY": "a",
        "DATABASE_URL": "postgresql://db/ueoz",
        "BASE_URL": "https://ueoz.example",
    }
    with pytest.raises(ConfigError, match="needs DOMAIN_SYSTEMS; refusing to start"):
        Settings.from_env(environ)


def test_domain_systems_are_read_with_their_return_addresses(tmp_path):
    settings = Settings.from_env(
        {
            "INSTANCE_DIR": str(tmp_path),
            "DOMAIN_SYSTEMS": "P1|Platforma P1|https://p1.example/a, https://p1.example/b",
        }
    )

    system = settings.domain_systems["P1"]
    assert system.return_urls == ("https://p1.example/a", "https://p1.example/b")
    assert system.default_return_url == "https://p1.example/a"


def test_a_malformed_domain_system_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nonsense"):
        Settings.from_env({"INSTANCE_DIR": str(tmp_path), "DOMAIN_SYSTEMS": "nonsense"})


def test_an_app_env_that_is_nearly_production_is_refused(tmp_path):
    # "prod" would otherwise be a development service: demo pages, no Secure cookie.
    with pytest.raises(ConfigError, match="APP_ENV must be one of production, development"):
        Settings.from_env({"APP_ENV": "prod", "INSTANCE_DIR": str(tmp_path)})
