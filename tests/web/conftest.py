"""Fixtures for the pages: the app on the test database, a browser-like client, a person.

Attempts are created with ``services.journey`` directly (as the login would); the client then
holds that attempt in its server-side session, like a browser after login.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.factories import ANNA, add_eploz_account, submit, user
from tests.web.nodelogin import BackChannel
from ueoz_migration.adapters.wk import ServiceProvider, WkSettings
from ueoz_migration.adapters.wk.keys import dev_pair
from ueoz_migration.adapters.wk_replay import DbReplayStore
from ueoz_migration.standin import StandinSettings, create_standin_app
from ueoz_migration.web import create_app

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def app(services) -> Iterator[Flask]:
    app = create_app(services=services)
    app.config["TESTING"] = True
    yield app


@pytest.fixture
def client(app) -> FlaskClient:
    return app.test_client()


class Browser:
    """A test client that posts forms with the CSRF token of the page, as a browser does."""

    def __init__(self, client: FlaskClient, services) -> None:
        self.client = client
        self.services = services

    def get(self, url: str, **kwargs):
        return self.client.get(url, **kwargs)

    def token(self, page: str = "/migracja") -> str:
        body = self.client.get(page).get_data(as_text=True)
        match = CSRF.search(body)
        assert match, f"no CSRF token on {page}"
        return match.group(1)

    def post(self, url: str, data: dict | None = None, *, follow: bool = True, token=None):
        data = {"csrf_token": token or self.token(), **(data or {})}
        return self.client.post(url, data=data, follow_redirects=follow)

    def hold(self, attempt_id: str) -> None:
        """Put the attempt in this browser's session, as the login does."""
        with self.client.session_transaction() as session:
            session["attempt_id"] = attempt_id

    def language(self, code: str) -> None:
        self.client.get(f"/jezyk/{code}")

    def text(self, url: str) -> str:
        return self.client.get(url, follow_redirects=True).get_data(as_text=True)


@pytest.fixture
def browser(client, services) -> Browser:
    return Browser(client, services)


@pytest.fixture
def start_attempt(services):
    """Start an attempt for a person and bring it to ``state`` the way the service would."""

    def start(state: str = "searching", person=ANNA, **kwargs):
        journey = services.journey
        attempt = journey.start(person, actor=user(), **kwargs)
        if state == "searching":
            return attempt
        if state == "error" or state.startswith("new:"):
            attempt = journey.fire(attempt.id, "search_failed", actor=user(), code=208)
            if state == "error":
                return attempt
            attempt = journey.fire(attempt.id, "continue_new", actor=user())
            state = state.removeprefix("new:")
        else:
            eploz_id = add_eploz_account(services)
            attempt = journey.fire(
                attempt.id, "account_found", actor=user(), eploz_account_id=eploz_id
            )
            if state == "found":
                return attempt
            attempt = journey.fire(attempt.id, "create_account", actor=user())
        if state in ("email_entry", "new:email_entry"):
            return attempt
        return submit(services, attempt.id)

    return start


# -- the stand-in node in process (tests/web/nodelogin.py plays the browser) ---------------


@pytest.fixture
def wk(services) -> WkSettings:
    settings = services.settings
    return WkSettings.from_env(
        settings.raw,
        base_url=settings.base_url,
        instance_dir=settings.instance_dir,
        production=False,
    )


@pytest.fixture
def standin(services, wk):
    signing = dev_pair(services.settings.instance_dir / "wk", "standin-signing", "WK stand-in node")
    return create_standin_app(
        StandinSettings.for_service(wk, base_url="http://127.0.0.1:5001", signing=signing)
    )


@pytest.fixture
def back_channel(standin) -> BackChannel:
    return BackChannel(standin)


@pytest.fixture
def node(services, wk, standin, back_channel):
    http = httpx.Client(transport=httpx.WSGITransport(app=back_channel))
    services.service_provider = ServiceProvider(wk, DbReplayStore(services.sessions), http)
    yield standin.test_client()
    services.service_provider.close()


@pytest.fixture
def web(services, node):
    return create_app(services=services).test_client()
