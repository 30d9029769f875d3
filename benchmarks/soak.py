"""`make soak`: the production shape on this machine, under load, while its parts die.

    .venv/bin/python benchmarks/soak.py                # about 8 minutes
    .venv/bin/python benchmarks/soak.py --minutes 3 --users 8

Sets up, on loopback, what docs/operations.md ("Production recipe") ships, from the very
files it ships:

- PostgreSQL with fsync on (``scripts/postgres.sh``, its own port and data folder);
- nginx with ``deploy/nginx/ueoz-migration.conf``: round robin, no sticky sessions, over
- two web instances, two search workers and two mail senders, each run from its unit in
  ``deploy/systemd/`` as systemd would run it (its ``Environment=``, ``EnvironmentFile=``,
  ``ExecStart=``, and ``Restart=always`` after ``RestartSec=``), the install path and
  ``/etc/ueoz-migration/`` pointed at this run's folders;
- an SMTP server (aiosmtpd) on loopback, delivering into a Maildir;
- the stand-in login node.

Virtual users (benchmarks/bench_http.py's, each from a loopback address of its own, as
distinct browsers) run complete migrations, from a plain ``/login``, while a schedule of
faults runs: kill -9 of a web instance (restarted), of a search worker and of a mail sender
while they hold work, a PostgreSQL restart, the SMTP server down for a minute, the e-PLOZ
directory unavailable to the search (its database role loses the right to read the table)
for longer than the search's retries last. Then every person whose migration was cut short
logs in again and finishes it, and the run checks and prints what docs/operations.md
("Faults survived") reports.
"""

from __future__ import annotations

import argparse
import contextlib
import email
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email import policy
from pathlib import Path

import httpx
import psycopg
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_http import (
    MailReader,
    Person,
    Results,
    StepFailed,
    VirtualUser,
    form_fields,
    generate_people,
    write_export,
)
from benchmarks.nginx import Nginx

from ueoz_migration.devstack import answers, cli

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
PG_PORT, PG_DATA = 55434, "/tmp/ueoz-pg-soak"
INSTALLED = "/opt/ueoz-migration/venv/bin/"
WEB_PORTS = ("8001", "8002")
SEARCH_ROLE = "ueoz_search"
#: Pages before the login is back at the service: a failure there started no attempt.
NOT_STARTED = {"GET /login", "POST node SSO", "POST node login form", "form"}
#: A 5xx within this long after an instance's kill counts as the kill's.
KILL_WINDOW = 10.0


# -- units, run as systemd runs them --------------------------------------------------------


@dataclass
class Unit:
    """One instance of a unit file of deploy/systemd, run as systemd would run it."""

    template: str  # ueoz-web@.service
    instance: str
    etc: Path  # stands for /etc/ueoz-migration
    run: Path  # stands for /run
    logs: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    stopping: bool = False
    directives: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        section = ""
        for line in (DEPLOY / "systemd" / self.template).read_text().splitlines():
            line = line.strip()
            if line.startswith("["):
                section = line
            elif section == "[Service]" and "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                self.directives.append((key, value))

    @property
    def name(self) -> str:
        return self.template.replace("@.service", f"@{self.instance}")

    def _specifiers(self, text: str) -> str:
        prefix = self.template.split("@", 1)[0]
        text = text.replace("%i", self.instance).replace("%p", prefix)
        text = text.replace("%H", socket.gethostname())
        text = text.replace("/etc/ueoz-migration/", f"{self.etc}/")
        return text.replace("/run/", f"{self.run}/")

    def environment(self) -> dict[str, str]:
        """Environment=, then EnvironmentFile= (which wins), in the order systemd reads them."""
        env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "HOME": str(self.run)}
        assigned: dict[str, str] = {}
        files: dict[str, str] = {}
        for key, value in self.directives:
            value = self._specifiers(value)
            if key == "Environment":
                for word in shlex.split(value):
                    name, _, text = word.partition("=")
                    assigned[name] = text
            elif key == "EnvironmentFile":
                optional = value.startswith("-")
                path = Path(value.lstrip("-"))
                if not path.exists():
                    if optional:
                        continue
                    raise SystemExit(f"{self.name}: no {path}")
                for line in path.read_text().splitlines():
                    if line.strip() and not line.lstrip().startswith("#"):
                        name, _, text = line.partition("=")
                        files[name.strip()] = text.strip()
            elif key == "RuntimeDirectory":
                (self.run / value).mkdir(parents=True, exist_ok=True)
        return env | assigned | files

    def argv(self, env: dict[str, str]) -> list[str]:
        [command] = [value for key, value in self.directives if key == "ExecStart"]
        command = self._specifiers(command).replace(
            INSTALLED, str(Path(sys.executable).parent) + "/"
        )
        command = re.sub(r"\$\{(\w+)\}", lambda match: env[match.group(1)], command)
        return shlex.split(command)

    def restart_delay(self) -> float:
        return float(dict(self.directives).get("RestartSec", "0.1"))

    def start(self) -> None:
        env = self.environment()
        with (self.logs / f"{self.name}.log").open("ab") as log:
            self.process = subprocess.Popen(
                self.argv(env), env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0
            )

    def kill(self) -> None:
        """kill -9 of the whole unit: its main process and every child."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def stop(self) -> None:
        self.stopping = True
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            self.process.wait()


class Supervisor(threading.Thread):
    """Restart=always: a unit whose process died is started again after RestartSec."""

    def __init__(self, units: list[Unit]) -> None:
        super().__init__(daemon=True)
        self.units = units
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            for unit in self.units:
                if unit.stopping or unit.process is None or unit.process.poll() is None:
                    continue
                unit.process.wait()
                time.sleep(unit.restart_delay())
                if not unit.stopping:
                    unit.restarts += 1
                    unit.start()


# -- the parts around the service -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def postgres(command: str) -> str:
    environ = os.environ | {"FSYNC": "on", "PGPORT": str(PG_PORT), "PGDATA_DIR": PG_DATA}
    done = subprocess.run(
        [str(REPO / "scripts" / "postgres.sh"), command],
        env=environ, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return done.stdout.strip()


def sql(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


class Smtp:
    """An SMTP server on loopback delivering into a Maildir; it can be stopped and started."""

    def __init__(self, maildir: Path, port: int) -> None:
        self.maildir, self.port = maildir, port
        for sub in ("new", "cur", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        self.controller: Controller | None = None
        self.start()

    def start(self) -> None:
        self.controller = Controller(
            Mailbox(str(self.maildir)), hostname="127.0.0.1", port=self.port
        )
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def deliveries(self) -> Counter[str]:
        """How many times each Message-ID arrived."""
        seen: Counter[str] = Counter()
        for sub in ("new", "cur"):
            for path in (self.maildir / sub).iterdir():
                message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
                seen[str(message["Message-ID"])] += 1
        return seen


# -- the virtual users ----------------------------------------------------------------------


class SoakUser(VirtualUser):
    """A bench_http virtual user from an address of its own, who comes back to finish."""

    def __init__(self, number: int, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.client.close()
        transport = httpx.HTTPTransport(local_address=f"127.0.0.{10 + number}")
        self.client = httpx.Client(timeout=60.0, follow_redirects=False, transport=transport)
        self.unfinished: list[Person] = []
        self.not_started = 0
        self.finished: list[Person] = []
        self.links: dict[str, str] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                person = next(self.people, None)
            if person is None:
                return
            self.client.cookies.clear()
            try:
                self.migrate(person)
                self.finished.append(person)
            except (StepFailed, httpx.HTTPError) as error:
                page = getattr(error, "page", type(error).__name__)
                self.results.errors.append((time.monotonic(), page, str(error)[:200]))
                if page in NOT_STARTED:
                    self.not_started += 1  # no attempt began: nothing to resume
                else:
                    self.unfinished.append(person)
                time.sleep(2)  # a person reads the error page before trying again

    def resume(self, person: Person) -> str:
        """Log in again and take the open attempt on to the end; return how it ended."""
        for _ in range(3):
            self.client.cookies.clear()
            page = self.request("GET /login", "GET", f"{self.web}/login", 200).text
            sso, to_node = form_fields(page, "SAMLRequest")
            page = self.request("POST node SSO", "POST", sso, 200, data=to_node).text
            _, login = form_fields(page, 'name="ticket"')
            page = self.request(
                "POST node login form", "POST", f"{self.node}/login/standin/submit", 200,
                data={"ticket": login["ticket"], "first_name": person.first_name,
                      "last_name": person.last_name, "pesel": person.pesel,
                      "date_of_birth": person.date_of_birth, "action": "login"},
            ).text  # fmt: skip
            acs, post_back = form_fields(page, "SAMLart")
            self.request("POST /saml/acs", "POST", acs, 303, data=post_back)
            outcome = self._drive(person)
            if outcome != "again":
                return outcome
        return "gave up"

    def _drive(self, person: Person) -> str:
        deadline = time.monotonic() + self.args.step_timeout
        while time.monotonic() < deadline:
            answer = self.client.get(f"{self.web}/migracja/status")
            state = answer.json().get("state") if answer.status_code == 200 else None
            if state in ("done", "skipped"):
                return state
            if state == "searching":
                time.sleep(0.5)
            elif state == "found":
                page = self.page("GET /migracja (found)", "create_account")
                _, fields = form_fields(page, "create_account")
                self.request("POST /migracja/create_account", "POST",
                             f"{self.web}/migracja/create_account", 303, data=fields)  # fmt: skip
            elif state == "email_entry":
                page = self.page("GET /migracja (email_entry)", 'name="email_repeat"')
                _, fields = form_fields(page, "email_repeat")
                fields |= {"email": person.email, "email_repeat": person.email,
                           "terms_accepted": "y"}  # fmt: skip
                self.request("POST /migracja/submit", "POST", f"{self.web}/migracja/submit",
                             303, data=fields)  # fmt: skip
            elif state == "awaiting_verification":
                with contextlib.suppress(StepFailed):
                    self.links[person.email] = self.mail.link_for(person.email, 20)
                if person.email in self.links:
                    self.request("GET /weryfikacja/<token>", "GET", self.links[person.email], 200)
                else:  # the link was read before the person was cut short: a new one
                    page = self.page("GET /migracja (awaiting)", "/migracja/resend")
                    _, fields = form_fields(page, "/migracja/resend")
                    self.request("POST /migracja/resend", "POST", f"{self.web}/migracja/resend",
                                 303, data=fields)  # fmt: skip
            elif state == "error":  # code 207: the person cancels and logs in again
                page = self.page("GET /migracja (error)", "cancel")
                _, fields = form_fields(page, "/migracja/cancel")
                self.request("POST /migracja/cancel", "POST", f"{self.web}/migracja/cancel",
                             303, data=fields)  # fmt: skip
                return "again"
            else:
                return f"state {state}"
        return "timed out"

    def migrate(self, person: Person) -> None:
        # The link the person read stays theirs until the migration is done: a link page
        # that failed (an instance killed) is opened again on coming back.
        original = self.mail.link_for

        def keep(address: str, timeout: float) -> str:
            self.links[address] = original(address, timeout)
            return self.links[address]

        self.mail = _KeepingReader(self.mail, keep)
        try:
            super().migrate(person)
        finally:
            self.mail = self.mail.reader
        self.links.pop(person.email, None)


class _KeepingReader:
    """A MailReader whose links also go into the person's memory."""

    def __init__(self, reader: MailReader, keep) -> None:
        self.reader, self.link_for = reader, keep


# -- the run --------------------------------------------------------------------------------


@dataclass
class Fault:
    at: float  # seconds after the load starts
    name: str
    happened: list[tuple[float, float, str]] = field(default_factory=list)  # start, end, note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=12)
    parser.add_argument("--minutes", type=float, default=7.0, help="load with faults")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (logs)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    for port in (*WEB_PORTS, "18001", "18002", "9471", "9472", "9481", "9482"):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", int(port)))
            except OSError:
                raise SystemExit(f"port {port} is taken; the units use it") from None
    folder = Path(tempfile.mkdtemp(prefix="ueoz-soak-"))
    folder.chmod(0o755)  # nginx's workers (nobody, when started as root) read beneath it
    try:
        Soak(args, folder).run()
    finally:
        if args.keep:
            print(f"run folder kept: {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


class Soak:
    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args, self.folder = args, folder
        self.etc, self.run_dir, self.logs = folder / "etc", folder / "run", folder / "logs"
        for path in (self.etc, self.run_dir, self.logs):
            path.mkdir()
        self.nginx_port, self.node_port, self.smtp_port = free_port(), free_port(), free_port()
        self.web = f"http://127.0.0.1:{self.nginx_port}"
        self.node = f"http://127.0.0.1:{self.node_port}"
        self.faults: list[Fault] = []
        self.say = lambda text: print(
            f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True
        )

    # -- setting up --

    def database(self) -> str:
        server = postgres("start")
        with psycopg.connect(server, autocommit=True) as admin:
            if admin.execute("SHOW fsync").fetchone()[0] != "on":
                raise SystemExit(f"PostgreSQL at {server} runs without fsync; stop it and rerun")
        name = f"soak_{int(time.time())}"
        role = f"CREATE ROLE {SEARCH_ROLE} LOGIN"
        sql(server, f'CREATE DATABASE "{name}"',
            f"DO $$ BEGIN {role}; EXCEPTION WHEN duplicate_object THEN NULL; END $$")  # fmt: skip
        self.admin_url = server.rsplit("/", 1)[0] + "/" + name
        self.server_url = server
        self.db_name = name
        return self.admin_url

    def configure(self, database_url: str) -> dict[str, str]:
        instance = self.folder / "instance"
        settings = {
            "APP_ENV": "bench",  # the stand-in login node refuses production
            "DATABASE_URL": database_url,
            "INSTANCE_DIR": str(instance),
            "BASE_URL": self.web,
            "STANDIN_URL": self.node,
            "WK_NODE_URL": self.node,
            "LOG_JSON": "1",
            "MAIL_BACKEND": "smtp",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.smtp_port),
            # Short waits, so that a mail sender killed mid-delivery lets go within about a
            # minute (its lease outlasts every wait) and an outage is retried soon after.
            "SMTP_TIMEOUT_SECONDS": "2",
            "SMTP_DATA_TIMEOUT_SECONDS": "5",
            "MAIL_RETRY_BASE_SECONDS": "5",
        }
        (self.etc / "environment").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        # This machine has two cores: two worker processes of four threads per instance.
        (self.etc / "ueoz-web.environment").write_text("WEB_WORKERS=2\nWEB_THREADS=4\n")
        # The search workers read e-PLOZ through a role of their own: the directory outage
        # takes that role's right to read the table away.
        search_url = database_url.replace("postgres@", f"{SEARCH_ROLE}@")
        (self.etc / "ueoz-worker.environment").write_text(f"DATABASE_URL={search_url}\n")
        return os.environ | settings

    def prepare(self, environ: dict[str, str], people: list[Person]) -> None:
        export = self.folder / "eploz.csv"
        write_export(people, export)
        for argv in (cli("db", "upgrade"), cli("eploz", "import", str(export))):
            done = subprocess.run(argv, env=environ, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{' '.join(argv)}:\n{done.stdout}{done.stderr}")
        sql(self.admin_url,
            f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {SEARCH_ROLE}",
            f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {SEARCH_ROLE}")  # fmt: skip

    def node_process(self, environ: dict[str, str]) -> subprocess.Popen[bytes]:
        node_env = environ | {
            "STANDIN_HOST": "127.0.0.1", "STANDIN_PORT": str(self.node_port),
            "STANDIN_BASE_URL": self.node, "PUBLIC_BASE_URL": self.web,
        }  # fmt: skip
        with (self.logs / "standin.log").open("wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "ueoz_migration.standin"], env=node_env,
                stdout=log, stderr=subprocess.STDOUT, process_group=0,
            )  # fmt: skip

    # -- the run --

    def run(self) -> None:
        args = self.args
        database_url = self.database()
        environ = self.configure(database_url)
        people = generate_people(args.users * 400)
        self.prepare(environ, people)
        self.say(f"{len(people)} e-PLOZ people imported into {self.db_name}")

        def unit(template: str, instance: str) -> Unit:
            return Unit(template, instance, self.etc, self.run_dir, self.logs)

        self.units = {
            "web": [unit("ueoz-web@.service", port) for port in WEB_PORTS],
            "worker": [unit("ueoz-worker@.service", n) for n in ("1", "2")],
            "mail": [unit("ueoz-mail-sender@.service", n) for n in ("1", "2")],
        }
        every = [u for group in self.units.values() for u in group]
        self.smtp = Smtp(self.folder / "maildir", self.smtp_port)
        node = self.node_process(environ)
        for each in every:
            each.start()
        for port in WEB_PORTS:  # up before nginx first asks them, as after a real boot
            deadline = time.monotonic() + 60
            while not answers(f"http://127.0.0.1:{port}/healthz"):
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"the web instance {port} did not come up; logs in {self.logs}"
                    )
                time.sleep(0.2)
        nginx = Nginx(self.folder / "nginx", self.nginx_port, [f"127.0.0.1:{p}" for p in WEB_PORTS])
        supervisor = Supervisor(every)
        supervisor.start()
        try:
            for url in (f"{self.web}/healthz", f"{self.node}/healthz",
                        *(f"http://127.0.0.1:1{p}/metrics" for p in WEB_PORTS)):  # fmt: skip
                deadline = time.monotonic() + 60
                while not answers(url):
                    if time.monotonic() > deadline:
                        raise SystemExit(f"{url} did not come up; logs in {self.logs}")
                    time.sleep(0.2)
            self.say("the stack is up")
            self.load(people, environ)
        finally:
            supervisor.done.set()
            for each in every:
                each.stop()
            nginx.stop()
            self.smtp.stop()
            node.terminate()
            node.wait()
            with contextlib.suppress(Exception):
                sql(self.server_url, f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    def load(self, people: list[Person], environ: dict[str, str]) -> None:
        args = self.args
        mail = MailReader(self.folder / "maildir")
        mail.thread.start()
        results, lock, stop = Results(), threading.Lock(), threading.Event()
        options = argparse.Namespace(step_timeout=180.0, status_interval=0.25)
        users = [
            SoakUser(n, iter(()), lock, results, mail, options, self.web, self.node, stop)
            for n in range(args.users)
        ]
        queue = iter(people)
        for user in users:
            user.people = queue
        began = time.monotonic()
        self.began = began
        for user in users:
            user.start()
        self.say(f"{args.users} virtual users started; faults for {args.minutes:g} minutes")
        self.schedule(began, args.minutes * 60)
        stop.set()
        for user in users:
            user.join(timeout=240)
        load_end = time.monotonic()
        self.say("load stopped; the people cut short come back")
        resumed: Counter[str] = Counter()
        for user in users:
            for person in user.unfinished:
                try:
                    resumed[user.resume(person)] += 1
                except (StepFailed, httpx.HTTPError) as error:
                    resumed[f"failed: {str(error)[:80]}"] += 1
        mail.stop.set()
        self.report(users, results, resumed, began, load_end, environ)

    def schedule(self, began: float, duration: float) -> None:
        """Run the faults at their times, spread over ``duration`` seconds."""
        plan = [
            (0.08, "kill -9 of web instance 8001", lambda: self.kill_unit(self.units["web"][0])),
            (0.18, "kill -9 of search worker 1 holding a search",
             lambda: self.kill_holding(self.units["worker"][0], "attempts", "search_lease_until")),
            (0.24, "kill -9 of mail sender 1 holding a message",
             lambda: self.kill_holding(self.units["mail"][0], "outbox", "lease_until")),
            (0.32, "PostgreSQL restart", self.restart_postgres),
            (0.42, "SMTP server down for 60 s",
             lambda: self.outage(60, self.smtp.stop, self.smtp.start)),
            (0.62, "e-PLOZ directory unavailable to the search for 75 s", self.directory_outage),
            (0.88, "kill -9 of web instance 8002", lambda: self.kill_unit(self.units["web"][1])),
        ]  # fmt: skip
        for share, name, action in plan:
            at = began + share * duration
            while time.monotonic() < at:
                time.sleep(0.2)
            fault = Fault(at - began, name)
            start = time.monotonic()
            note = action() or ""
            fault.happened.append((start - began, time.monotonic() - began, note))
            self.faults.append(fault)
            self.say(f"{name}{': ' + note if note else ''}")
        while time.monotonic() < began + duration:
            time.sleep(0.5)

    def kill_unit(self, unit: Unit) -> str:
        unit.kill()
        return f"pid {unit.process.pid} and its children; restarted after RestartSec"

    def kill_holding(self, unit: Unit, table: str, lease: str) -> str:
        """Kill the unit at a moment when some work of its kind is leased, mid-work."""
        deadline = time.monotonic() + 30
        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            while time.monotonic() < deadline:
                held = connection.execute(
                    f"SELECT count(*) FROM {table} WHERE {lease} > now()"
                ).fetchone()[0]
                if held:
                    unit.kill()
                    return f"killed while {held} lease(s) of its kind were held"
                time.sleep(0.005)
        unit.kill()
        return "killed (no lease seen held within 30 s)"

    def restart_postgres(self) -> str:
        started = time.monotonic()
        postgres("stop")
        postgres("start")
        return f"down and up again in {time.monotonic() - started:.1f} s"

    def outage(self, seconds: float, down, up) -> str:
        down()
        time.sleep(seconds)
        up()
        return f"for {seconds:.0f} s"

    def directory_outage(self) -> str:
        return self.outage(
            75,
            lambda: sql(self.admin_url, f"REVOKE SELECT ON eploz_accounts FROM {SEARCH_ROLE}"),
            lambda: sql(self.admin_url, f"GRANT SELECT ON eploz_accounts TO {SEARCH_ROLE}"),
        )

    # -- the checks --

    def report(self, users, results, resumed, began, load_end, environ) -> None:
        figures: dict[str, object] = {}
        started = sum(len(u.finished) + len(u.unfinished) for u in users)
        cut_short = sum(len(u.unfinished) for u in users)
        with psycopg.connect(self.admin_url, autocommit=True) as db:
            states = dict(
                db.execute("SELECT state, count(*) FROM attempts GROUP BY state").fetchall()
            )
            open_left = db.execute(
                "SELECT count(*) FROM attempts WHERE open_pesel_key IS NOT NULL"
            ).fetchone()[0]
            twice = db.execute(
                "SELECT count(*) FROM (SELECT pesel FROM ueoz_accounts GROUP BY pesel "
                "HAVING count(*) > 1) AS t"
            ).fetchone()[0]
            verified = db.execute(
                "SELECT count(*) FROM ueoz_accounts WHERE email_verified_at IS NOT NULL"
            ).fetchone()[0]
            outbox = db.execute(
                "SELECT count(*) FILTER (WHERE sent_at IS NOT NULL), "
                "count(*) FILTER (WHERE failed_at IS NOT NULL), "
                "count(*) FILTER (WHERE withdrawn_at IS NOT NULL AND sent_at IS NULL), "
                "count(*) FILTER (WHERE sent_at IS NULL AND failed_at IS NULL "
                "AND withdrawn_at IS NULL) FROM outbox"
            ).fetchone()
            codes = dict(
                db.execute(
                    "SELECT event_code, count(*) FROM attempts WHERE event_code IS NOT NULL "
                    "GROUP BY event_code"
                ).fetchall()
            )
            exhausted = db.execute(
                "SELECT count(*), min(search_tries) FROM attempts WHERE event_code = 207"
            ).fetchone()
        deliveries = self.smtp.deliveries()
        duplicates = sum(n - 1 for n in deliveries.values())
        sender_kills = sum(1 for f in self.faults if "mail sender" in f.name)
        audit = {}
        for command in (("audit", "verify", "--all"), ("audit", "replay", "--all")):
            done = subprocess.run(cli(*command), env=environ, capture_output=True, text=True)
            audit[" ".join(command)] = (done.returncode, done.stdout.strip().splitlines()[-1:])
        kills = [f.happened[0][0] for f in self.faults if f.name.startswith("kill -9 of web")]
        restart = [f.happened[0] for f in self.faults if f.name == "PostgreSQL restart"]
        # A request counts as a fault's when it was in flight at any time from the fault's
        # start to KILL_WINDOW seconds after its end (a login under way when it began, say).
        five = [(start - began, start - began + seconds, page)
                for page, start, seconds, status in results.requests if status >= 500]  # fmt: skip

        def during(spans: list[tuple[float, float]]) -> list[tuple[float, float, str]]:
            return [e for e in five if any(e[0] <= b + KILL_WINDOW and e[1] >= a
                                           for a, b in spans)]  # fmt: skip

        during_kill = during([(k, k) for k in kills])
        during_restart = [
            e for e in during([(a, b) for a, b, _ in restart]) if e not in during_kill
        ]
        elsewhere = [e for e in five if e not in during_kill and e not in during_restart]
        requests = len(results.requests)
        completed_in_load = sum(len(u.finished) for u in users)

        lines = [
            f"soak: {self.args.users} virtual users, {load_end - began:.0f} s of load with faults; "
            f"{requests} requests; nginx round robin over 2 web instances (2 workers x 4 "
            f"threads each), 2 search workers, 2 mail senders, PostgreSQL fsync=on",
            "",
            "faults (seconds after the load began):",
            *(
                f"  {f.happened[0][0]:6.1f}-{f.happened[0][1]:6.1f}  {f.name}"
                + (f" ({f.happened[0][2]})" if f.happened[0][2] else "")
                for f in self.faults
            ),
            "  restarts by the supervisor (Restart=always): "
            + ", ".join(f"{u.name} {u.restarts}" for g in self.units.values() for u in g),
            "",
            f"migrations started: {started}; completed during the load: {completed_in_load}; "
            f"cut short: {cut_short}, then on coming back: {dict(resumed) or 'none'}; logins "
            f"that failed before the service had them (nothing started): "
            f"{sum(u.not_started for u in users)}",
            f"responses: {dict(sorted(Counter(s for _p, _a, _s, s in results.requests).items()))}",
            f"attempts by state: {states}; still open: {open_left}",
            f"event codes: {codes}; code 207 attempts: {exhausted[0]}, each after "
            f"{exhausted[1]} search tries (SEARCH_MAX_TRIES 5)"
            if exhausted[0]
            else f"event codes: {codes}",
            f"PESELs with two UEOZ accounts: {twice}; UEOZ accounts verified: {verified}",
            f"verification e-mails: sent {outbox[0]}, failed {outbox[1]}, withdrawn unsent "
            f"{outbox[2]}, still waiting {outbox[3]}; the SMTP server received "
            f"{sum(deliveries.values())} "
            f"({len(deliveries)} distinct Message-IDs, {duplicates} duplicates; mail sender "
            f"kills: {sender_kills})",
            *(f"{name}: exit {code}, {' '.join(out)}" for name, (code, out) in audit.items()),
            f"5xx seen by users: {len(five)} in all; within {KILL_WINDOW:.0f} s of an instance "
            f"kill: {len(during_kill)} {Counter(p for _, _, p in during_kill) or ''}; during the "
            f"PostgreSQL restart: {len(during_restart)} "
            f"{Counter(p for _, _, p in during_restart) or ''}; "
            f"elsewhere: {len(elsewhere)} {Counter(p for _, _, p in elsewhere) or ''}",
            f"migrations that failed a step during the load (then resumed above): "
            f"{Counter(page for _, page, _ in results.errors) or 'none'}",
        ]
        print("\n".join(lines))
        failures = []
        if open_left or any(not k.startswith(("done", "skipped")) for k in resumed):
            failures.append("a migration neither ended nor resumed")
        if twice:
            failures.append("a PESEL has two UEOZ accounts")
        if outbox[1] or outbox[3]:
            failures.append("a verification e-mail was not delivered")
        if duplicates > sender_kills:
            failures.append("more duplicate e-mails than mail sender kills")
        if any(code for code, _ in audit.values()):
            failures.append("the audit failed")
        if elsewhere:
            failures.append("5xx outside an instance kill or the database restart")
        print("RESULT: " + ("all checks passed" if not failures else "; ".join(failures)))
        figures.update(lines=lines, failures=failures)
        if self.args.json:
            Path(self.args.json).write_text(json.dumps(figures, indent=1))
        if failures:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
