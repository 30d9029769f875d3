"""Back-channel logout: the domain systems are told, server to server, when a session ends.

The domain system is a small Flask app that receives the logout token the way OpenID Connect
Back-Channel Logout 1.0 (2.6) asks, reached through httpx's WSGI transport; the token is
checked against the provider's published keys.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from flask import Flask, request
from joserfc import jwt
from sqlalchemy import select, update
from structlog.testing import capture_logs

from tests.domain_systems import DomainSystem
from tests.factories import ANNA, migrate, user
from tests.ports import free_port
from ueoz_migration.db.engine import transaction
from ueoz_migration.db.models import BackchannelLogout, UeozAccount
from ueoz_migration.oidc.claims import subject
from ueoz_migration.oidc.logout import EVENT
from ueoz_migration.oidc.sso import remember_client
from ueoz_migration.workers.logouts import GIVE_UP_AFTER, LogoutSender


class Receiver:
    """A domain system's back-channel logout endpoint: answers ``status``, keeps the tokens."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.tokens: list[str] = []
        self.app = Flask("receiver")
        self.app.add_url_rule("/backchannel", "logout", self.logout, methods=["POST"])

    def logout(self):
        self.tokens.append(request.form["logout_token"])
        return "", self.status


def sender(services, transport, **options) -> LogoutSender:
    return LogoutSender(
        services.sessions,
        keys=services.signing_keys,
        registry=services.clients,
        issuer=services.settings.base_url,
        timeout=1.0,
        http=httpx.Client(transport=transport),
        **options,
    )


@pytest.fixture
def ended_session(services):
    """Anna signed in to P1 and GABINET through one SSO session, which then ended."""
    p1 = DomainSystem.register(services, "P1")
    # On a loopback port nothing listens on: where a test needs a system that is away.
    gabinet = DomainSystem.register(
        services, "GABINET", backchannel_logout_uri=f"http://127.0.0.1:{free_port()}/backchannel"
    )
    attempt = services.journey.start(ANNA, actor=user())
    migrate(services, attempt.id)
    provider = services.provider
    with services.sessions() as db:
        account_id = db.scalars(select(UeozAccount.id)).one()
    sso_id = provider.sso.open(
        pesel_hash=attempt.pesel_hash,
        acr="http://eidas.europa.eu/LoA/substantial",
        name_id="name-id",
        session_index="index",
    )
    with transaction(services.sessions) as db:  # as handing each a code does (codes.py)
        for system in (p1, gabinet):
            remember_client(db, sso_id, system.client_id, account_id, datetime.now(UTC))
    ended = provider.end_session(sso_id, initiator="P1")
    return ended, account_id


def test_each_other_system_gets_a_signed_logout_token_for_the_session(services, ended_session):
    ended, account_id = ended_session
    receiver = Receiver()

    with capture_logs() as logs:
        report = sender(services, httpx.WSGITransport(app=receiver.app)).send_due()

    assert (report.sent, report.retried, report.failed) == (1, 0, 0)
    assert ended.notified == ("GABINET",)
    (token,) = receiver.tokens
    decoded = jwt.decode(token, services.signing_keys.public_key_set(), algorithms=["ES256"])
    assert decoded.header["typ"] == "logout+jwt"
    claims = decoded.claims
    gabinet = services.clients.get("GABINET")
    assert (claims["iss"], claims["aud"], claims["sid"]) == (
        "http://localhost",
        "GABINET",
        ended.sid,
    )
    assert claims["sub"] == subject(services.settings.oidc_subject_key, gabinet, account_id)
    assert claims["events"] == {EVENT: {}} and "nonce" not in claims
    assert claims["exp"] - claims["iat"] == 120 and claims["jti"]
    with services.sessions() as db:
        assert db.scalars(select(BackchannelLogout.sent_at)).one() is not None
    assert [line["event"] for line in logs] == ["oidc.backchannel_logout_sent"]
    assert token not in repr(logs)
    assert sender(services, httpx.WSGITransport(app=receiver.app)).send_due().sent == 0  # once


def test_a_system_that_refuses_the_token_is_not_asked_again(services, ended_session):
    receiver = Receiver(status=400)

    report = sender(services, httpx.WSGITransport(app=receiver.app)).send_due()

    assert (report.sent, report.failed) == (0, 1)
    with services.sessions() as db:
        row = db.scalars(select(BackchannelLogout)).one()
    assert row.failed_at is not None and row.last_error == "refused: HTTP 400"


def test_a_system_that_is_away_is_tried_again_later_and_given_up_after_an_hour(
    services, ended_session
):
    report = sender(services, httpx.HTTPTransport()).send_due()  # nothing listens there

    assert report.retried == 1
    with services.sessions() as db:
        row = db.scalars(select(BackchannelLogout)).one()
    assert row.sent_at is None and row.failed_at is None and row.tries == 1
    assert row.due_at > row.created_at and row.last_error == "ConnectError"

    with transaction(services.sessions) as db:
        db.execute(
            update(BackchannelLogout).values(
                due_at=row.created_at,
                created_at=row.created_at - GIVE_UP_AFTER - timedelta(seconds=1),
            )
        )
    report = sender(services, httpx.HTTPTransport()).send_due()

    assert report.failed == 1
    with services.sessions() as db:
        row = db.scalars(select(BackchannelLogout)).one()
    assert row.failed_at is not None and row.last_error.startswith("gave up after 2 tries")


def test_two_senders_deliver_each_logout_once(services, ended_session):
    receiver = Receiver()
    first = sender(services, httpx.WSGITransport(app=receiver.app))
    second = sender(services, httpx.WSGITransport(app=receiver.app))

    claimed = first.claim()

    assert len(claimed) == 1 and second.claim() == []  # leased by the first
    first.deliver(claimed[0])
    assert second.send_due().sent == 0
    assert len(receiver.tokens) == 1
