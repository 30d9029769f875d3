"""Measure complete migrations per second through HTTP, against the real stack.

    .venv/bin/python benchmarks/bench_http.py --database sqlite --users 32 --duration 60
    .venv/bin/python benchmarks/bench_http.py --database postgresql --users 32 --duration 60 \
        --markdown

Starts, on free loopback ports and in a temporary instance folder, the stack that
``ueoz-migration dev`` runs (the children come from :func:`ueoz_migration.devstack.plan`):
gunicorn serving ``ueoz_migration.web:create_app()``, the stand-in login node, the search
worker and the mail sender (Maildir). Before that it generates ``--people`` e-PLOZ people
(valid PESELs, python-stdnum) and loads them with ``ueoz-migration eploz import``. On
PostgreSQL it starts a separate server with ``fsync=on`` (``FSYNC=on PGPORT=55433
PGDATA_DIR=/tmp/ueoz-pg-bench scripts/postgres.sh start``) and a fresh database for the run,
dropped at the end.

Then ``--users`` virtual users (threads, one httpx client and cookie jar each) migrate one
generated person after another, as a browser would: ``GET /login``, the
auto-submitting form to the node's SSO, the node's login form, the node's post back to the
ACS, the searching screen, ``/migracja/status`` every ``--status-interval`` seconds until
``found``, the found screen, ``create_account``, the e-mail screen, ``submit``, the waiting
screen, the verification link read from the Maildir, and the link. Redirects are followed
by hand, so each page is timed on its own. A person is migrated once only.

The first ``--warmup`` seconds are not counted. Reported for the ``--duration`` seconds
after them: complete migrations per second, p50/p95/p99 latency per page (as the client
sees it, and for the service's pages also as gunicorn's access log saw it), the time spent
waiting for the search worker and the mail sender (not request latency), and the CPU time
each process used. All load goes to 127.0.0.1; the run stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import email
import html
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from pathlib import Path

import httpx
from stdnum.pl import pesel as pesel_number

from ueoz_migration.config import Settings
from ueoz_migration.devstack import (
    GUNICORN_THREADS,
    GUNICORN_WORKERS,
    Child,
    Stack,
    answers,
    cli,
    plan,
)

REPO = Path(__file__).resolve().parent.parent
AIM_PER_SECOND = 50
AIM_P99_MS = 100
PG_PORT = 55433
PG_DATA = "/tmp/ueoz-pg-bench"
# Our settings in the caller's environment would point the children elsewhere.
OUR_PREFIXES = ("APP_", "DATABASE_", "MAIL", "SMTP_", "STANDIN_", "WK_", "SEARCH_")
OUR_NAMES = {"BASE_URL", "SECRET_KEY", "AUDIT_KEY", "PESEL_HASH_KEY", "INSTANCE_DIR", "LOG_JSON"}

FIRST_NAMES = ("Anna", "Jan", "Maria", "Piotr", "Katarzyna", "Tomasz", "Ewa", "Marek", "Zofia")
LAST_NAMES = ("Nowak", "Kowalska", "Wiśniewski", "Wójcik", "Kamińska", "Lewandowski", "Zając")

# The pages of one migration, in order (the order of the table).
PAGES = (
    "GET /login",
    "POST node SSO",
    "POST node login form",
    "POST /saml/acs",
    "GET /migracja (searching)",
    "GET /migracja/status",
    "GET /migracja (found)",
    "POST /migracja/create_account",
    "GET /migracja (email_entry)",
    "POST /migracja/submit",
    "GET /migracja (awaiting)",
    "GET /weryfikacja/<token>",
)
NODE_PAGES = {"POST node SSO", "POST node login form"}


# -- the people ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    login: str
    pesel: str
    first_name: str
    last_name: str
    date_of_birth: str
    email: str


def generate_people(count: int) -> list[Person]:
    """Made-up e-PLOZ people with valid, distinct PESELs (birth date + serial + checksum)."""
    first_day = dt.date(1950, 1, 1)
    days = 40 * 365
    people = []
    for index in range(count):
        born = first_day + dt.timedelta(days=index % days)
        serial = index // days
        month = born.month + (20 if born.year >= 2000 else 0)
        stem = f"{born.year % 100:02d}{month:02d}{born.day:02d}{serial:04d}"
        number = stem + pesel_number.calc_check_digit(stem)
        assert pesel_number.is_valid(number)
        login = f"bench{index:06d}"
        people.append(
            Person(
                login=login,
                pesel=number,
                first_name=FIRST_NAMES[index % len(FIRST_NAMES)],
                last_name=LAST_NAMES[index // len(FIRST_NAMES) % len(LAST_NAMES)],
                date_of_birth=born.isoformat(),
                email=f"{login}@example.org",
            )
        )
    return people


def write_export(people: list[Person], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("login", "pesel", "first_name", "last_name", "email", "status", "roles"))
        for p in people:
            writer.writerow((p.login, p.pesel, p.first_name, p.last_name, p.email, "active",
                             "P1:LEKARZ"))  # fmt: skip


# -- the stack -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """Start the fsync=on benchmark server if needed; yield a fresh database's URL, drop it."""
    import psycopg

    environ = os.environ | {"FSYNC": "on", "PGPORT": str(PG_PORT), "PGDATA_DIR": PG_DATA}
    server = subprocess.run(
        [str(REPO / "scripts" / "postgres.sh"), "start"],
        env=environ, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    with psycopg.connect(server, autocommit=True) as admin:
        fsync = admin.execute("SHOW fsync").fetchone()[0]
        if fsync != "on":
            raise SystemExit(
                f"the server at {server} runs with fsync={fsync}; stop it "
                f"(PGPORT={PG_PORT} PGDATA_DIR={PG_DATA} scripts/postgres.sh stop) and rerun"
            )
        name = f"bench_http_{os.getpid()}_{int(time.time())}"
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def child_environment(instance: Path, database_url: str, web: str, node: str) -> dict[str, str]:
    clean = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(OUR_PREFIXES) and name not in OUR_NAMES
    }
    return clean | {
        "INSTANCE_DIR": str(instance),
        "DATABASE_URL": database_url,
        "BASE_URL": web,
        "STANDIN_URL": node,
        "WK_NODE_URL": node,
        "LOG_JSON": "1",  # as in production
    }


def prepare_database(environ: dict[str, str], people: list[Person], instance: Path) -> float:
    """Bring the schema to head and import the people through the CLI; return the seconds."""
    export = instance / "eploz_export.csv"
    write_export(people, export)
    started = time.perf_counter()
    for argv in (cli("db", "upgrade"), cli("eploz", "import", str(export))):
        done = subprocess.run(argv, env=environ, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{done.stdout}{done.stderr}")
    return time.perf_counter() - started


def children_for(environ: dict[str, str], args: argparse.Namespace) -> list[Child]:
    """The dev stack's children, with the benchmark's gunicorn and worker settings."""
    children = plan(Settings.from_env(environ))
    for child in children:
        child.env = child.env | environ
    # The demo domain systems and the logout sender take no part in a migration.
    by_name = {child.name: child for child in children}
    web, node = by_name["web service"], by_name["stand-in login node"]
    worker, mail = by_name["search worker"], by_name["mail sender"]
    argv = web.argv
    argv[argv.index("--workers") + 1] = str(args.gunicorn_workers)
    argv[argv.index("--threads") + 1] = str(args.gunicorn_threads)
    # gunicorn's access lines (the service's logger class, as in production) go to the web
    # service's log with the rest of its lines: server_times() reads them there.
    interval = ["--interval", str(args.poll_interval)]
    workers = [
        Child(
            f"search worker {n + 1}",
            [*worker.argv, *interval, "--worker-id", f"bench{n + 1}"],
            worker.env,
        )
        for n in range(args.search_workers)
    ]
    return [web, node, *workers, Child(mail.name, [*mail.argv, *interval], mail.env)]


def start(children: list[Child], logs: Path) -> Stack:
    stack = Stack(children, out=lambda line: None)
    for child in children:
        log = (logs / (child.name.replace(" ", "-") + ".log")).open("wb")
        child.process = subprocess.Popen(
            child.argv, env=child.env, stdout=log, stderr=subprocess.STDOUT, process_group=0
        )
    return stack


def wait_until_up(stack: Stack, urls: list[str], logs: Path) -> None:
    deadline = time.monotonic() + 60
    for url in urls:
        while not answers(url):
            dead = stack.dead_child()
            if dead is not None or time.monotonic() > deadline:
                who = dead.name if dead else "the stack"
                raise SystemExit(f"{who} did not come up; logs in {logs}")
            time.sleep(0.2)


# -- CPU time per process, from /proc -------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS


def cpu_seconds(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each root process and its children (one level down)."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            table[int(entry)] = stat
    used = {}
    for name, root in roots.items():
        used[name] = sum(
            seconds for pid, (parent, seconds) in table.items() if root in (pid, parent)
        )
    return used


def postmaster_pid() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(Path(PG_DATA, "postmaster.pid").read_text().split()[0])
    return None


# -- the mail the virtual users read --------------------------------------------------------

LINK = re.compile(r"https?://\S+/weryfikacja/\S+")


class MailReader:
    """Watch the Maildir's ``new`` folder; hand each recipient their verification link.

    Read messages move to ``cur``, as a mail client marks them seen, so each look at
    ``new`` lists only what arrived since.
    """

    def __init__(self, maildir: Path, interval: float = 0.01) -> None:
        self.new, self.cur = maildir / "new", maildir / "cur"
        self.interval = interval
        self.links: dict[str, str] = {}
        self.arrived = threading.Condition()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="mail-reader", daemon=True)

    def _watch(self) -> None:
        while not self.stop.wait(self.interval):
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(self.new):
                    message = email.message_from_bytes(
                        Path(entry.path).read_bytes(), policy=policy.default
                    )
                    body = message.get_body(preferencelist=("plain",))
                    found = LINK.search(body.get_content() if body is not None else "")
                    recipient = email.utils.parseaddr(str(message["To"]))[1]
                    os.rename(entry.path, self.cur / (entry.name + ":2,S"))
                    if found:
                        with self.arrived:
                            self.links[recipient] = found.group(0)
                            self.arrived.notify_all()

    def link_for(self, address: str, timeout: float) -> str:
        with self.arrived:
            if not self.arrived.wait_for(lambda: address in self.links, timeout):
                raise StepFailed("mail", f"no verification mail within {timeout:.0f} s")
            return self.links.pop(address)


# -- the virtual users ---------------------------------------------------------------------


class StepFailed(Exception):
    def __init__(self, page: str, reason: str) -> None:
        super().__init__(f"{page}: {reason}")
        self.page, self.reason = page, reason


@dataclass
class Results:
    requests: list[tuple[str, float, float, int]] = field(default_factory=list)  # page, start, s
    migrations: list[tuple[float, float, float, float]] = field(default_factory=list)
    errors: list[tuple[float, str, str]] = field(default_factory=list)


INPUT = re.compile(r"<input[^>]*>")
ATTRIBUTE = re.compile(r'(\w+)="([^"]*)"')
FORM = re.compile(r'<form[^>]*action="([^"]*)"[^>]*>(.*?)</form>', re.S)


def form_fields(page: str, contains: str = "") -> tuple[str, dict[str, str]]:
    """The action and named inputs of the first form whose markup holds ``contains``."""
    for action, inner in FORM.findall(page):
        if contains in action or contains in inner:
            values = {}
            for tag in INPUT.findall(inner):
                attributes = dict(ATTRIBUTE.findall(tag))
                if "name" in attributes:
                    values[attributes["name"]] = html.unescape(attributes.get("value", ""))
            return html.unescape(action), values
    raise StepFailed("form", f"no form with {contains!r}")


class VirtualUser(threading.Thread):
    def __init__(
        self,
        people: Iterator[Person],
        lock: threading.Lock,
        results: Results,
        mail: MailReader,
        args: argparse.Namespace,
        web: str,
        node: str,
        stop: threading.Event,
    ) -> None:
        super().__init__(daemon=True)
        self.people, self.lock, self.results, self.mail = people, lock, results, mail
        self.args, self.web, self.node, self.stop = args, web, node, stop
        self.client = httpx.Client(timeout=30.0, follow_redirects=False)

    def run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                person = next(self.people, None)
            if person is None:
                return
            self.client.cookies.clear()  # a new person, a new browser
            try:
                self.migrate(person)
            except (StepFailed, httpx.HTTPError) as error:
                page = getattr(error, "page", type(error).__name__)
                self.results.errors.append((time.monotonic(), page, str(error)[:200]))
        self.client.close()

    def request(self, page: str, method: str, url: str, expect: int, **kwargs) -> httpx.Response:
        started = time.monotonic()
        response = self.client.request(method, url, **kwargs)
        self.results.requests.append(
            (page, started, time.monotonic() - started, response.status_code)
        )
        if response.status_code != expect:
            raise StepFailed(page, f"HTTP {response.status_code} (expected {expect})")
        return response

    def page(self, name: str, expect_text: str) -> str:
        text = self.request(name, "GET", f"{self.web}/migracja", 200).text
        if expect_text not in text:
            raise StepFailed(name, f"the page lacks {expect_text!r}")
        return text

    def migrate(self, person: Person) -> None:
        began = time.monotonic()
        page = self.request("GET /login", "GET", f"{self.web}/login", 200).text
        sso, to_node = form_fields(page, "SAMLRequest")
        page = self.request("POST node SSO", "POST", sso, 200, data=to_node).text
        _, login = form_fields(page, 'name="ticket"')
        login = {"ticket": login["ticket"], "first_name": person.first_name,
                 "last_name": person.last_name, "pesel": person.pesel,
                 "date_of_birth": person.date_of_birth, "action": "login"}  # fmt: skip
        page = self.request(
            "POST node login form", "POST", f"{self.node}/login/standin/submit", 200, data=login
        ).text
        acs, post_back = form_fields(page, "SAMLart")
        response = self.request("POST /saml/acs", "POST", acs, 303, data=post_back)
        if response.headers.get("location") != "/migracja":
            raise StepFailed("POST /saml/acs", f"went to {response.headers.get('location')}")
        self.page("GET /migracja (searching)", "<main")

        searching = time.monotonic()
        deadline = searching + self.args.step_timeout
        while True:
            state = self.request(
                "GET /migracja/status", "GET", f"{self.web}/migracja/status", 200
            ).json()["state"]
            if state == "found":
                break
            if state != "searching":
                raise StepFailed("GET /migracja/status", f"state {state}")
            if time.monotonic() > deadline:
                raise StepFailed("GET /migracja/status", "still searching")
            time.sleep(self.args.status_interval)
        search_wait = time.monotonic() - searching

        page = self.page("GET /migracja (found)", "create_account")
        _, create = form_fields(page, "create_account")
        self.request("POST /migracja/create_account", "POST",
                     f"{self.web}/migracja/create_account", 303, data=create)  # fmt: skip
        page = self.page("GET /migracja (email_entry)", 'name="email_repeat"')
        _, submit = form_fields(page, "email_repeat")
        if submit.get("email") != person.email:
            raise StepFailed("GET /migracja (email_entry)", "the e-PLOZ address is not prefilled")
        submit |= {"email_repeat": person.email, "terms_accepted": "y"}
        self.request("POST /migracja/submit", "POST", f"{self.web}/migracja/submit", 303,
                     data=submit)  # fmt: skip
        submitted = time.monotonic()
        self.page("GET /migracja (awaiting)", "<main")

        link = self.mail.link_for(person.email, self.args.step_timeout)
        mail_wait = time.monotonic() - submitted
        done = self.request("GET /weryfikacja/<token>", "GET", link, 200).text
        if "<main" not in done:
            raise StepFailed("GET /weryfikacja/<token>", "no done screen")
        self.results.migrations.append((began, time.monotonic(), search_wait, mail_wait))


# -- figures -------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def spread(values: list[float], scale: float = 1000.0) -> list[str]:
    return [f"{percentile(values, q) * scale:.0f}" for q in (0.5, 0.95, 0.99)] + [
        f"{max(values) * scale:.0f}" if values else "–"
    ]


def server_times(log: Path, start: int, end: int) -> dict[str, list[float]]:
    """Gunicorn's own request times (s) between two offsets of the web log, per route.

    The access lines are the JSON lines ``http.request`` of ``gunicorn_logging``: the route
    (``/weryfikacja/<token>``), and the time from the request's arrival to its last byte.
    """
    with log.open("rb") as handle:
        handle.seek(start)
        lines = handle.read(end - start).decode(errors="replace").splitlines()
    times: dict[str, list[float]] = defaultdict(list)
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict) or entry.get("event") != "http.request":
            continue
        times[f"{entry['method']} {entry['path']}"].append(entry["duration_ms"] / 1000)
    return times


SERVER_ROUTE = {
    "GET /login": "GET /login",
    "POST /saml/acs": "POST /saml/acs",
    "GET /migracja/status": "GET /migracja/status",
    "POST /migracja/create_account": "POST /migracja/create_account",
    "POST /migracja/submit": "POST /migracja/submit",
    "GET /weryfikacja/<token>": "GET /weryfikacja/<token>",
}


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"nproc {os.cpu_count()}, {model}, Python {platform.python_version()}"


def table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(
            "---" if i == 0 else "---:" for i in range(len(header))) + "|"]  # fmt: skip
        # "<token>" would read as an HTML tag; the escape keeps it text.
        lines += ["| " + " | ".join(row).replace("<", "\\<") + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    render = lambda row: "  ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w)
        for i, (c, w) in enumerate(zip(row, widths, strict=True))
    )
    return "\n".join([render(header), render(["-" * w for w in widths]), *map(render, rows)])


# -- the run -------------------------------------------------------------------------------


def run(args: argparse.Namespace, database_url: str, instance: Path) -> None:
    web, node = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    environ = child_environment(instance, database_url, web, node)
    people = generate_people(args.people)
    imported = prepare_database(environ, people, instance)
    print(f"imported {len(people)} e-PLOZ people in {imported:.1f} s", file=sys.stderr)

    logs = instance / "logs"
    logs.mkdir()
    children = children_for(environ, args)
    stack = start(children, logs)
    try:
        wait_until_up(stack, [f"{web}/healthz", f"{node}/healthz"], logs)
        maildir = instance / "maildir"
        for sub in ("new", "cur", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        mail = MailReader(maildir)
        mail.thread.start()
        measure(args, stack, children, web, node, iter(people), mail, instance, logs)
        mail.stop.set()
    finally:
        stack.stop()


def measure(args, stack, children, web, node, people, mail, instance, logs) -> None:
    results, lock, stop = Results(), threading.Lock(), threading.Event()
    users = [
        VirtualUser(people, lock, results, mail, args, web, node, stop) for _ in range(args.users)
    ]
    roots = {child.name: child.process.pid for child in children}
    if args.database == "postgresql" and (postmaster := postmaster_pid()):
        roots["PostgreSQL"] = postmaster
    roots["benchmark client"] = os.getpid()
    access_log = logs / "web-service.log"  # see start(): one log file per child
    load_before = os.getloadavg()

    began = time.monotonic()
    for user in users:
        user.start()
    print(f"{args.users} virtual users started; {args.warmup:.0f} s warm-up", file=sys.stderr)
    time.sleep(args.warmup)
    print(f"measuring for {args.duration:.0f} s", file=sys.stderr)
    window_start = time.monotonic()
    cpu_start, log_start = cpu_seconds(roots), access_log.stat().st_size
    while time.monotonic() < window_start + args.duration:
        time.sleep(0.5)
        if stack.dead_child() is not None:
            raise SystemExit(f"the {stack.dead_child().name} died; logs in {logs}")
        if all(not user.is_alive() for user in users):
            break
    window_end = time.monotonic()
    cpu_end, log_end = cpu_seconds(roots), access_log.stat().st_size
    load_after = os.getloadavg()
    stop.set()
    for user in users:
        user.join(timeout=args.step_timeout * 2 + 30)

    window = window_end - window_start
    inside = lambda start, end: start >= window_start and end <= window_end  # noqa: E731
    completed = [m for m in results.migrations if window_start <= m[1] <= window_end]
    per_page: dict[str, list[float]] = defaultdict(list)
    statuses: dict[str, int] = defaultdict(int)
    for page, start_at, seconds, status in list(results.requests):
        if inside(start_at, start_at + seconds):
            per_page[page].append(seconds)
            statuses[page] += status >= 500
    errors = [e for e in results.errors if window_start <= e[0] <= window_end]
    server = server_times(access_log, log_start, log_end)
    rate = len(completed) / window

    # Standard output carries the report only (with --markdown, nothing but Markdown: make
    # bench puts it into docs/performance.md as it is); progress goes to standard error.
    md = args.markdown
    if not md:
        print()
    print(
        f"{args.database}: {args.users} virtual users, {window:.1f} s measured after "
        f"{window_start - began:.0f} s warm-up; gunicorn {args.gunicorn_workers} workers × "
        f"{args.gunicorn_threads} threads (gthread, requests read whole); "
        f"{args.search_workers} search worker(s) and "
        f"the mail sender looking every {args.poll_interval} s when idle; status asked every "
        f"{args.status_interval} s."
    )
    if md:
        print()
    print(
        f"{machine()}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (1 min)."
    )
    print()
    print(
        f"**{rate:.1f} complete migrations/s** ({len(completed)} in {window:.1f} s; aim "
        f"≥ {AIM_PER_SECOND}/s: {rate / AIM_PER_SECOND:.2f} of it); "
        f"{len(errors)} failed migrations"
    )
    print()
    rows = []
    all_requests = []
    for page in PAGES:
        values = per_page.get(page, [])
        all_requests += values
        route = SERVER_ROUTE.get(page) or (
            "GET /migracja" if page.startswith("GET /migracja (") else None
        )
        server_spread = spread(server.get(route, []))[:3] if route and server.get(route) else []
        rows.append(
            [page, str(len(values)), *(spread(values) if values else ["–"] * 4),
             " / ".join(server_spread) if server_spread else ("node" if page in NODE_PAGES
                                                              else "–")]
        )  # fmt: skip
    rows.append(["all requests", str(len(all_requests)), *spread(all_requests), ""])
    print(
        table(
            [
                "page",
                "requests",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "max ms",
                "gunicorn p50 / p95 / p99 ms",
            ],
            rows,
            md,
        )
    )
    print()
    migration_rows = [
        ["complete migration (wall)", *spread([m[1] - m[0] for m in completed])],
        ["  waiting for the search worker", *spread([m[2] for m in completed])],
        ["  waiting for the mail sender", *spread([m[3] for m in completed])],
        ["  the rest: requests and think time 0",
         *spread([m[1] - m[0] - m[2] - m[3] for m in completed])],
    ]  # fmt: skip
    print(table(["per migration", "p50 ms", "p95 ms", "p99 ms", "max ms"], migration_rows, md))
    print()
    cpu_rows = []
    total = 0.0
    for name in roots:
        used = cpu_end.get(name, 0.0) - cpu_start.get(name, 0.0)
        total += used
        cpu_rows.append([name, f"{used:.1f}", f"{used / window:.2f}",
                         f"{used / max(1, len(completed)) * 1000:.1f}"])  # fmt: skip
    cpu_rows.append(["all of these", f"{total:.1f}", f"{total / window:.2f}",
                     f"{total / max(1, len(completed)) * 1000:.1f}"])  # fmt: skip
    print(table(["process", "CPU s", "cores busy", "CPU ms per migration"], cpu_rows, md))
    if errors:
        print()
        print("Failed migrations:")
        print()
        kinds: dict[str, int] = defaultdict(int)
        for _, page, reason in errors:
            kinds[f"{page}: {reason}"] += 1
        for kind, count in sorted(kinds.items(), key=lambda item: -item[1])[:10]:
            print(f"- {count} × {kind}".replace("<", "\\<") if md else f"- {count} × {kind}")
    if any(statuses.values()):
        print()
        print(f"Server errors (5xx): {dict((k, v) for k, v in statuses.items() if v)}.")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "database": args.database,
                    "users": args.users,
                    "window": window,
                    "migrations": len(completed),
                    "rate": rate,
                    "errors": len(errors),
                    "pages": {p: sorted(v) for p, v in per_page.items()},
                }
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--users", type=int, default=32, help="concurrent virtual users")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds not counted first")
    parser.add_argument("--people", type=int, default=6000, help="e-PLOZ people to generate")
    parser.add_argument("--gunicorn-workers", type=int, default=GUNICORN_WORKERS)
    parser.add_argument("--gunicorn-threads", type=int, default=GUNICORN_THREADS)
    parser.add_argument("--search-workers", type=int, default=1)
    parser.add_argument(
        "--poll-interval", type=float, default=0.2,
        help="seconds between idle looks of the search worker and the mail sender (their default)",
    )  # fmt: skip
    parser.add_argument("--status-interval", type=float, default=0.25)
    parser.add_argument("--step-timeout", type=float, default=60.0)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", help="also write the raw figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the instance folder (logs)")
    args = parser.parse_args()
    if not 1 <= args.users <= 512 or not 0 < args.duration <= 600:
        parser.error("--users must be 1..512 and --duration 0..600 s")

    instance = Path(tempfile.mkdtemp(prefix="ueoz-bench-http-"))
    try:
        if args.database == "sqlite":
            run(args, f"sqlite:///{instance / 'ueoz.sqlite3'}", instance)
        else:
            with postgres_database() as url:
                run(args, url, instance)
    finally:
        if args.keep:
            print(f"instance kept in {instance}", file=sys.stderr)
        else:
            shutil.rmtree(instance, ignore_errors=True)


if __name__ == "__main__":
    main()
