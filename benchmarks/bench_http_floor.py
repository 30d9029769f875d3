"""Measure the floor of the HTTP benchmark: the same load on a web app that does nothing.

    .venv/bin/python benchmarks/bench_http_floor.py [--users 32] [--duration 20] [--markdown]

``bench_http.py`` asks how many complete migrations per second the real stack serves.
This asks how many it could serve at best on this machine with the design's fixed parts
and no work of ours: gunicorn in the shape ``ueoz-migration dev`` runs it
(``devstack.GUNICORN_WORKERS`` × ``GUNICORN_THREADS``, gthread), a Flask app whose one
view returns a fixed page of about the size of ours and sets a cookie, and the same
virtual users (threads, one httpx client each, on this machine) making ``--requests``
requests per "migration", the number a complete migration makes in ``bench_http.py``
(6,761 requests for 535 migrations in its last run: 12.6; the node's two pages and the
status polls included). No database, no SAML, no templates, no session store.

Reported: "migrations" per second, p50/p95/p99 request latency, and the CPU each side
used per "migration" (gunicorn and its workers; this process, the client). The aim of
issue 4 is 50 migrations/s with p99 under 100 ms; whatever this floor reaches is an upper
bound for the real stack, which runs the node, the worker, the mail sender and a database
on the same two cores too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from bench_http import cpu_seconds, free_port, machine, percentile, table

from ueoz_migration.devstack import GUNICORN_THREADS, GUNICORN_WORKERS, answers

#: A Flask app with one view: a fixed page of ~4 kB (our pages weigh 3.6–4.5 kB) and a cookie.
APP = """
from flask import Flask, make_response

app = Flask(__name__)
PAGE = "<!doctype html><title>floor</title>" + "<p>UEOZ</p>" * 350


@app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
@app.route("/<path:path>", methods=["GET", "POST"])
def page(path):
    response = make_response(PAGE)
    response.set_cookie("session", "x" * 43, httponly=True, samesite="Lax")
    return response
"""


def user(
    url: str, requests: int, stop: threading.Event, latencies: list[float], done: list[int]
) -> None:
    """Make ``requests`` requests per round until told to stop; count the rounds."""
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            for n in range(requests):
                started = time.perf_counter()
                client.get(f"/step/{n}").raise_for_status()
                latencies.append(time.perf_counter() - started)
            done.append(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=13, help="requests per migration")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ueoz-floor-") as folder:
        Path(folder, "floor_app.py").write_text(APP)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [
            sys.executable, "-m", "gunicorn",
            "--bind", f"127.0.0.1:{port}",
            "--workers", str(GUNICORN_WORKERS), "--worker-class", "gthread",
            "--threads", str(GUNICORN_THREADS),
            "--no-control-socket", "--chdir", folder,
            "floor_app:app",
        ]  # fmt: skip
        gunicorn = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not answers(url):
                time.sleep(0.1)
            stop = threading.Event()
            latencies: list[float] = []
            done: list[int] = []
            threads = [
                threading.Thread(target=user, args=(url, args.requests, stop, latencies, done))
                for _ in range(args.users)
            ]
            for thread in threads:
                thread.start()
            time.sleep(args.warmup)
            roots = {"web (gunicorn)": gunicorn.pid, "client (this process)": os.getpid()}
            latencies.clear()
            done.clear()
            cpu_start, started = cpu_seconds(roots), time.perf_counter()
            time.sleep(args.duration)
            cpu_end, elapsed = cpu_seconds(roots), time.perf_counter() - started
            rounds, measured = len(done), list(latencies)
            stop.set()
            for thread in threads:
                thread.join()
        finally:
            gunicorn.terminate()
            gunicorn.wait()

    rate = rounds / elapsed
    print(
        f"floor: {args.users} virtual users, {elapsed:.1f} s measured after {args.warmup:.0f} s "
        f"warm-up; gunicorn {GUNICORN_WORKERS} workers × {GUNICORN_THREADS} threads (gthread), "
        f"a Flask view that returns a fixed page; {args.requests} requests per migration.\n\n"
        f"{machine()}; load average {os.getloadavg()[0]:.2f} after (1 min).\n\n"
        f"**{rate:.1f} migrations/s at best** ({rounds} rounds of {args.requests} requests in "
        f"{elapsed:.1f} s); requests p50 {statistics.median(measured) * 1000:.0f} ms, "
        f"p95 {percentile(measured, 0.95) * 1000:.0f} ms, "
        f"p99 {percentile(measured, 0.99) * 1000:.0f} ms\n"
    )
    rows = []
    for name in roots:
        used = cpu_end[name] - cpu_start[name]
        rows.append(
            [name, f"{used:.1f}", f"{used / elapsed:.2f}", f"{used / max(rounds, 1) * 1000:.1f}"]
        )
    print(table(["process", "CPU s", "cores busy", "CPU ms per migration"], rows, args.markdown))


if __name__ == "__main__":
    main()
