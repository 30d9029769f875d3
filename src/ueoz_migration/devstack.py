"""The embedded default in one command (``ueoz-migration dev``, ``make run``).

Brings the SQLite database to the current schema, loads the demo people, then runs every part
of the service as a child process of this one:

- the web service (gunicorn, ``ueoz_migration.web:create_app()``) at ``BASE_URL``;
- the stand-in login node (``python -m ueoz_migration.standin``) at ``STANDIN_URL``;
- the demo domain systems (``python -m ueoz_migration.demo_systems``) at ``DEMO_SYSTEMS_URL``,
  registered as OpenID Connect clients;
- the search worker (``ueoz-migration worker``);
- the mail sender (``ueoz-migration mail-sender``), delivering into the Maildir;
- the logout sender (``ueoz-migration logout-sender``), telling the demo systems of logouts.

Each child leads a process group of its own, so a stop reaches gunicorn's workers too, and
the terminal's Ctrl-C reaches this runner only: it then stops the children in order instead
of every process racing to exit at once. When a child dies, the whole stack stops and says
which one; half a service is harder to debug than none. On Linux each child is also told to
stop when this runner dies, so a killed runner leaves nothing listening on the ports.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .config import Settings
from .signals import stop_on_signals

#: How long the web service and the node get to answer before the stack gives up.
STARTUP_TIMEOUT = 60.0
#: How long the children get to stop on SIGTERM before they are killed.
STOP_TIMEOUT = 10.0

PR_SET_PDEATHSIG = 1

#: The web service's shape: gunicorn worker processes, and threads in each.
GUNICORN_WORKERS = 3
GUNICORN_THREADS = 2
WORKER_CLASS = "ueoz_migration.gunicorn_worker.BufferingThreadWorker"


class DevStackError(RuntimeError):
    """The stack cannot start; the message says why and what to change."""


@dataclass
class Child:
    """One part of the stack and, once started, its process."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def host_and_port(url: str) -> tuple[str, int]:
    """Return where a service at ``url`` listens: ``http://127.0.0.1:5000`` → (127.0.0.1, 5000)."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise DevStackError(f"{url!r} is not an address like http://127.0.0.1:5000")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def cli(*args: str) -> list[str]:
    """The argv that runs ``ueoz-migration ARGS`` with this very interpreter."""
    script = shutil.which("ueoz-migration", path=os.path.dirname(sys.executable))
    if script:
        return [script, *args]
    launcher = "import sys; from ueoz_migration.cli import main; sys.exit(main())"
    return [sys.executable, "-c", launcher, *args]


def plan(settings: Settings) -> list[Child]:
    """Return the children the stack runs for ``settings``, in start order."""
    web_host, web_port = host_and_port(settings.base_url)
    node_host, node_port = host_and_port(settings.standin_url)
    env = {
        **os.environ,
        # Children may start elsewhere; they must find the same database, keys and Maildir.
        "INSTANCE_DIR": str(settings.instance_dir),
        "BASE_URL": settings.base_url,
        "STANDIN_URL": settings.standin_url,
        "DEMO_SYSTEMS_URL": settings.demo_systems_url,
        "PYTHONUNBUFFERED": "1",
    }
    env.setdefault("WK_NODE_URL", settings.standin_url)
    node_env = env | {
        "STANDIN_HOST": node_host,
        "STANDIN_PORT": str(node_port),
        "STANDIN_BASE_URL": settings.standin_url,
        "PUBLIC_BASE_URL": settings.base_url,
    }
    # 3 processes x 2 threads: of 1x8, 2x4 and 3x2, the one that used the least CPU per
    # complete migration in every round of benchmarks/bench_http.py (docs/performance.md);
    # probably because fewer threads contend for each process's GIL.
    gunicorn = [
        sys.executable, "-m", "gunicorn",
        "--bind", f"{web_host}:{web_port}",
        # gthread, but a request goes to a thread only once it came whole: slow clients hold
        # no thread (gunicorn_worker; production has nginx in front for that).
        "--workers", str(GUNICORN_WORKERS), "--worker-class", WORKER_CLASS,
        "--threads", str(GUNICORN_THREADS),
        "--graceful-timeout", "5",
        # gunicorn's own lines (boot, access log) through our log format and redaction: its
        # default logger stops them at its loggers (propagate=False); see gunicorn_logging.
        "--logger-class", "ueoz_migration.gunicorn_logging.GunicornLogger",
        # The metrics' hooks: the workers' counts summed, METRICS_BIND (see gunicorn_config).
        "--config", "python:ueoz_migration.gunicorn_config",
        # One control socket per home directory would make two stacks on a machine collide.
        "--no-control-socket",
        "ueoz_migration.web:create_app()",
    ]  # fmt: skip
    return [
        Child("web service", gunicorn, env),
        Child("stand-in login node", [sys.executable, "-m", "ueoz_migration.standin"], node_env),
        Child("demo domain systems", [sys.executable, "-m", "ueoz_migration.demo_systems"], env),
        Child("search worker", cli("worker"), env),
        Child("mail sender", cli("mail-sender"), env),
        Child("logout sender", cli("logout-sender"), env),
    ]


def prepare(settings: Settings, out: Callable[[str], None]) -> None:
    """Bring the database to the current schema and load the demo people (both idempotent)."""
    from sqlalchemy.exc import SQLAlchemyError

    from .db.engine import make_engine, make_sessionmaker, shown_url
    from .db.schema import upgrade
    from .demo import seed_demo
    from .demo_systems import register_demo_systems
    from .oidc.clients import ClientRegistry

    settings.instance_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    try:
        upgrade(engine)
        out(f"database at head: {shown_url(engine)}")
        sessions = make_sessionmaker(engine)
        report = seed_demo(sessions, pesel_key=settings.pesel_key)
        out(f"demo people in place (UEOZ accounts added now: {report.ueoz_added})")
        register_demo_systems(
            ClientRegistry(sessions, production=False),
            settings.instance_dir,
            settings.demo_systems_url,
        )
        out(f"demo domain systems registered at {settings.demo_systems_url}")
    except SQLAlchemyError as error:
        # Its message may quote a row or the server's words; the class says enough here.
        raise DevStackError(
            f"the database {shown_url(engine)} cannot be used ({type(error).__name__}): "
            "is it reachable, and is DATABASE_URL right?"
        ) from None
    finally:
        engine.dispose()


def check_ports_free(settings: Settings) -> None:
    """Refuse to start when something already listens where the stack would."""
    for name, url in (
        ("BASE_URL", settings.base_url),
        ("STANDIN_URL", settings.standin_url),
        ("DEMO_SYSTEMS_URL", settings.demo_systems_url),
    ):
        host, port = host_and_port(url)
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                raise DevStackError(
                    f"{host}:{port} ({name}) is taken ({error.strerror}); stop what runs "
                    f"there (another `ueoz-migration dev`?) or set {name} to a free port."
                ) from None


def answers(url: str, timeout: float = 1.0) -> bool:
    """Say whether an HTTP server answers at ``url`` (any status counts).

    Something that is not HTTP answering there (another program took the port first, and
    our server could not bind it) is no answer: the server that died is reported instead.
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 - our own loopback URL
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError, http.client.HTTPException):
        return False


# Looked up here, in the runner, so that the child between fork and exec only calls it: no
# dynamic loading there, where a lock held by another thread at the fork would never be freed.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux for SIGTERM if the runner dies first."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Stack:
    """Runs the children, watches them, and stops them all together."""

    def __init__(self, children: list[Child], out: Callable[[str], None]) -> None:
        self.children = children
        self.out = out

    def start(self) -> None:
        for child in self.children:
            child.process = subprocess.Popen(  # noqa: S603 - our own argv, no shell
                child.argv,
                env=child.env,
                process_group=0,
                # Safe with the one other thread, the signal relay: it holds no lock the
                # child needs, and the child only makes one system call (_die_with_parent).
                preexec_fn=_die_with_parent,
            )
            self.out(f"started the {child.name} (pid {child.process.pid})")

    def dead_child(self) -> Child | None:
        return next((child for child in self.children if not child.running), None)

    def wait_until_answering(self, urls: dict[str, str], stop: threading.Event) -> bool:
        """Wait until every URL answers; False if asked to stop or a child died first."""
        pending = dict(urls)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while pending:
            if stop.is_set() or self.dead_child() is not None:
                return False
            if time.monotonic() > deadline:
                raise DevStackError(
                    f"no answer after {STARTUP_TIMEOUT:.0f} s from the " + " and the ".join(pending)
                )
            for name, url in list(pending.items()):
                if answers(url):
                    del pending[name]
            stop.wait(0.2)
        return True

    def watch(self, stop: threading.Event) -> Child | None:
        """Block until asked to stop (None) or until a child dies (that child)."""
        while not stop.wait(0.5):
            dead = self.dead_child()
            if dead is not None:
                return dead
        return None

    def stop(self) -> None:
        """SIGTERM every child's process group, wait, then SIGKILL whatever is left."""
        started = [child for child in self.children if child.process is not None]
        for child in started:
            _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in started:
            assert child.process is not None
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.out(f"the {child.name} did not stop in {STOP_TIMEOUT:.0f} s; killing it")
        for child in started:
            # Also reaches a group member that outlived its leader (a gunicorn worker).
            _signal_group(child, signal.SIGKILL)
            assert child.process is not None
            child.process.wait()


def _signal_group(child: Child, number: int) -> None:
    assert child.process is not None
    with suppress(ProcessLookupError, PermissionError):  # the whole group is gone already
        os.killpg(child.process.pid, number)


def banner(settings: Settings) -> str:
    return (
        f"UEOZ migration is running: open {settings.base_url}/  "
        f"(demo domain systems, which sign in through it: {settings.demo_systems_url}/; "
        f"stand-in login node: {settings.standin_url}; mail: {settings.base_url}/dev/mail). "
        "Ctrl-C stops everything."
    )


def run_stack(settings: Settings, out: Callable[[str], None] | None = None) -> int:
    """Run the embedded default until Ctrl-C or SIGTERM (exit 0) or a child's death (exit 1)."""
    say = out or (lambda line: print(line, flush=True))
    if settings.production:
        raise DevStackError(
            "`ueoz-migration dev` runs the development stack (SQLite, the stand-in login node, "
            "the Maildir) and never with APP_ENV=production; see docs/operations.md."
        )
    check_ports_free(settings)
    with stop_on_signals() as stop:
        prepare(settings, say)
        if stop.is_set():
            return 0
        stack = Stack(plan(settings), say)
        try:
            stack.start()
            urls = {
                "web service": f"{settings.base_url}/healthz",
                "stand-in login node": f"{settings.standin_url}/healthz",
                "demo domain systems": f"{settings.demo_systems_url}/healthz",
            }
            dead = None
            if stack.wait_until_answering(urls, stop):
                say(banner(settings))
                dead = stack.watch(stop)
            else:
                dead = stack.dead_child()
            if dead is not None:
                assert dead.process is not None
                say(
                    f"the {dead.name} stopped (exit code {dead.process.returncode}); "
                    "stopping everything."
                )
                return 1
            say("stopping…")
            return 0
        finally:
            stack.stop()
            say("UEOZ migration stopped.")
