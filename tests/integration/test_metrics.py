"""Prometheus' view: the figures move as a person's actions move them, under real gunicorn.

The stack is the one production runs, on free loopback ports: gunicorn with its worker
processes counting in multiprocess mode and the master serving their sum on METRICS_BIND,
the search worker and the mail sender each on its own ``--metrics-bind`` port. The people
are the benchmark's virtual users (benchmarks/bench_http.py), a browser each.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from benchmarks.bench_http import (
    MailReader,
    Results,
    VirtualUser,
    child_environment,
    form_fields,
    generate_people,
    prepare_database,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.ports import free_port
from ueoz_migration.config import Settings
from ueoz_migration.devstack import Child, answers, plan


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample at ``http://127.0.0.1:PORT/metrics``: (name, labels) → value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def eventually(port: int, holds, timeout: float = 10.0) -> dict[tuple[str, frozenset], float]:
    """Scrape until ``holds(samples)``; return those samples."""
    deadline = time.monotonic() + timeout
    while not holds(samples := scrape(port)):
        assert time.monotonic() < deadline, "the figures never came"
        time.sleep(0.1)
    return samples


def value(samples, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly these labels; 0 when it was never counted."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over every sample whose labels include these."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


class Stack:
    """The service's processes, each writing its log to a file."""

    def __init__(self, tmp_path: Path, database_url: str) -> None:
        self.web = f"http://127.0.0.1:{free_port()}"
        self.node = f"http://127.0.0.1:{free_port()}"
        self.ports = {name: free_port() for name in ("web", "worker", "mail")}
        instance = tmp_path / "instance"
        instance.mkdir()
        self.environ = child_environment(instance, database_url, self.web, self.node)
        self.people = generate_people(4)
        prepare_database(self.environ, self.people, instance)
        planned = {child.name: child for child in plan(Settings.from_env(self.environ))}
        web, node = planned["web service"], planned["stand-in login node"]
        worker, mail = planned["search worker"], planned["mail sender"]
        web.env = web.env | self.environ | {"METRICS_BIND": f"127.0.0.1:{self.ports['web']}"}
        web.argv[web.argv.index("--workers") + 1] = "2"
        # As the production unit runs it (the devstack's worker class holds a request back
        # until it came whole, so a half-sent one would never reach the application).
        web.argv[web.argv.index("--worker-class") + 1] = "gthread"
        worker.argv += ["--metrics-bind", f"127.0.0.1:{self.ports['worker']}"]
        mail.argv += ["--metrics-bind", f"127.0.0.1:{self.ports['mail']}"]
        self.children = [web, node, worker, mail]
        for child in (node, worker, mail):
            child.env = child.env | self.environ
        self.logs = tmp_path
        for child in self.children:
            with (tmp_path / f"{child.name.replace(' ', '-')}.log").open("wb") as log:
                child.process = subprocess.Popen(
                    child.argv, env=child.env, stdout=log, stderr=subprocess.STDOUT,
                    process_group=0,
                )  # fmt: skip
        self.maildir = instance / "maildir"
        for sub in ("new", "cur", "tmp"):
            (self.maildir / sub).mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + 60
        for url in (f"{self.web}/healthz", f"{self.node}/healthz", *self.metrics_urls()):
            while not answers(url):
                dead = [c.name for c in self.children if c.process.poll() is not None]
                assert not dead and time.monotonic() < deadline, f"{dead or url}: logs {tmp_path}"
                time.sleep(0.2)

    def metrics_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}/metrics" for port in self.ports.values()]

    def child(self, name: str) -> Child:
        return next(child for child in self.children if child.name == name)

    def stop(self) -> None:
        for child in self.children:
            if child.process.poll() is None:
                os.killpg(child.process.pid, signal.SIGTERM)
        for child in self.children:
            try:
                child.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()


@pytest.fixture
def stack(tmp_path: Path, database_url: str) -> Iterator[Stack]:
    running = Stack(tmp_path, database_url)
    yield running
    running.stop()


@pytest.fixture
def browser(stack: Stack) -> Iterator[Browser]:
    mail = MailReader(stack.maildir)
    mail.thread.start()
    person = Browser(stack, mail)
    yield person
    mail.stop.set()
    person.client.close()


class Browser(VirtualUser):
    """One of the benchmark's virtual users, driven step by step by the test."""

    def __init__(self, stack: Stack, mail: MailReader) -> None:
        args = type("Args", (), {"step_timeout": 30.0, "status_interval": 0.1})()
        super().__init__(
            iter(()), threading.Lock(), Results(), mail, args, stack.web, stack.node,
            threading.Event(),
        )  # fmt: skip

    def cancel_at_the_node(self) -> httpx.Response:
        page = self.request("GET /login", "GET", f"{self.web}/login", 200).text
        sso, to_node = form_fields(page, "SAMLRequest")
        page = self.request("POST node SSO", "POST", sso, 200, data=to_node).text
        _, login = form_fields(page, 'name="ticket"')
        page = self.request(
            "POST node login form", "POST", f"{self.node}/login/standin/submit", 200,
            data={"ticket": login["ticket"], "action": "cancel"},
        ).text  # fmt: skip
        acs, post_back = form_fields(page, "SAMLart")
        return self.request("POST /saml/acs", "POST", acs, 403, data=post_back)


def test_the_figures_move_as_a_persons_actions_move_them(stack: Stack, browser: Browser):
    web, worker, sender = (scrape(stack.ports[name]) for name in ("web", "worker", "mail"))

    browser.cancel_at_the_node()
    browser.migrate(stack.people[0])

    # A request is timed once its last byte is out: the browser may be a moment ahead.
    hist = "ueoz_http_request_duration_seconds_count"
    link = {"method": "GET", "route": "/weryfikacja/<token>", "status": "200"}
    web_now = eventually(stack.ports["web"], lambda now: value(now, hist, **link) > 0)
    moved = {
        key: web_now[key] - web.get(key, 0.0) for key in web_now if web_now[key] != web.get(key)
    }

    def moved_by(name: str, **labels: str) -> float:
        return moved.get((name, frozenset(labels.items())), 0.0)

    # The login the person cancelled at the node: one failure, its reason, its page's 403.
    assert moved_by("ueoz_login_failures_total", reason="authn_failed") == 1
    assert moved_by(hist, method="POST", route="/saml/acs", status="403") == 1
    # The migration: the person's own steps, counted by the web instance once committed.
    for event_name in ("start", "create_account", "submit", "verify"):
        assert moved_by("ueoz_transitions_total", event=event_name, outcome="applied") == 1
    assert moved_by(hist, method="POST", route="/migracja/<event>", status="303") == 2
    assert moved_by(hist, method="GET", route="/weryfikacja/<token>", status="200") == 1
    assert moved_by(hist, method="GET", route="/migracja/status", status="200") >= 1
    # The search and the e-mail: counted by the worker and the sender, each on its port.
    worker_now, sender_now = scrape(stack.ports["worker"]), scrape(stack.ports["mail"])
    for samples, before, event_name in ((worker_now, worker, "account_found"),):
        counted = value(samples, "ueoz_transitions_total", event=event_name, outcome="applied")
        assert counted - value(before, "ueoz_transitions_total", event=event_name,
                               outcome="applied") == 1  # fmt: skip
    found = value(worker_now, "ueoz_searches_total", outcome="found")
    assert found - value(worker, "ueoz_searches_total", outcome="found") == 1
    sent = value(sender_now, "ueoz_mail_deliveries_total", outcome="sent")
    assert sent - value(sender, "ueoz_mail_deliveries_total", outcome="sent") == 1
    # Both loops go round.
    for samples, name in ((worker_now, "search"), (sender_now, "mail")):
        last = value(samples, "ueoz_worker_last_pass_timestamp_seconds", worker=name)
        assert time.time() - last < 5
    # Nothing waits any more.
    assert value(web_now, "ueoz_queue_depth", queue="search") == 0
    assert value(web_now, "ueoz_queue_depth", queue="outbox") == 0
    assert value(web_now, "ueoz_queue_scrape_ok") == 1


def test_a_queue_nobody_takes_from_shows_its_depth_and_age(stack: Stack, browser: Browser):
    worker = stack.child("search worker").process
    os.kill(worker.pid, signal.SIGSTOP)  # the only search worker hangs
    try:
        page = browser.request("GET /login", "GET", f"{stack.web}/login", 200).text
        sso, to_node = form_fields(page, "SAMLRequest")
        page = browser.request("POST node SSO", "POST", sso, 200, data=to_node).text
        _, login = form_fields(page, 'name="ticket"')
        person = stack.people[1]
        page = browser.request(
            "POST node login form", "POST", f"{stack.node}/login/standin/submit", 200,
            data={"ticket": login["ticket"], "first_name": person.first_name,
                  "last_name": person.last_name, "pesel": person.pesel,
                  "date_of_birth": person.date_of_birth, "action": "login"},
        ).text  # fmt: skip
        acs, post_back = form_fields(page, "SAMLart")
        browser.request("POST /saml/acs", "POST", acs, 303, data=post_back)
        time.sleep(1.5)

        waiting = scrape(stack.ports["web"])

        assert value(waiting, "ueoz_queue_depth", queue="search") == 1
        assert value(waiting, "ueoz_queue_oldest_age_seconds", queue="search") >= 1.0
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    deadline = time.monotonic() + 10
    while value(scrape(stack.ports["web"]), "ueoz_queue_depth", queue="search") != 0:
        assert time.monotonic() < deadline, "the search worker never took the attempt"
        time.sleep(0.2)


def test_a_killed_web_worker_keeps_its_counts_and_drops_its_requests_in_progress(
    stack: Stack, request: pytest.FixtureRequest
):
    for _ in range(20):
        assert httpx.get(f"{stack.web}/").status_code == 200
    counted = total(scrape(stack.ports["web"]), "ueoz_http_request_duration_seconds_count",
                    route="/")  # fmt: skip
    assert counted >= 20
    # A request the application is in the middle of: its form's body has not all come yet.
    host, port = stack.web.removeprefix("http://").split(":")
    slow = socket.create_connection((host, int(port)))
    request.addfinalizer(slow.close)
    slow.sendall(
        b"POST /migracja/submit HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\nemail="
    )
    deadline = time.monotonic() + 10
    while value(scrape(stack.ports["web"]), "ueoz_http_requests_in_progress") != 1:
        assert time.monotonic() < deadline, "the half-sent request never reached the application"
        time.sleep(0.1)
    web = stack.child("web service").process
    workers = Path(f"/proc/{web.pid}/task/{web.pid}/children").read_text().split()
    assert len(workers) == 2

    for pid in workers:
        os.kill(int(pid), signal.SIGKILL)
    slow.close()
    deadline = time.monotonic() + 20
    while not answers(f"{stack.web}/healthz"):
        assert time.monotonic() < deadline
        time.sleep(0.2)

    # Their live gauges went with them (child_exit): the half-sent request is no longer
    # there (the wait is for the health probe's own request, timed once its last byte left).
    after = eventually(
        stack.ports["web"], lambda now: value(now, "ueoz_http_requests_in_progress") == 0
    )
    # Counters are the instance's since it started: the dead workers' counts stay in.
    assert total(after, "ueoz_http_request_duration_seconds_count", route="/") == counted
