"""The staff console in Chromium, on SQLite and on PostgreSQL: each role's way through it, the
role matrix, the no-enumeration rule, who looked at whom, and the actions' log rows.

Staff sign in at the stand-in node like anyone, by typing their identity into its form; the
roles are granted in the stack's database as ``staff grant`` would.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import (
    Stack,
    assert_accessible,
    click,
    log_in,
    reset_to_demo,
    running_stack,
    screenshot,
)
from tests.conftest import migrated_postgres_database
from ueoz_migration.audit.verify import verify_export
from ueoz_migration.config import Settings
from ueoz_migration.console.staff import Role, Staff
from ueoz_migration.db.engine import make_engine, make_sessionmaker
from ueoz_migration.journey import utcnow

EWA = ("Ewa", "Pomocna", "90010112349", "1990-01-01")  # helpdesk
PAWEL = ("Paweł", "Audytor", "85020254323", "1985-02-02")  # auditor
OLGA = ("Olga", "Operatorka", "75030312342", "1975-03-03")  # operator
PAGES = {
    "/konsola/pomoc": {"helpdesk"},
    "/konsola/audyt": {"auditor"},
    "/konsola/audyt/kto-przegladal": {"auditor"},
    "/konsola/postep": {"operator", "auditor"},
}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def console_stack(request, tmp_path_factory) -> Iterator[Stack]:
    instance = tmp_path_factory.mktemp(f"console-{request.param}")
    if request.param == "sqlite":
        with running_stack(instance) as stack:
            yield stack
        return
    with (
        migrated_postgres_database(f"ueoz_console_{uuid.uuid4().hex[:8]}") as url,
        running_stack(instance, DATABASE_URL=url) as stack,
    ):
        yield stack


@pytest.fixture
def console(console_stack: Stack) -> Iterator[Stack]:
    engine = reset_to_demo(console_stack)
    yield console_stack
    engine.dispose()


def grant(stack: Stack, who: tuple[str, ...], *roles: str) -> None:
    """Grant roles as ``staff grant --pesel … --role …`` would."""
    with staff_of(stack) as staff:
        for role in roles:
            staff.grant(who[2], Role(role), by="test", now=utcnow())


def revoke(stack: Stack, who: tuple[str, ...], role: str) -> None:
    with staff_of(stack) as staff:
        staff.revoke(who[2], Role(role), by="test", now=utcnow())


@contextmanager
def staff_of(stack: Stack) -> Iterator[Staff]:
    settings = Settings.from_env({"INSTANCE_DIR": str(stack.instance_dir)})
    engine = make_engine(stack.database_url)
    try:
        yield Staff(make_sessionmaker(engine), settings.pesel_key)
    finally:
        engine.dispose()


def sign_in(page: Page, who: tuple[str, ...]) -> None:
    """From the console's start: the node login, typing the staff member's identity."""
    page.goto("/konsola/")
    page.get_by_role("link", name="Zaloguj się przez login.gov.pl").click()
    page.wait_for_url("**/SingleSignOnService")
    for label, value in zip(
        ("Imię (imiona)", "Nazwisko", "PESEL", "Data urodzenia (RRRR-MM-DD)"), who, strict=True
    ):
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Zaloguj", exact=True).click()
    page.wait_for_url("**/konsola/")


def new_page(browser: Browser, stack: Stack) -> Page:
    context = browser.new_context(base_url=stack.base_url, locale="pl-PL")
    context.set_default_timeout(15_000)
    return context.new_page()


def hermegilda_gets_208(browser: Browser, stack: Stack) -> str:
    """The manual's HERMEGILDA DLIGEMREH logs in and gets code 208: her event number."""
    person = new_page(browser, stack)
    log_in(person, stack, "HERMEGILDA")
    number = person.locator(".event-number")
    expect(number).to_have_text(re.compile(r"MIGRATION_\d{12}"))
    text = number.inner_text()
    person.context.close()
    return text


def look_up(page: Page, number: str, digits: str) -> None:
    page.goto("/konsola/pomoc")
    page.get_by_label("Numer zdarzenia").fill(number)
    page.get_by_label("3 ostatnie cyfry PESEL").fill(digits)
    click(page, "Wyszukaj")


def log_rows(stack: Stack, actor: str) -> list[tuple[str, str, str, dict]]:
    from sqlalchemy import select

    from ueoz_migration.db.models import TransitionLogEntry as Row

    engine = make_engine(stack.database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(Row.event, Row.outcome, Row.target, Row.detail)
                .where(Row.actor == actor)
                .order_by(Row.id)
            ).all()
    finally:
        engine.dispose()
    return [(event, outcome, target, json.loads(detail)) for event, outcome, target, detail in rows]


def test_the_helpdesk_finds_the_caller_only_with_the_right_digits_and_cancels_the_attempt(
    browser, console, axe, request
):
    shots = "sqlite" in request.node.callspec.id  # one set of screenshots for the docs
    grant(console, EWA, "helpdesk")
    number = hermegilda_gets_208(browser, console)
    page = new_page(browser, console)
    page.goto("/konsola/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Konsola pracowników")
    assert_accessible(axe, page)
    if shots:
        screenshot(page, "console-01-sign-in")

    sign_in(page, EWA)
    expect(page.get_by_text(re.compile(r"Pracownik \d+ \(PESEL \*{8}349\)"))).to_be_visible()
    page.get_by_role("link", name="Pomoc: wyszukaj próbę").first.click()
    assert_accessible(axe, page)

    # No enumeration: wrong digits and an unknown number get the same answer, nothing else.
    answers = []
    for typed_number, digits in ((number, "248"), ("MIGRATION_999999999999", "247")):
        look_up(page, typed_number, digits)
        alert = page.get_by_role("alert")
        answers.append(alert.inner_text())
        expect(page.get_by_text("DLIGEMREH")).to_have_count(0)
    assert answers[0] == answers[1]
    assert "Żadna próba nie pasuje" in answers[0]
    assert_accessible(axe, page)
    if shots:
        screenshot(page, "console-02-helpdesk-no-match")

    look_up(page, number.lower(), "247")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Próba {number}")
    expect(page.locator("#code")).to_have_text(
        "208: account found, first and last name both differ"
    )
    expect(page.locator("#state")).to_have_text("error")
    expect(page.get_by_text("HERMEGILDA DLIGEMREH")).to_be_visible()
    expect(page.locator("figure.flow-diagram svg")).to_be_visible()
    expect(page.locator("#path-line")).to_have_text("searching → error")
    assert_accessible(axe, page)
    if shots:
        screenshot(page, "console-03-helpdesk-story")

    # By keyboard: the button takes the focus and Enter presses it.
    page.get_by_role("button", name="Anuluj próbę").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_text("Próba anulowana.")).to_be_visible()
    expect(page.locator("#state")).to_have_text("cancelled")
    expect(page.locator("#path-line")).to_have_text("searching → error → cancelled")
    assert_accessible(axe, page)
    if shots:
        screenshot(page, "console-04-helpdesk-cancelled")
    [(event, outcome, target, detail)] = log_rows(console, "helpdesk")
    assert (event, outcome, target) == ("cancel", "applied", "cancelled")
    assert list(detail) == ["staff"] and isinstance(detail["staff"], int)


def test_the_auditor_verifies_replays_exports_and_sees_who_looked(
    browser, console, axe, request, tmp_path
):
    shots = "sqlite" in request.node.callspec.id
    grant(console, EWA, "helpdesk")
    grant(console, PAWEL, "auditor")
    number = hermegilda_gets_208(browser, console)
    helpdesk = new_page(browser, console)
    sign_in(helpdesk, EWA)
    look_up(helpdesk, number, "247")
    expect(helpdesk.get_by_role("heading", level=1)).to_have_text(f"Próba {number}")
    helpdesk.get_by_role("button", name="Anuluj próbę").click()
    expect(helpdesk.get_by_text("Próba anulowana.")).to_be_visible()

    page = new_page(browser, console)
    sign_in(page, PAWEL)
    page.get_by_role("link", name="Audyt").first.click()
    assert_accessible(axe, page)
    if shots:
        screenshot(page, "console-05-audit")

    click(page, "Weryfikuj")  # every attempt
    expect(page.locator("#verdict")).to_have_text("Wynik: w porządku.")
    expect(page.locator("#summary")).to_contain_text("verify: OK;")
    assert_accessible(axe, page)

    page.goto("/konsola/audyt")
    page.get_by_label("Próba (identyfikator lub numer zdarzenia)", exact=True).fill(number)
    click(page, "Odtwórz")
    expect(page.locator("#verdict")).to_have_text("Wynik: w porządku.")
    expect(page.locator("#path")).to_have_text("path: searching → error → cancelled")
    expect(page.get_by_role("cell", name="helpdesk")).to_be_visible()  # the cancel's actor
    assert_accessible(axe, page)
    if shots:
        screenshot(page, "console-06-audit-replay")

    page.goto("/konsola/audyt")
    with page.expect_download() as waiting:
        click(page, "Pobierz eksport")
    export = tmp_path / "export.jsonl"
    waiting.value.save_as(export)
    lines = export.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["start", "search_failed", "cancel"]
    key = Settings.from_env({"INSTANCE_DIR": str(console.instance_dir)}).audit_key
    assert verify_export(lines, key).ok

    page.get_by_role("link", name="Kto przeglądał dane").first.click()
    rows = page.locator("#looks tbody tr")
    # Newest first: the export, the replay (the auditor); the cancel, the story again, the
    # look-up (the helpdesk). The whole log's verification shows no one's data.
    expect(rows).to_have_count(5)
    purposes = [row.locator("td").nth(3).inner_text() for row in rows.all()]
    assert purposes == [
        "audyt: eksport za okres",
        "audyt: odtworzenie próby",
        "pomoc: historia próby ponownie",
        "pomoc: anulowanie próby",
        "pomoc: wyszukanie (numer zdarzenia i cyfry PESEL)",
    ]
    expect(rows.nth(4)).to_contain_text(re.compile(r"\d+ \(\*{8}349\)"))
    assert "97040117247" not in page.content() and "DLIGEMREH" not in page.content()
    assert_accessible(axe, page)
    if shots:
        screenshot(page, "console-07-who-looked")


def test_the_operator_reads_the_progress_with_and_without_javascript(
    browser, console, axe, request
):
    shots = "sqlite" in request.node.callspec.id
    grant(console, OLGA, "operator")
    hermegilda_gets_208(browser, console)
    context = browser.new_context(base_url=console.base_url, locale="pl-PL")
    page = context.new_page()
    sign_in(page, OLGA)

    page.get_by_role("link", name="Postęp migracji").first.click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Postęp migracji")
    expect(page.locator("img.chart")).to_have_count(3)
    for image in page.locator("img.chart").all():
        assert image.evaluate("element => element.naturalWidth") > 0  # drawn, not broken
    expect(page.locator("#funnel tbody td").first).to_have_text("1")
    expect(page.locator("#codes").get_by_role("row", name="208")).to_contain_text("1")
    assert_accessible(axe, page)
    if shots:
        screenshot(page, "console-08-progress")
    page.get_by_role("link", name="EN").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("The migration's progress")
    assert_accessible(axe, page)

    # The same figures in a browser that runs no script: the charts are images, the
    # numbers tables.
    plain = browser.new_context(
        base_url=console.base_url, locale="pl-PL", java_script_enabled=False
    )
    plain.add_cookies(context.cookies())
    without_js = plain.new_page()
    without_js.goto("/konsola/postep")
    expect(without_js.locator("img.chart")).to_have_count(3)
    expect(without_js.locator("#funnel tbody td").first).to_have_text("1")


def test_the_role_matrix_every_page_for_every_role_and_for_no_one(browser, console, axe):
    for role in ("helpdesk", "auditor", "operator", None):
        if role:
            grant(console, EWA, role)
        page = new_page(browser, console)
        sign_in(page, EWA)
        for path, allowed in PAGES.items():
            answer = page.goto(path)
            assert answer.status == (200 if role in allowed else 403), (role, path)
            if role not in allowed:
                expect(page.get_by_role("heading", level=1)).to_have_text("Brak dostępu")
        if role is None:
            assert page.goto("/konsola/").status == 403
            assert_accessible(axe, page)
        page.context.close()
        if role:
            revoke(console, EWA, role)

    anonymous = new_page(browser, console)
    for path in PAGES:
        anonymous.goto(path)
        expect(anonymous).to_have_url(f"{console.base_url}/konsola/")
        expect(anonymous.get_by_role("link", name="Zaloguj się przez login.gov.pl")).to_be_visible()
