"""Measure what the OpenID layer adds to a node login: a migrated person signing in to a
domain system, against the node login alone, in one process and one run.

    .venv/bin/python benchmarks/bench_signin.py [--signins 100] [--rounds 7] [--database-url URL]

Both are a new browser logging in through the stand-in node as a person whose UEOZ account
is verified (an already migrated person):

- **node login alone**: ``GET /login`` (a signed AuthnRequest, a pending login), the node,
  ``POST /saml/acs`` (the artifact resolved over SOAP, both signatures verified, the ECDH-ES
  assertion decrypted and validated, the attempt started and skipped, the SSO session);
- **sign-in through the code flow**: ``GET /oidc/authorize`` (the request checked and kept,
  then the same login), the node, ``POST /saml/acs``, ``GET /przejdz-do-systemu`` (the code,
  the hand-off row), ``POST /oidc/token`` (client_secret_basic, PKCE, an ES256 ID token) and
  ``GET /oidc/userinfo``.

Counted is the service's CPU time alone: the time spent inside the service's WSGI app, less
the stand-in's answers to the SOAP calls made from inside it (they run on the national
node's machines in production). The browser's and the domain system's own work (building
requests, the test client) and the stand-in's login page are outside it. The two kinds
alternate within each round, so a slower minute of the shared machine weighs on both.
Prints a Markdown table of medians over the rounds and the ratio the aim is about.
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import logging
import re
import secrets
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import structlog
from lxml import html
from sqlalchemy import select

from ueoz_migration.adapters.wk import ServiceProvider, WkSettings
from ueoz_migration.adapters.wk.keys import dev_pair
from ueoz_migration.adapters.wk_replay import DbReplayStore
from ueoz_migration.bootstrap import Services
from ueoz_migration.config import Settings
from ueoz_migration.db.engine import transaction
from ueoz_migration.db.models import EplozAccount, OutboxMessage
from ueoz_migration.db.schema import upgrade
from ueoz_migration.demo import seed_demo
from ueoz_migration.domain.identity import Person
from ueoz_migration.journey import Actor
from ueoz_migration.oidc.clients import Registration
from ueoz_migration.standin import StandinSettings, create_standin_app
from ueoz_migration.web import create_app

BASE_URL = "http://127.0.0.1:5000"
REDIRECT_URI = "https://p1.bench/callback"
ANNA = {
    "first_name": "Anna Maria",
    "last_name": "Mickiewicz-Sokołowska",
    "pesel": "87042712342",
    "date_of_birth": "1987-04-27",
}


class Timed:
    """A WSGI app whose calls add their CPU time to a counter."""

    def __init__(self, app, spent: collections.Counter, name: str) -> None:  # type: ignore[no-untyped-def]
        self.app, self.spent, self.name = app, spent, name

    def __call__(self, environ, start_response):  # type: ignore[no-untyped-def]
        started = time.process_time()
        try:
            return list(self.app(environ, start_response))
        finally:
            self.spent[self.name] += time.process_time() - started


def form_fields(page: str, form_id: str | None = None) -> tuple[str, dict[str, str]]:
    document = html.fromstring(page)
    form = document.get_element_by_id(form_id) if form_id else document.forms[0]
    return form.action, {
        field.name: field.value or ""
        for field in form.inputs
        if field.name and getattr(field, "type", "") == "hidden"
    }


class Bench:
    def __init__(self, instance: Path, database_url: str | None) -> None:
        environ = {
            "APP_ENV": "bench",
            "INSTANCE_DIR": str(instance),
            "BASE_URL": BASE_URL,
            **({"DATABASE_URL": database_url} if database_url else {}),
        }
        self.services = services = Services(Settings.from_env(environ))
        upgrade(services.engine)
        self.spent: collections.Counter[str] = collections.Counter()
        wk = WkSettings.from_env(
            services.settings.raw, base_url=BASE_URL, instance_dir=instance, production=False
        )
        signing = dev_pair(instance / "wk", "standin-signing", "WK stand-in node")
        standin = create_standin_app(
            StandinSettings.for_service(wk, base_url="http://127.0.0.1:5001", signing=signing)
        )
        self.node = standin.test_client()
        self.standin_node = standin.extensions["wk_standin"]
        # The node's answers to the SOAP calls: timed apart, and taken off the service's time.
        standin.wsgi_app = Timed(standin.wsgi_app, self.spent, "node answers")  # type: ignore[method-assign]
        services.service_provider = ServiceProvider(
            wk,
            DbReplayStore(services.sessions),
            httpx.Client(transport=httpx.WSGITransport(app=standin)),
        )
        self.app = create_app(services=services)
        self.app.wsgi_app = Timed(self.app.wsgi_app, self.spent, "service")  # type: ignore[method-assign]
        self.secret = services.clients.add(
            Registration("P1", "Platforma P1", redirect_uris=(REDIRECT_URI,))
        )
        self._migrate_anna()

    def _migrate_anna(self) -> None:
        """Give Anna a verified UEOZ account, as her earlier migration did."""
        services, actor = self.services, Actor("user", "bench")
        seed_demo(services.sessions, pesel_key=services.settings.pesel_key)
        journey = services.journey
        person = Person(ANNA["first_name"], ANNA["last_name"], date(1987, 4, 27), ANNA["pesel"])
        attempt = journey.start(person, actor=actor)
        with transaction(services.sessions) as db:
            eploz_id = db.scalar(select(EplozAccount.id).where(EplozAccount.login == "amicsokol"))
        journey.fire(attempt.id, "account_found", actor=actor, eploz_account_id=eploz_id)
        journey.fire(attempt.id, "create_account", actor=actor)
        journey.fire(
            attempt.id,
            "submit",
            actor=actor,
            email="anna@example.pl",
            email_repeat="anna@example.pl",
            terms_accepted=True,
            language="pl",
        )
        with transaction(services.sessions) as db:
            body = db.scalars(select(OutboxMessage.body)).one()
        token = re.search(r"/weryfikacja/(\S+)", body).group(1)
        journey.fire(attempt.id, "verify", actor=actor, token=token)

    # -- one new browser each -------------------------------------------------------------

    def _through_node(self, web, page: str) -> str:
        """From our page that posts to the node to the ACS's answer; the node's own work is
        not the service's (its login page, its artifact)."""
        _, to_node = form_fields(page, "to-node")
        _, login = form_fields(
            self.node.post("/login/SingleSignOnService", data=to_node).get_data(as_text=True),
            "login",
        )
        login |= ANNA | {"action": "login"}
        _, back = form_fields(
            self.node.post("/login/standin/submit", data=login).get_data(as_text=True)
        )
        acs = web.post("/saml/acs", data=back)
        assert acs.status_code == 303, acs.status_code
        return acs.headers["Location"]

    def node_login(self) -> None:
        web = self.app.test_client()
        location = self._through_node(web, web.get("/login").get_data(as_text=True))
        assert location == "/migracja", location

    def signin(self) -> None:
        web = self.app.test_client()
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        query = urlencode(
            {
                "response_type": "code",
                "client_id": "P1",
                "redirect_uri": REDIRECT_URI,
                "scope": "openid profile email roles",
                "state": secrets.token_urlsafe(16),
                "nonce": secrets.token_urlsafe(16),
                "code_challenge": challenge.rstrip(b"=").decode(),
                "code_challenge_method": "S256",
            }
        )
        page = web.get(f"/oidc/authorize?{query}").get_data(as_text=True)
        location = self._through_node(web, page)
        back = web.get(location)
        code = parse_qs(urlsplit(back.headers["Location"]).query)["code"][0]
        basic = base64.b64encode(f"P1:{self.secret}".encode()).decode()
        token = web.post(
            "/oidc/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT_URI,
                "code_verifier": verifier,
            },
            headers={"Authorization": f"Basic {basic}"},
        )
        access = token.get_json()["access_token"]
        userinfo = web.get("/oidc/userinfo", headers={"Authorization": f"Bearer {access}"})
        assert userinfo.status_code == 200, userinfo.status_code

    def cost(self, run, count: int) -> float:  # type: ignore[no-untyped-def]
        """The service's CPU seconds per run of ``run``."""
        self.spent.clear()
        for _ in range(count):
            run()
        return (self.spent["service"] - self.spent["node answers"]) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signins", type=int, default=100, help="of each kind per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--database-url", help="default: SQLite in a temporary folder")
    args = parser.parse_args()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    logging.disable(logging.INFO)  # the service's log lines are not what is measured here

    with tempfile.TemporaryDirectory() as instance:
        bench = Bench(Path(instance), args.database_url)
        for _ in range(20):  # warm up: imports, compiled statements, caches
            bench.node_login()
            bench.signin()
        costs: dict[str, list[float]] = collections.defaultdict(list)
        for _ in range(args.rounds):
            costs["login"].append(bench.cost(bench.node_login, args.signins))
            costs["signin"].append(bench.cost(bench.signin, args.signins))
        ratios = [s / n for s, n in zip(costs["signin"], costs["login"], strict=True)]
        database = bench.services.engine.dialect.name
        bench.services.engine.dispose()

    login, signin = statistics.median(costs["login"]), statistics.median(costs["signin"])
    print(
        f"{args.rounds} rounds of {args.signins} of each, alternating, {database}, "
        "the service's CPU time, medians\n"
    )
    print("| what | ms of the service's CPU | against the node login |")
    print("|---|---:|---:|")
    print(f"| node login alone (`/login`, ACS) | {login * 1000:.2f} | 1.00 |")
    print(
        "| sign-in through the code flow (authorize, ACS, code, token, userinfo) "
        f"| {signin * 1000:.2f} | {signin / login:.2f} |"
    )
    print(
        f"\n**The OpenID layer adds {statistics.median(ratios) - 1:.0%} to the node login** "
        f"(median of the rounds' ratios; rounds {min(ratios) - 1:.0%} to {max(ratios) - 1:.0%}). "
        "Aim: no more than 25 %."
    )


if __name__ == "__main__":
    main()
