"""`ueoz-migration dev`: the embedded default in one command, and stopped in one keystroke."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.ports import free_port
from ueoz_migration.cli import main
from ueoz_migration.devstack import answers

BANNER = "UEOZ migration is running: open "
CLI = str(Path(sys.executable).with_name("ueoz-migration"))


def embedded_environment(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The developer's environment with none of our settings: the embedded default."""
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(
            ("APP_", "DATABASE_", "MAIL", "SMTP_", "STANDIN_", "WK_", "OIDC_", "DEMO_")
        )
        and name not in {"BASE_URL", "SECRET_KEY", "AUDIT_KEY", "PESEL_HASH_KEY", "INSTANCE_DIR"}
    }
    return environ | {"INSTANCE_DIR": str(tmp_path / "instance"), **overrides}


class RunningStack:
    """`ueoz-migration dev` started as a developer would, its output read as it comes."""

    def __init__(self, tmp_path: Path) -> None:
        self.web = f"http://127.0.0.1:{free_port()}"
        self.node = f"http://127.0.0.1:{free_port()}"
        self.systems = f"http://127.0.0.1:{free_port()}"
        environ = embedded_environment(
            tmp_path, BASE_URL=self.web, STANDIN_URL=self.node, DEMO_SYSTEMS_URL=self.systems
        )
        self.process = subprocess.Popen(
            [CLI, "dev"],
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.process.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never came; the stack said:\n{self.output}")

    def child_pids(self) -> dict[str, int]:
        """The children the stack announced: ``started the NAME (pid N)``."""
        pids = {}
        for line in self.lines:
            if line.startswith("started the ") and "(pid " in line:
                name = line.removeprefix("started the ").split(" (pid ")[0]
                pids[name] = int(line.rsplit("(pid ", 1)[1].rstrip(")"))
        return pids

    def finish(self, timeout: float = 30) -> int:
        code = self.process.wait(timeout=timeout)
        self.reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in self.child_pids().values():
            for member in processes_in_group(pid):
                os.kill(member, signal.SIGKILL)
        self.reader.join(timeout=5)
        assert self.process.stdout is not None
        self.process.stdout.close()


def processes_in_group(group: int) -> list[int]:
    """Every live process whose process group is ``group`` (read from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read()


@pytest.fixture
def stack(tmp_path):
    running = RunningStack(tmp_path)
    yield running
    running.kill()


def test_one_command_runs_the_service_and_ctrl_c_stops_every_child(stack):
    banner = stack.wait_for(BANNER)

    assert banner == (
        f"UEOZ migration is running: open {stack.web}/  (demo domain systems, which sign in "
        f"through it: {stack.systems}/; stand-in login node: {stack.node}; "
        f"mail: {stack.web}/dev/mail). Ctrl-C stops everything."
    )
    status, body = get(f"{stack.web}/healthz")
    assert (status, json.loads(body)["status"]) == (200, "ok")
    status, body = get(f"{stack.web}/readyz")  # the stack upgraded the schema first
    assert (status, json.loads(body)["status"]) == (200, "ok")
    assert get(f"{stack.node}/healthz")[0] == 200
    assert get(f"{stack.web}/dev/mail")[0] == 200
    status, page = get(f"{stack.systems}/P1/")
    assert status == 200 and "Zaloguj się przez UEOZ" in page.decode()
    children = stack.child_pids()
    assert set(children) == {
        "web service",
        "stand-in login node",
        "demo domain systems",
        "search worker",
        "mail sender",
        "logout sender",
    }

    stack.process.send_signal(signal.SIGINT)

    assert stack.finish() == 0
    assert stack.lines[-1] == "UEOZ migration stopped."
    for name, pid in children.items():
        assert processes_in_group(pid) == [], f"the {name} outlived the stack"
    with pytest.raises(OSError):
        get(f"{stack.web}/healthz")


def test_a_child_that_dies_stops_the_stack_and_is_named(stack):
    stack.wait_for(BANNER)
    children = stack.child_pids()

    os.killpg(children["mail sender"], signal.SIGKILL)

    assert stack.finish() == 1
    assert "the mail sender stopped (exit code -9); stopping everything." in stack.lines
    for name, pid in children.items():
        assert processes_in_group(pid) == [], f"the {name} outlived the stack"


def test_production_configuration_is_refused(tmp_path):
    environ = embedded_environment(
        tmp_path,
        APP_ENV="production",
        SECRET_KEY="s" * 32,
        AUDIT_KEY="a" * 32,
        PESEL_HASH_KEY="p" * 32,
        DATABASE_URL=f"sqlite:///{tmp_path / 'prod.sqlite3'}",
        BASE_URL="https://ueoz.example",
        OIDC_KEYS_DIR=str(tmp_path / "oidc-keys"),
        OIDC_SUBJECT_KEY="o" * 32,
    )

    result = CliRunner().invoke(main, ["dev"], env=environ)

    assert result.exit_code == 1
    assert "never with APP_ENV=production" in result.output
    assert not (tmp_path / "prod.sqlite3").exists()


def test_a_taken_port_is_named_and_nothing_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        environ = embedded_environment(tmp_path, BASE_URL=f"http://127.0.0.1:{port}")

        result = CliRunner().invoke(main, ["dev"], env=environ)

    assert result.exit_code == 1
    assert f"127.0.0.1:{port} (BASE_URL) is taken" in result.output
    assert not (tmp_path / "instance" / "ueoz.sqlite3").exists()


def test_a_database_it_cannot_reach_is_one_line_without_its_password(tmp_path):
    environ = embedded_environment(
        tmp_path,
        BASE_URL=f"http://127.0.0.1:{free_port()}",
        STANDIN_URL=f"http://127.0.0.1:{free_port()}",
        DATABASE_URL=f"postgresql://ueoz:S3CRET@127.0.0.1:{free_port()}/ueoz",
    )

    result = CliRunner().invoke(main, ["dev"], env=environ)

    assert result.exit_code == 1
    last = result.output.splitlines()[-1]
    assert last.startswith("Error: the database postgresql+psycopg://ueoz:***@127.0.0.1:")
    assert last.endswith(
        "cannot be used (OperationalError): is it reachable, and is DATABASE_URL right?"
    )
    assert "S3CRET" not in result.output and "Traceback" not in result.output


def test_a_port_answered_by_something_else_than_http_is_no_answer(tmp_path):
    # Another program on the web service's port (an SMTP server, say): the stack must go on
    # waiting for its own server, and report it if it died, not fail on the stranger's reply.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()

        def greet() -> None:
            connection, _ = server.accept()
            with connection:
                connection.sendall(b"220 localhost ESMTP\r\n")

        greeter = threading.Thread(target=greet)
        greeter.start()
        assert answers(f"http://127.0.0.1:{server.getsockname()[1]}/healthz") is False
        greeter.join()
