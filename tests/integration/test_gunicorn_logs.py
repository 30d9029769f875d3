"""gunicorn's own lines (boot, access log) come out as the service's JSON lines, redacted.

gunicorn's default logger keeps its lines from the root logger (``propagate = False``) and
prints them as plain text; ``ueoz_migration.gunicorn_logging`` is what fixes that, and this is
gunicorn really started with it, as the devstack and production start it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.ports import free_port
from ueoz_migration.config import Settings
from ueoz_migration.devstack import plan

LOGGER_CLASS = "ueoz_migration.gunicorn_logging.GunicornLogger"
PESEL = "97040117247"


def fetch(url: str) -> tuple[int, str]:
    """The status and the X-Request-Id of a GET, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["X-Request-Id"]
    except urllib.error.HTTPError as error:
        return error.code, error.headers["X-Request-Id"]


class Gunicorn:
    """gunicorn serving ``create_app()`` on a free loopback port, its output in files."""

    def __init__(self, tmp_path: Path, environ: dict[str, str]) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.out = (tmp_path / "stdout").open("w+")
        self.err = (tmp_path / "stderr").open("w+")
        argv = [
            sys.executable, "-m", "gunicorn",
            "--bind", self.url.removeprefix("http://"),
            "--workers", "1", "--worker-class", "gthread", "--threads", "2",
            "--graceful-timeout", "1",
            "--no-control-socket",
            "--logger-class", LOGGER_CLASS,
            "ueoz_migration.web:create_app()",
        ]  # fmt: skip
        self.process = subprocess.Popen(argv, env=environ, stdout=self.out, stderr=self.err)

    def wait_until_it_answers(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fetch(f"{self.url}/healthz")
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"gunicorn never answered:\n{self.output()}") from None
                time.sleep(0.05)

    def stop(self) -> str:
        """Stop gunicorn as a supervisor does (SIGTERM); return all it printed."""
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=10) == 0, self.output()
        return self.output()

    def output(self) -> str:
        for stream in self.out, self.err:
            stream.flush()
            stream.seek(0)
        return self.out.read() + self.err.read()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.out.close()
        self.err.close()


@pytest.fixture
def gunicorn(tmp_path: Path, sqlite_template: Path):
    shutil.copy(sqlite_template, tmp_path / "ueoz.sqlite3")
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("APP_", "DATABASE_", "MAIL", "SMTP_", "STANDIN_", "WK_", "LOG_"))
        and name not in {"BASE_URL", "SECRET_KEY", "AUDIT_KEY", "PESEL_HASH_KEY", "INSTANCE_DIR"}
    }
    environ |= {
        "INSTANCE_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'ueoz.sqlite3'}",
        "LOG_JSON": "1",
        "PYTHONUNBUFFERED": "1",
    }
    server = Gunicorn(tmp_path, environ)
    try:
        server.wait_until_it_answers()
        yield server
    finally:
        server.close()


def test_every_line_gunicorn_prints_is_a_redacted_json_object(gunicorn):
    health = fetch(f"{gunicorn.url}/healthz?pesel={PESEL}")
    link = fetch(f"{gunicorn.url}/weryfikacja/{PESEL}")  # a verification link: token in the path
    unknown = fetch(f"{gunicorn.url}/nie-ma/{PESEL}")

    printed = gunicorn.stop()

    assert (health[0], link[0], unknown[0]) == (200, 404, 404)
    assert PESEL not in printed
    entries = []
    for line in printed.splitlines():
        entry = json.loads(line)  # every line, the boot lines and gunicorn's included
        assert isinstance(entry, dict), line
        assert {"event", "level", "logger", "timestamp"} <= entry.keys(), line
        entries.append(entry)
    said = [(entry["logger"], entry["event"].split(":")[0]) for entry in entries]
    for boot_or_stop in ("Starting gunicorn", "Listening at", "Booting worker with pid"):
        assert any(
            logger == "gunicorn.error" and event.startswith(boot_or_stop) for logger, event in said
        ), boot_or_stop
    assert ("gunicorn.error", "Shutting down") in said

    access = [entry for entry in entries if entry["logger"] == "gunicorn.access"]
    assert {entry["event"] for entry in access} == {"http.request"}
    # Found by request id: with two threads, the lines need not come in the requests' order.
    by_id = {entry["request_id"]: entry for entry in access}
    health_line, link_line, unknown_line = (by_id[answer[1]] for answer in (health, link, unknown))
    fields = ("level", "method", "path", "status")
    assert {name: health_line[name] for name in fields} == {
        "level": "info",
        "method": "GET",
        "path": "/healthz",  # without its query string
        "status": 200,
    }
    assert health_line["duration_ms"] >= 0 and health_line["bytes"] > 0
    assert (link_line["path"], link_line["status"]) == ("/weryfikacja/<token>", 404)
    # The path, with the PESEL masked as everywhere else.
    assert (unknown_line["path"], unknown_line["status"]) == ("/nie-ma/********247", 404)


def test_the_devstack_runs_gunicorn_with_the_logger_class(tmp_path):
    (web, *_others) = plan(Settings.from_env({"INSTANCE_DIR": str(tmp_path)}))

    flag = web.argv.index("--logger-class")
    assert web.argv[flag + 1] == LOGGER_CLASS


def test_a_bad_login_setting_stops_gunicorn_with_one_line(tmp_path: Path, sqlite_template: Path):
    shutil.copy(sqlite_template, tmp_path / "ueoz.sqlite3")
    environ = {
        name: value for name, value in os.environ.items() if not name.startswith(("WK_", "APP_"))
    } | {
        "INSTANCE_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'ueoz.sqlite3'}",
        "WK_TIMEOUT_SECONDS": "soon",
    }
    server = Gunicorn(tmp_path, environ)
    try:
        assert server.process.wait(timeout=20) != 0
        output = server.output()
    finally:
        server.close()

    assert "Error: WK_TIMEOUT_SECONDS" in output
    assert "Traceback" not in output
