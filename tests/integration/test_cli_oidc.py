"""The operators' commands for the sign-in provider: ``clients …`` and ``keys …``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from joserfc.jwk import ECKey
from sqlalchemy import select

from ueoz_migration.cli import main
from ueoz_migration.db.models import OidcClient
from ueoz_migration.oidc.clients import secret_hash
from ueoz_migration.oidc.keys import SigningKeys


def cli(services, *args: str):
    return CliRunner().invoke(main, list(args), env=dict(services.settings.raw))


def add_p1(services, *extra: str):
    return cli(
        services,
        "clients",
        "add",
        "P1",
        "--name",
        "Platforma P1",
        "--redirect-uri",
        "https://p1.example/callback",
        "--redirect-uri",
        "https://p1.example/callback2",
        "--post-logout-redirect-uri",
        "https://p1.example/",
        "--backchannel-logout-uri",
        "https://p1.example/backchannel",
        *extra,
    )


def test_adding_a_client_prints_its_secret_once_and_keeps_only_its_hash(services):
    result = add_p1(services, "--scope", "openid", "--scope", "email")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "client_id: P1"
    secret = lines[1].removeprefix("client_secret: ")
    assert len(secret) >= 43
    assert "shown this once" in result.stderr
    with services.sessions() as db:
        row = db.scalars(select(OidcClient)).one()
    stored = [str(getattr(row, column.key)) for column in OidcClient.__table__.columns]
    assert row.secret_hash == secret_hash(secret) and secret not in " ".join(stored)
    client = services.clients.get("P1")
    assert client.redirect_uris == ("https://p1.example/callback", "https://p1.example/callback2")
    assert (client.scopes, client.subject_type, client.auth_method) == (
        ("openid", "email"),
        "pairwise",
        "client_secret_basic",
    )


def test_a_client_with_its_own_keys_gets_no_secret(services, tmp_path):
    key = ECKey.generate_key("P-256", private=True)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))

    result = add_p1(services, "--jwks-file", str(jwks), "--public-subject")

    assert result.exit_code == 0, result.output
    assert result.stdout == "client_id: P1\n"
    client = services.clients.get("P1")
    assert (client.auth_method, client.subject_type) == ("private_key_jwt", "public")


def test_a_jwks_file_holding_a_private_key_is_refused(services, tmp_path):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [ECKey.generate_key("P-256").as_dict(private=True)]}))

    result = add_p1(services, "--jwks-file", str(jwks))

    assert result.exit_code == 1
    assert result.output == (
        "Error: the JWKS must hold public keys only (no private or secret keys)\n"
    )
    assert services.clients.get("P1") is None


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (
            "http://p1.example/callback",
            "'http://p1.example/callback' must be an https:// address "
            "(http:// only on loopback, outside production)",
        ),
        ("https://p1.example/cb#x", "'https://p1.example/cb#x' is not an absolute address"),
        ("/callback", "'/callback' is not an absolute address without a fragment"),
    ],
)
def test_a_redirect_uri_that_is_no_safe_address_is_refused(services, uri, message):
    result = cli(services, "clients", "add", "P1", "--name", "P1", "--redirect-uri", uri)

    assert result.exit_code == 1 and message in result.output
    assert services.clients.get("P1") is None


def test_a_client_is_added_once(services):
    add_p1(services)

    again = add_p1(services)

    assert again.exit_code == 1 and again.output == "Error: client P1 is registered already\n"


def test_rotating_a_secret_makes_the_old_one_stop_working(services):
    old = add_p1(services).stdout.splitlines()[1].removeprefix("client_secret: ")

    result = cli(services, "clients", "rotate-secret", "P1")

    assert result.exit_code == 0, result.output
    new = result.stdout.splitlines()[1].removeprefix("client_secret: ")
    client = services.clients.get("P1")
    assert client.check_client_secret(new) and not client.check_client_secret(old)


def test_listing_and_removing_clients(services):
    add_p1(services)

    listed = cli(services, "clients", "list")
    removed = cli(services, "clients", "remove", "P1")
    again = cli(services, "clients", "remove", "P1")

    assert listed.stdout.startswith("P1\tPlatforma P1\tclient_secret_basic\tpairwise\t")
    assert removed.stdout == "removed P1\n"
    assert again.exit_code == 1 and again.output == "Error: no client P1 is registered\n"
    assert cli(services, "clients", "list").stderr.startswith("no domain system is registered")


def test_keys_rotate_publishes_new_keys_before_they_sign(services):
    folder = services.settings.oidc_keys_dir
    first = {entry.kid for entry in SigningKeys(folder).entries()}  # made by the first start

    result = cli(services, "keys", "rotate", "--publish-ahead-minutes", "10")

    assert result.exit_code == 0, result.output
    new = [line.split()[3].rstrip(":") for line in result.stdout.splitlines()]
    assert [line.split()[1] for line in result.stdout.splitlines()] == ["ES256", "RS256"]
    listed = cli(services, "keys", "list").stdout.splitlines()
    states = {line.split("\t")[0]: line.split("\t")[3] for line in listed}
    assert all(states[kid].startswith("published, signs from ") for kid in new)
    assert all(states[kid] == "signs now" for kid in first)


def test_a_rotation_signs_with_the_new_keys_from_their_time_and_drops_the_old_after_the_overlap(
    tmp_path,
):
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    clock = lambda: now  # noqa: E731
    keys = SigningKeys.open(tmp_path, create=True, clock=clock)
    old = keys.signing_key("ES256").kid

    (new_es, new_rs) = keys.rotate(publish_ahead=timedelta(minutes=10), overlap=timedelta(hours=1))

    published = {key["kid"] for key in keys.public_jwks()["keys"]}
    assert {old, new_es.kid, new_rs.kid} <= published
    assert keys.signing_key("ES256").kid == old  # not yet: every instance must know it first
    now += timedelta(minutes=10)
    assert keys.signing_key("ES256").kid == new_es.kid
    assert keys.signing_key("RS256").kid == new_rs.kid
    now += timedelta(minutes=59)
    assert old in {key["kid"] for key in keys.public_jwks()["keys"]}  # tokens it signed still shown
    now += timedelta(minutes=2)
    assert old not in {key["kid"] for key in keys.public_jwks()["keys"]}
    keys.rotate(publish_ahead=timedelta(0))
    assert not (tmp_path / f"{old}.pem").exists()  # its private key is gone from the disk
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in tmp_path.glob("*.pem"))


def test_production_refuses_to_start_without_a_key(tmp_path):
    from ueoz_migration.config import ConfigError

    with pytest.raises(ConfigError, match="holds no ES256 key to sign with"):
        SigningKeys.open(tmp_path / "empty", create=False)
