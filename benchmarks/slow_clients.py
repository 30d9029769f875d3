"""Slow clients against the embedded default's web service: does it still answer?

    .venv/bin/python benchmarks/slow_clients.py --connections 30
    .venv/bin/python benchmarks/slow_clients.py --connections 30 --worker-class gthread

Starts the web service as ``ueoz-migration dev`` starts it (gunicorn, the arguments of
:func:`ueoz_migration.devstack.plan`, 3 processes x 2 threads), on SQLite in a temporary
folder, with ``--worker-class`` in place of the devstack's when given (``gthread``: gunicorn's
own, as before the buffering worker). Then ``--connections`` clients each send the start of a
request and one more byte every two seconds, never finishing it, while a well-behaved client
asks ``/healthz`` every half second with a 5 s limit. Prints how many of its requests were
answered, and how fast.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_http import free_port, percentile

from ueoz_migration.config import Settings
from ueoz_migration.devstack import answers, cli, plan


class SlowClients:
    """Connections that send a request's start, then a byte every ``pause`` seconds."""

    def __init__(self, host: str, port: int, count: int, *, source: str = "", pause: float = 2.0):
        self.sockets: list[socket.socket] = []
        self.closed_by_server = 0
        self.stop = threading.Event()
        for _ in range(count):
            connection = socket.create_connection(
                (host, port), timeout=5, source_address=(source, 0) if source else None
            )
            connection.sendall(b"GET / HTTP/1.1\r\nHost: ueoz\r\nX-Slow: ")
            self.sockets.append(connection)
        self.thread = threading.Thread(target=self._trickle, args=(pause,), daemon=True)
        self.thread.start()

    def _trickle(self, pause: float) -> None:
        while not self.stop.wait(pause):
            for connection in list(self.sockets):
                try:
                    connection.sendall(b"a")
                except OSError:  # the server closed it: reset or broken pipe
                    self.closed_by_server += 1
                    self.sockets.remove(connection)
                    connection.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for connection in self.sockets:
            connection.close()


def probe(url: str, seconds: float) -> tuple[list[float], int]:
    """Ask ``url`` every half second for ``seconds``: answer times, and how many failed."""
    times, failed = [], 0
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                client.get(url).raise_for_status()
                times.append(time.monotonic() - started)
            except httpx.HTTPError:
                failed += 1
            time.sleep(max(0.0, 0.5 - (time.monotonic() - started)))
    return times, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--worker-class", help="instead of the devstack's")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="ueoz-slow-"))
    web = f"http://127.0.0.1:{free_port()}"
    environ = {
        "INSTANCE_DIR": str(folder), "BASE_URL": web, "APP_ENV": "bench",
        "STANDIN_URL": f"http://127.0.0.1:{free_port()}",
    }  # fmt: skip
    settings = Settings.from_env(environ)
    [web_child, *_] = plan(settings)
    argv = web_child.argv
    if args.worker_class:
        argv[argv.index("--worker-class") + 1] = args.worker_class
    env = web_child.env | environ
    subprocess.run(cli("db", "upgrade"), env=env, check=True, capture_output=True)
    server = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not answers(f"{web}/healthz"):
            time.sleep(0.2)
        calm, _ = probe(f"{web}/healthz", 3)
        slow = SlowClients("127.0.0.1", int(web.rsplit(":", 1)[1]), args.connections)
        times, failed = probe(f"{web}/healthz", args.seconds)
        slow.close()
        worker = argv[argv.index("--worker-class") + 1]
        print(
            f"{worker}, {argv[argv.index('--workers') + 1]} x {argv[argv.index('--threads') + 1]}"
            f": before the attack /healthz p50 {percentile(calm, 0.5) * 1000:.0f} ms; with "
            f"{args.connections} slow connections for {args.seconds:.0f} s: "
            f"{len(times)} of {len(times) + failed} answered within 5 s"
            + (f" (p50 {percentile(times, 0.5) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms)"
               if times else "")
            + f"; {slow.closed_by_server} slow connections closed by the server"
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
