"""A PostgreSQL restart is ridden out: new connections are tried again for a few seconds.

The server is reached through a small TCP relay that starts listening only a moment after
the service first asks, as a restarting server does: connections are refused until then.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from tests.conftest import postgres_url
from tests.ports import free_port
from ueoz_migration.db.engine import make_engine


class _Relay(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        target.close()


def relay_to(host: str, port: int, listen: int) -> _Relay:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            upstream = socket.create_connection((host, port))
            back = threading.Thread(target=_pipe, args=(upstream, self.request), daemon=True)
            back.start()
            _pipe(self.request, upstream)
            back.join()

    return _Relay(("127.0.0.1", listen), Handler)


@pytest.fixture
def restarting() -> Iterator[tuple[str, threading.Event]]:
    """A PostgreSQL address that refuses connections until the returned event is set."""
    server = urlsplit(postgres_url())
    port = free_port()
    up = threading.Event()
    relays: list[_Relay] = []

    def come_up() -> None:
        up.wait()
        relay = relay_to(server.hostname or "127.0.0.1", server.port or 5432, port)
        relays.append(relay)
        relay.serve_forever(poll_interval=0.05)

    threading.Thread(target=come_up, daemon=True).start()
    yield postgres_url().replace(f":{server.port}/", f":{port}/"), up
    for relay in relays:
        relay.shutdown()
        relay.server_close()


def test_a_connection_refused_while_the_server_restarts_is_tried_again(restarting):
    url, up = restarting
    engine = make_engine(url, connect_wait=5)
    threading.Timer(1.0, up.set).start()  # the server is back after a second
    started = time.monotonic()

    with engine.connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar() == 1

    assert 0.9 < time.monotonic() - started < 5
    engine.dispose()


def test_without_a_wait_or_past_it_the_outage_is_an_error_at_once(restarting):
    url, _never = restarting
    for wait in (0, 0.5):
        engine = make_engine(url, connect_wait=wait)
        started = time.monotonic()
        with pytest.raises(OperationalError):
            engine.connect()
        assert time.monotonic() - started < wait + 1
        engine.dispose()
