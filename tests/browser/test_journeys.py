"""The manual's journeys, in Chromium, against the stack `make run` starts."""

from __future__ import annotations

import re
import sqlite3

from playwright.sync_api import Page, expect

from tests.browser.conftest import (
    assert_accessible,
    click,
    count_rows,
    expect_signed_in,
    log_in,
    log_in_at_node,
    running_stack,
    screenshot,
)
from ueoz_migration.db.models import OutboxMessage, UeozAccount

ANNA_EMAIL = "amicsokol@csioz.pl"


def heading(page: Page):
    return page.get_by_role("heading", level=1)


def test_the_searching_page_moves_on_by_itself_with_and_without_javascript(
    browser, tmp_path_factory, axe
):
    # A stack of its own whose e-PLOZ directory is away at first (its table renamed): the
    # search is retried and the person waits on the searching screen. Once the directory is
    # back, the page moves on to the account found by itself: by polling with JavaScript,
    # by refreshing without it.
    instance = tmp_path_factory.mktemp("eploz-away")
    with running_stack(instance, SEARCH_RETRY_BASE_SECONDS="2") as stack:
        database = sqlite3.connect(stack.instance_dir / "ueoz.sqlite3", isolation_level=None)
        database.execute("ALTER TABLE eploz_accounts RENAME TO eploz_accounts_away")
        try:
            with_js = browser.new_context(base_url=stack.base_url, locale="pl-PL").new_page()
            log_in(with_js, stack, "Anna Maria")
            expect(heading(with_js)).to_have_text("Wyszukiwanie Twojego konta")
            assert_accessible(axe, with_js)
            screenshot(with_js, "02b-searching")

            login = browser.new_context(base_url=stack.base_url, locale="pl-PL")
            julia = login.new_page()
            log_in(julia, stack, "Julia Maria")
            expect(heading(julia)).to_have_text("Wyszukiwanie Twojego konta")
            without_js = browser.new_context(
                base_url=stack.base_url, locale="pl-PL", java_script_enabled=False
            )
            without_js.add_cookies(login.cookies())  # the same person, in a page without JS
            no_js = without_js.new_page()
            no_js.goto("/migracja")
            expect(heading(no_js)).to_have_text("Wyszukiwanie Twojego konta")
        finally:
            database.execute("ALTER TABLE eploz_accounts_away RENAME TO eploz_accounts")
            database.close()

        for page in (with_js, no_js):
            expect(heading(page)).to_have_text("Migracja danych do UEOZ", timeout=20_000)
        expect(no_js.get_by_text("Odnaleźliśmy Twoje dane i zweryfikowaliśmy je")).to_be_visible()


def test_anna_is_found_and_migrated_and_signed_in_to_the_domain_system(page, demo, axe):
    page.goto("/")  # UEOZ's own start page, for a person who comes to it directly
    expect(heading(page)).to_have_text("Zaloguj się do Systemu")
    assert_accessible(axe, page)
    screenshot(page, "01-start")

    log_in(page, demo, "Anna Maria")  # from Platforma P1's "Zaloguj się przez UEOZ"
    expect(page.get_by_text("Odnaleźliśmy Twoje dane i zweryfikowaliśmy je")).to_be_visible()
    expect(page.locator("dl.person")).to_contain_text("Mickiewicz-Sokołowska")
    assert_accessible(axe, page)
    screenshot(page, "03-found")

    click(page, "Utwórz konto w UEOZ")
    expect(heading(page)).to_have_text("Uzupełnij adres e-mail")
    expect(page.get_by_label("E-mail", exact=False).first).to_have_value(ANNA_EMAIL)
    expect(page.locator("dl.person")).to_contain_text("amicsokol")
    assert_accessible(axe, page)
    screenshot(page, "04-email-entry")

    page.get_by_role("checkbox").check()
    click(page, "Zakończ")
    expect(heading(page)).to_have_text("Weryfikacja adresu e-mail")
    expect(page.get_by_text("a***@csioz.pl")).to_be_visible()
    assert ANNA_EMAIL not in page.content()
    assert_accessible(axe, page)
    screenshot(page, "05-awaiting-verification")

    page.goto(demo.wait_for_link(ANNA_EMAIL))
    expect(heading(page)).to_have_text("Konto UEOZ gotowe")
    expect(page.get_by_text("adres e-mail zweryfikowany")).to_be_visible()
    assert_accessible(axe, page)
    screenshot(page, "06-done")

    page.get_by_role("link", name="Przejdź do systemu dziedzinowego").click()
    claims = expect_signed_in(page, demo, "P1", "Anna Mickiewicz-Sokołowska")
    assert claims["given_name"] == "Anna Maria"
    assert claims["family_name"] == "Mickiewicz-Sokołowska"
    assert claims["email"] == ANNA_EMAIL
    assert claims["email_verified"] == "true"
    # Her e-PLOZ grants for this system only: P1:LEKARZ, not GABINET:ADMIN.
    assert claims["roles"] == '["LEKARZ"]'
    assert claims["acr"] == "http://eidas.europa.eu/LoA/substantial"
    assert "pesel" not in claims  # P1 is not registered for the pesel scope
    screenshot(page, "15-domain-system-signed-in")
    verified_anna = (UeozAccount.email == ANNA_EMAIL, UeozAccount.email_verified_at.is_not(None))
    assert count_rows(demo, UeozAccount, *verified_anna) == 1


def test_the_link_opened_in_another_browser_leads_to_the_domain_systems_sign_in(
    page, demo, browser, axe
):
    log_in(page, demo, "Anna Maria")
    click(page, "Utwórz konto w UEOZ")
    page.get_by_role("checkbox").check()
    click(page, "Zakończ")
    link = demo.wait_for_link(ANNA_EMAIL)

    other_browser = browser.new_context(locale="pl-PL").new_page()  # any browser will do
    other_browser.goto(link)  # one that does not run the migration confirms with a button
    expect(heading(other_browser)).to_have_text("Potwierdź adres e-mail")
    expect(other_browser.get_by_text("a***@csioz.pl")).to_be_visible()
    assert_accessible(axe, other_browser)
    screenshot(other_browser, "18-link-confirm")
    click(other_browser, "Potwierdź adres e-mail")
    expect(heading(other_browser)).to_have_text("Konto UEOZ gotowe")
    expect(other_browser.get_by_text("adres e-mail zweryfikowany")).to_be_visible()
    assert_accessible(axe, other_browser)

    # No one is signed in in this browser: the button starts Platforma P1's own sign-in,
    # which takes her through the node once more and back, signed in.
    other_browser.get_by_role("link", name="Przejdź do systemu dziedzinowego").click()
    log_in_at_node(other_browser, "Anna Maria")
    claims = expect_signed_in(other_browser, demo, "P1", "Anna Mickiewicz-Sokołowska")
    assert claims["email"] == ANNA_EMAIL
    assert claims["roles"] == '["LEKARZ"]'
    other_browser.context.close()


def test_hermegilda_gets_code_208_then_creates_a_new_account(page, demo, axe):
    log_in(page, demo, "HERMEGILDA")

    expect(heading(page)).to_have_text("Wystąpił błąd w trakcie weryfikacji konta")
    number = page.locator(".event-number").inner_text()
    assert re.fullmatch(r"MIGRATION_\d{12}", number)
    expect(page.locator(".event-code")).to_have_text("208")
    expect(page.get_by_text("19239").first).to_be_visible()
    expect(page.get_by_text("logowanie@cez.gov.pl").first).to_be_visible()
    expect(page.locator("dl.person")).to_contain_text("********247")
    assert "97040117247" not in page.content()  # the screenshot the helpdesk asks for
    assert_accessible(axe, page)
    screenshot(page, "07-error-208")

    click(page, "Dalej")
    expect(heading(page)).to_have_text("Uzupełnij adres e-mail")
    fields = page.locator("input[type=email]")
    expect(fields.nth(0)).to_have_value("")
    expect(fields.nth(1)).to_have_value("")

    click(page, "Zakończ")  # nothing filled in: the messages stand next to the fields
    expect(page.locator(".field-error").first).to_be_visible()
    assert_accessible(axe, page)
    screenshot(page, "08-email-entry-errors")

    fields.nth(0).fill("hermegilda@example.pl")
    fields.nth(1).fill("hermegilda@example.pl")
    page.get_by_role("checkbox").check()
    click(page, "Zakończ")
    expect(heading(page)).to_have_text("Weryfikacja adresu e-mail")

    page.goto(demo.wait_for_link("hermegilda@example.pl"))
    expect(heading(page)).to_have_text("Konto UEOZ gotowe")
    page.get_by_role("link", name="Przejdź do systemu dziedzinowego").click()
    claims = expect_signed_in(page, demo, "P1", "HERMEGILDA DLIGEMREH")
    assert claims["email"] == "hermegilda@example.pl"
    assert claims["roles"] == "[]"  # a new account: Helena Grabowska's grants stay hers


def test_cancel_from_each_state_returns_to_the_start_screen_and_the_domain_system(page, demo, axe):
    for who, buttons in [
        ("Anna Maria", []),  # found
        ("HERMEGILDA", []),  # error
        ("Stanisław", ["Utwórz konto w UEOZ"]),  # email entry
    ]:
        log_in(page, demo, who)
        expect(page.get_by_role("button", name="Anuluj")).to_be_visible()
        for button in buttons:
            click(page, button)
        click(page, "Anuluj")
        expect(heading(page)).to_have_text("Zaloguj się do Systemu")
        expect(page.get_by_text("Przerwano tworzenie konta w UEOZ.")).to_be_visible()
        if who == "Anna Maria":
            assert_accessible(axe, page)
            screenshot(page, "16-cancelled-return-to-domain-system")

        # The domain system is told that the sign-in was cancelled (access_denied).
        page.get_by_role("link", name="Wróć do systemu Platforma P1 (demo) bez logowania").click()
        expect(page).to_have_url(re.compile(re.escape(demo.domain_system("P1"))))
        expect(page.get_by_role("alert")).to_have_text(
            "Logowanie przez UEOZ zostało anulowane. Możesz spróbować ponownie."
        )
        expect(page.get_by_text("Nie jesteś zalogowany.")).to_be_visible()


def test_the_account_menu_opens_by_keyboard_and_logs_out(page, demo):
    log_in(page, demo, "Anna Maria")
    expect(heading(page)).to_have_text("Migracja danych do UEOZ")
    menu = page.locator("summary", has_text="Moje konto")
    logout = page.get_by_role("button", name="Wyloguj")
    expect(logout).to_be_hidden()

    menu.focus()
    page.keyboard.press("Enter")
    expect(logout).to_be_visible()
    logout.focus()
    page.keyboard.press("Enter")

    expect(heading(page)).to_have_text("Zaloguj się do Systemu")
    expect(page.get_by_text("Wylogowano.")).to_be_visible()
    expect(page.locator("summary", has_text="Moje konto")).to_have_count(0)


def test_changing_the_address_sends_a_new_link_and_kills_the_old(page, demo, browser):
    log_in(page, demo, "Anna Maria")
    click(page, "Utwórz konto w UEOZ")
    page.get_by_role("checkbox").check()
    click(page, "Zakończ")
    old_link = demo.wait_for_link(ANNA_EMAIL)

    click(page, "Zmień adres e-mail")
    fields = page.locator("input[type=email]")
    fields.nth(0).fill("anna.nowa@example.pl")
    fields.nth(1).fill("anna.nowa@example.pl")
    page.get_by_role("checkbox").check()
    click(page, "Zakończ")
    expect(page.get_by_text("a***@example.pl")).to_be_visible()
    new_link = demo.wait_for_link("anna.nowa@example.pl")

    page.goto(old_link)
    expect(heading(page)).to_have_text("Ten link nie jest już ważny")
    page.goto(new_link)
    expect(heading(page)).to_have_text("Konto UEOZ gotowe")


def test_a_used_link_says_so_and_resend_replaces_the_link(page, demo, axe):
    log_in(page, demo, "Julia Maria")
    click(page, "Utwórz konto w UEOZ")
    page.get_by_role("checkbox").check()
    click(page, "Zakończ")
    first = demo.wait_for_link("jzielinska@demo.ueoz.example")

    click(page, "Wyślij link ponownie")
    second = demo.wait_for_link("jzielinska@demo.ueoz.example", count=2)
    assert second != first

    page.goto(first)
    expect(heading(page)).to_have_text("Ten link nie jest już ważny")
    assert_accessible(axe, page)
    screenshot(page, "09-link-retired")
    page.goto(second)
    expect(heading(page)).to_have_text("Konto UEOZ gotowe")
    page.goto(second)
    expect(heading(page)).to_have_text("Link został już użyty")
    assert_accessible(axe, page)
    screenshot(page, "10-link-used")


def test_a_double_click_on_finish_gives_one_account_and_one_email(page, demo):
    log_in(page, demo, "Anna Maria")
    click(page, "Utwórz konto w UEOZ")
    page.get_by_role("checkbox").check()

    page.get_by_role("button", name="Zakończ", exact=True).dblclick()

    expect(heading(page)).to_have_text("Weryfikacja adresu e-mail")
    demo.wait_for_link(ANNA_EMAIL)
    assert count_rows(demo, UeozAccount) == 2  # Anna's and the demo's migrated person
    assert count_rows(demo, OutboxMessage) == 1
    assert len(demo.messages_to(ANNA_EMAIL)) == 1


def test_two_tabs_on_one_attempt(page, demo):
    log_in(page, demo, "Anna Maria")
    click(page, "Utwórz konto w UEOZ")
    second_tab = page.context.new_page()
    second_tab.goto("/migracja")
    expect(heading(second_tab)).to_have_text("Uzupełnij adres e-mail")

    page.get_by_role("checkbox").check()
    click(page, "Zakończ")
    expect(heading(page)).to_have_text("Weryfikacja adresu e-mail")

    click(second_tab, "Anuluj")  # the attempt moved on in the first tab
    expect(second_tab.get_by_role("alert")).to_contain_text("Tego kroku nie można już wykonać")
    expect(heading(second_tab)).to_have_text("Weryfikacja adresu e-mail")
    assert count_rows(demo, OutboxMessage) == 1


def test_returning_later_from_another_browser_resumes_the_attempt(page, demo, browser):
    log_in(page, demo, "Anna Maria")
    click(page, "Utwórz konto w UEOZ")
    expect(heading(page)).to_have_text("Uzupełnij adres e-mail")

    elsewhere = browser.new_context(locale="pl-PL", base_url=demo.base_url).new_page()
    log_in(elsewhere, demo, "Anna Maria")

    expect(heading(elsewhere)).to_have_text("Uzupełnij adres e-mail")
    elsewhere.context.close()


def test_an_already_migrated_person_goes_straight_to_the_domain_system(page, demo):
    shown = []
    page.on("framenavigated", lambda frame: shown.append(frame.url))
    log_in(page, demo, "Zofia", system="GABINET")

    claims = expect_signed_in(page, demo, "GABINET", "Zofia Dąbrowska")
    assert claims["email"] == "mkaczmarek@demo.ueoz.example"
    assert not [url for url in shown if url.startswith(demo.base_url + "/migracja")]


def test_an_expired_link_offers_a_one_click_resend(browser, tmp_path_factory, axe):
    # A stack of its own, whose links live for 4 seconds (the mail sender gives up on an
    # e-mail whose link has expired: the first one must go out before then).
    instance = tmp_path_factory.mktemp("short-links")
    with running_stack(instance, VERIFICATION_LINK_TTL_HOURS=str(4 / 3600)) as stack:
        page = browser.new_context(base_url=stack.base_url, locale="pl-PL").new_page()
        log_in(page, stack, "Julia Maria")
        click(page, "Utwórz konto w UEOZ")
        page.get_by_role("checkbox").check()
        click(page, "Zakończ")
        address = "jzielinska@demo.ueoz.example"
        expired = stack.wait_for_link(address)
        page.wait_for_timeout(4500)

        page.goto(expired)
        expect(heading(page)).to_have_text("Link weryfikacyjny wygasł")
        assert_accessible(axe, page)
        screenshot(page, "14-link-expired")
        click(page, "Wyślij nowy link")
        fresh = stack.wait_for_link(address, count=2)
        assert fresh != expired
        page.context.close()
