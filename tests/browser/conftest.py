"""The whole stack in a real browser: `ueoz-migration dev` driven through Debian's Chromium.

The stack is the one `make run` starts (web service under gunicorn, stand-in login node, the
demo domain systems signing in through it, search worker, mail sender into a Maildir, logout
sender, SQLite), on free loopback ports in a temporary instance folder, once per test
process. Playwright drives /usr/bin/chromium; axe-core (as bundled by axe-playwright-python)
checks each screen for WCAG 2.1 AA violations.
"""

from __future__ import annotations

import mailbox
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "test-results" / "screenshots"))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTBOX_ID = re.compile(r"<outbox-(\d+)\.")
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


@dataclass
class Stack:
    base_url: str
    node_url: str
    demo_systems_url: str
    instance_dir: Path
    process: subprocess.Popen[str]
    database: str | None = None  # DATABASE_URL given to the stack; None: its own SQLite file

    def domain_system(self, system: str) -> str:
        """The page of demo domain system ``system`` (P1, GABINET)."""
        return f"{self.demo_systems_url}/{system}/"

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{self.instance_dir / 'ueoz.sqlite3'}"

    def messages_to(self, address: str) -> list:
        """The e-mails the mail sender delivered to ``address``, oldest first."""
        folder = self.instance_dir / "maildir"
        # The mail sender makes the folder and its tmp/new/cur with the first message: until
        # all of them are there, nothing was delivered.
        if not all((folder / part).is_dir() for part in ("tmp", "new", "cur")):
            return []
        box = mailbox.Maildir(folder, factory=None, create=False)
        found = []
        for key in box.iterkeys():
            message = BytesParser(policy=policy.default).parsebytes(box.get_bytes(key))
            if message["To"] and address in message["To"]:
                found.append(message)
        # In the order the service wrote them: the Message-ID carries the outbox row's id
        # (two messages sent within a second share their Date).
        return sorted(found, key=lambda message: int(OUTBOX_ID.search(message["Message-ID"])[1]))

    def wait_for_link(self, address: str, count: int = 1, timeout: float = 20) -> str:
        """Wait until ``count`` e-mails reached ``address``; return the newest one's link."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            messages = self.messages_to(address)
            if len(messages) >= count:
                body = messages[-1].get_body(("plain",)).get_content()
                return re.search(r"https?://\S+/weryfikacja/\S+", body).group(0)
            time.sleep(0.2)
        raise AssertionError(f"no e-mail number {count} reached {address} in {timeout} s")


@contextmanager
def running_stack(instance: Path, **settings: str) -> Iterator[Stack]:
    """Run `ueoz-migration dev` on free ports in ``instance`` until the block ends."""
    ports: list[int] = []
    while len(ports) < 3:  # three different ones: none is bound until the stack starts
        ports += {free_port()} - set(ports)
    base_url, node_url, systems_url = (f"http://127.0.0.1:{port}" for port in ports)
    env = {
        **os.environ,
        "INSTANCE_DIR": str(instance),
        "BASE_URL": base_url,
        "STANDIN_URL": node_url,
        "DEMO_SYSTEMS_URL": systems_url,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DATABASE_URL", None)  # the stack's own SQLite file, unless settings name one
    env.update(settings)
    log = (instance / "stack.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "ueoz_migration.cli", "dev"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        for url in (base_url, systems_url):
            _wait_until_up(f"{url}/healthz", process, instance / "stack.log")
        yield Stack(
            base_url, node_url, systems_url, instance, process, settings.get("DATABASE_URL")
        )
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack")) as stack:
        yield stack


def _wait_until_up(url: str, process: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the stack exited early:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the stack did not come up:\n{log.read_text()}")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    context = browser.new_context(base_url=stack.base_url, locale="pl-PL")
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="session")
def axe() -> Axe:
    return Axe()


def assert_accessible(axe: Axe, page: Page) -> None:
    """No WCAG 2.1 A/AA violation that axe-core can find on the page as it stands."""
    results = axe.run(page, options={"runOnly": {"type": "tag", "values": AXE_TAGS}})
    assert results.violations_count == 0, results.generate_report()


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def demo(stack: Stack) -> Iterator[Stack]:
    """Start each test from the demo data alone, as a fresh `make run` would have it."""
    engine = reset_to_demo(stack)
    yield stack
    engine.dispose()


def reset_to_demo(stack: Stack):  # type: ignore[no-untyped-def]
    """Leave the stack's database with the demo data alone; return the engine used.

    The stack's processes keep running; only the rows go. Flow versions stay, as they do in
    production (the web service records its flow once per process). The demo domain systems
    are registered again, with the credentials they keep running with (the instance folder's).
    """
    from sqlalchemy import delete

    from ueoz_migration.config import Settings
    from ueoz_migration.db.engine import make_engine, make_sessionmaker, transaction
    from ueoz_migration.db.models import Base, FlowVersion
    from ueoz_migration.demo import seed_demo
    from ueoz_migration.demo_systems import register_demo_systems
    from ueoz_migration.oidc.clients import ClientRegistry

    settings = Settings.from_env({"INSTANCE_DIR": str(stack.instance_dir)})
    engine = make_engine(stack.database_url)
    sessions = make_sessionmaker(engine)
    with transaction(sessions) as session:
        for table in reversed(Base.metadata.sorted_tables):
            if table is not FlowVersion.__table__:
                session.execute(delete(table))
    seed_demo(sessions, pesel_key=settings.pesel_key)
    registry = ClientRegistry(sessions, production=False)
    register_demo_systems(registry, stack.instance_dir, stack.demo_systems_url)
    box = mailbox.Maildir(stack.instance_dir / "maildir", create=True)
    box.clear()
    return engine


def count_rows(stack: Stack, model, *where) -> int:
    from sqlalchemy import func, select

    from ueoz_migration.db.engine import make_engine

    engine = make_engine(stack.database_url)
    try:
        with engine.connect() as connection:
            return connection.scalar(select(func.count()).select_from(model).where(*where))
    finally:
        engine.dispose()


def log_in(page: Page, stack: Stack, who: str, system: str = "P1") -> None:
    """Sign in where a person starts: at demo domain system ``system``, **Zaloguj się przez
    UEOZ**, then the stand-in node, as the demo person whose button starts with ``who``."""
    page.goto(stack.domain_system(system))
    page.get_by_role("link", name="Zaloguj się przez UEOZ").click()
    log_in_at_node(page, who)


def log_in_at_node(page: Page, who: str) -> None:
    """At the stand-in node's page: pick the demo person whose button starts with ``who``."""
    page.wait_for_url("**/SingleSignOnService")
    page.get_by_role("button", name=who).click()
    page.get_by_role("button", name="Zaloguj", exact=True).click()


def expect_signed_in(page: Page, stack: Stack, system: str, name: str) -> dict[str, str]:
    """The page is demo domain system ``system``, signed in as ``name``; return the claims it
    shows (its table: claim → value, as the person reads them)."""
    expect(page).to_have_url(stack.domain_system(system))
    expect(page.locator("#signed-in")).to_have_text(f"Zalogowano jako {name}")
    table = page.locator("table", has_text="Dane otrzymane z UEOZ")
    names = table.locator("tbody th").all_inner_texts()
    values = table.locator("tbody td").all_inner_texts()
    return dict(zip(names, values, strict=True))


def click(page: Page, name: str) -> None:
    page.get_by_role("button", name=name, exact=True).click()
