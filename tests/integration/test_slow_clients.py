"""Slow clients (a byte every two seconds) hold no thread of the service, in either shape.

Production: nginx with deploy/nginx/ueoz-migration.conf reads each request whole before it
reaches gunicorn, so hundreds of slow connections cost gunicorn nothing while a person
migrates. The embedded default (no proxy): gunicorn_worker reads each request whole in the
worker's main loop, and closes a connection whose request has not come whole in time.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from benchmarks.bench_http import (
    MailReader,
    Results,
    VirtualUser,
    child_environment,
    generate_people,
    prepare_database,
)
from benchmarks.nginx import Nginx
from benchmarks.slow_clients import SlowClients

from tests.ports import free_port
from ueoz_migration.config import Settings
from ueoz_migration.devstack import answers, plan
from ueoz_migration.gunicorn_worker import REQUEST_TIMEOUT


def start(children, logs: Path) -> None:
    for child in children:
        with (logs / f"{child.name.replace(' ', '-')}.log").open("wb") as log:
            child.process = subprocess.Popen(
                child.argv, env=child.env, stdout=log, stderr=subprocess.STDOUT, process_group=0
            )


def stop(children) -> None:
    for child in children:
        if child.process.poll() is None:
            os.killpg(child.process.pid, signal.SIGTERM)
    for child in children:
        try:
            child.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()


def wait_for(*urls: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for url in urls:
        while not answers(url):
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.2)


def healthz_times(url: str, probes: int) -> list[float]:
    """Ask ``url`` ``probes`` times, half a second apart; the time of each answer."""
    times = []
    with httpx.Client(timeout=5.0) as client:
        for _ in range(probes):
            started = time.monotonic()
            assert client.get(url).status_code == 200
            times.append(time.monotonic() - started)
            time.sleep(0.5)
    return times


@pytest.fixture
def embedded(tmp_path: Path, sqlite_template: Path) -> Iterator[str]:
    """The embedded default's web service, as ``ueoz-migration dev`` starts it."""
    database = tmp_path / "ueoz.sqlite3"
    shutil.copy(sqlite_template, database)
    web = f"http://127.0.0.1:{free_port()}"
    environ = child_environment(tmp_path, f"sqlite:///{database}", web, "http://127.0.0.1:1")
    [web_child, *_] = plan(Settings.from_env(environ))
    web_child.env |= environ
    start([web_child], tmp_path)
    try:
        wait_for(f"{web}/healthz")
        yield web
    finally:
        stop([web_child])


def test_the_embedded_default_answers_through_slow_clients_and_closes_them(embedded: str):
    port = int(embedded.rsplit(":", 1)[1])
    # Ten times its threads (3 processes x 2), each holding a request it never finishes.
    slow = SlowClients("127.0.0.1", port, 60)
    try:
        times = healthz_times(f"{embedded}/healthz", 6)

        assert max(times) < 2.0, times
        deadline = time.monotonic() + REQUEST_TIMEOUT + 5
        while slow.sockets and time.monotonic() < deadline:
            time.sleep(0.5)
        # Closed once their time to send a whole request was up.
        assert slow.closed_by_server == 60
    finally:
        slow.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # production's
def test_the_production_proxy_keeps_hundreds_of_slow_clients_from_a_migration(
    tmp_path: Path, database_url: str
):
    # The smallest production-shaped instance: one gunicorn process of 2 threads (gthread, as
    # the unit runs it): without the proxy, two slow clients would stop it.
    proxy_port = free_port()
    web, node = f"http://127.0.0.1:{proxy_port}", f"http://127.0.0.1:{free_port()}"
    instance = tmp_path / "instance"
    instance.mkdir()
    environ = child_environment(instance, database_url, web, node)
    people = generate_people(2)
    prepare_database(environ, people, instance)
    planned = {child.name: child for child in plan(Settings.from_env(environ))}
    web_child, node_child = planned["web service"], planned["stand-in login node"]
    worker, mail = planned["search worker"], planned["mail sender"]
    gunicorn_port = free_port()
    argv = web_child.argv
    argv[argv.index("--bind") + 1] = f"127.0.0.1:{gunicorn_port}"
    argv[argv.index("--workers") + 1] = "1"
    argv[argv.index("--worker-class") + 1] = "gthread"
    children = [web_child, node_child, worker, mail]
    for child in children:
        child.env |= environ
    start(children, tmp_path)
    maildir = instance / "maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    folder = tmp_path / "nginx"
    proxy = Nginx(folder, proxy_port, [f"127.0.0.1:{gunicorn_port}"])
    mail_reader = MailReader(maildir)
    mail_reader.thread.start()
    args = type("Args", (), {"step_timeout": 30.0, "status_interval": 0.2})()
    person = VirtualUser(
        iter(()), threading.Lock(), Results(), mail_reader, args, web, node, threading.Event()
    )
    slow = None
    try:
        wait_for(f"http://127.0.0.1:{gunicorn_port}/healthz", f"{node}/healthz", f"{web}/healthz")
        # Three hundred slow clients, from an address of their own (the per-client limit is
        # the proxy's other defence, and must not count the person's own connections).
        slow = SlowClients("127.0.0.1", proxy_port, 300, source="127.0.0.2")

        started = time.monotonic()
        person.migrate(people[0])

        assert time.monotonic() - started < 30
        assert len(person.results.migrations) == 1
        # nginx closed them when their header did not come whole in client_header_timeout.
        deadline = time.monotonic() + 20
        while slow.sockets and time.monotonic() < deadline:
            time.sleep(0.5)
        assert slow.closed_by_server == 300
        access = (folder / "access.log").read_text()
        assert access.count('" 408 ') == 300
    finally:
        if slow is not None:
            slow.close()
        mail_reader.stop.set()
        person.client.close()
        proxy.stop()
        stop(children)
