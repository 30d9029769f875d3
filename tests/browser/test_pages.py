"""Every page in both languages, by keyboard, on a phone, and the login failures."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import assert_accessible, click, log_in, screenshot

PAGES = {
    "/": ("Zaloguj się do Systemu", "Log in to the System"),
    "/czym-jest-ueoz": None,
    "/pomoc": None,
    "/warunki-korzystania": None,
    "/polityka-prywatnosci": None,
    "/deklaracja-dostepnosci": None,
    "/mapa-strony": None,
    "/kontakt": None,
    "/logowanie-login-gov-pl": None,
    "/dev/mail": None,
    # RP-initiated logout asked for without an ID token: the person confirms it here.
    "/oidc/logout": ("Wylogować się z UEOZ?", "Log out of UEOZ?"),
}


def switch_language(page: Page, code: str) -> None:
    page.locator(".language-switch").get_by_role("link", name=code.upper()).click()
    expect(page.locator("html")).to_have_attribute("lang", code)


@pytest.mark.parametrize("path", PAGES)
def test_every_page_reads_in_polish_and_english_without_axe_violations(page, demo, axe, path):
    page.goto(path)
    expect(page.locator("html")).to_have_attribute("lang", "pl")
    polish = page.get_by_role("heading", level=1).inner_text()
    assert_accessible(axe, page)

    switch_language(page, "en")

    expect(page).to_have_url(re.compile(re.escape(path) + "$"))
    english = page.get_by_role("heading", level=1).inner_text()
    assert english != polish, "the page's heading was not translated"
    if PAGES[path]:
        assert (polish, english) == PAGES[path]
    assert_accessible(axe, page)
    switch_language(page, "pl")


def test_the_journey_screens_read_in_english_too(page, demo, axe):
    page.goto("/")
    switch_language(page, "en")
    log_in(page, demo, "HERMEGILDA")

    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile("error", re.IGNORECASE))
    expect(page.get_by_text("208", exact=True)).to_be_visible()
    assert_accessible(axe, page)
    screenshot(page, "11-error-208-en")
    page.get_by_role("button", name="Next").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    assert_accessible(axe, page)


def test_the_journey_works_by_keyboard_alone(page, demo):
    log_in(page, demo, "Anna Maria")
    expect(page.get_by_role("button", name="Utwórz konto w UEOZ")).to_be_visible()

    def tab_to(name: str) -> None:
        for _ in range(40):
            page.keyboard.press("Tab")
            focused = page.evaluate("document.activeElement.innerText || document.activeElement.id")
            if name in focused:
                return
        raise AssertionError(f"{name!r} cannot be reached with the Tab key")

    tab_to("Utwórz konto w UEOZ")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Uzupełnij adres e-mail")
    tab_to("terms_accepted")
    page.keyboard.press("Space")
    tab_to("Zakończ")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Weryfikacja adresu e-mail")


def test_enter_in_the_email_field_finishes_and_anuluj_stands_beside_zakoncz(page, demo):
    log_in(page, demo, "Anna Maria")
    click(page, "Utwórz konto w UEOZ")
    cancel = page.get_by_role("button", name="Anuluj").bounding_box()
    finish = page.get_by_role("button", name="Zakończ").bounding_box()
    assert abs(cancel["y"] - finish["y"]) < 2 and cancel["x"] < finish["x"]  # one row

    page.get_by_role("checkbox").check()
    page.get_by_label("E-mail", exact=False).first.press("Enter")

    expect(page.get_by_role("heading", level=1)).to_have_text("Weryfikacja adresu e-mail")


def test_a_phone_sized_screen_shows_the_whole_form(browser, demo, axe):
    context = browser.new_context(
        base_url=demo.base_url, viewport={"width": 375, "height": 740}, is_mobile=True
    )
    page = context.new_page()
    log_in(page, demo, "Anna Maria")
    click(page, "Utwórz konto w UEOZ")
    # The e-mail screen must have loaded: measured while the click's navigation is under
    # way, the page has no document element yet.
    expect(page.get_by_role("button", name="Zakończ")).to_be_visible()

    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the page scrolls sideways ({width}px)"
    assert_accessible(axe, page)
    screenshot(page, "12-phone-email-entry")
    context.close()


def test_cancelling_at_the_node_ends_on_a_clear_page(page, demo, axe):
    page.goto(demo.domain_system("P1"))
    page.get_by_role("link", name="Zaloguj się przez UEOZ").click()
    page.wait_for_url("**/SingleSignOnService")
    screenshot(page, "02a-node-login")  # the stand-in's page: demo people, the four inputs
    page.get_by_role("button", name="Anuluj", exact=True).click()

    expect(page).to_have_url(re.compile(r"^" + re.escape(demo.base_url)))
    expect(page.get_by_role("heading", level=1)).to_have_text("Logowanie zostało przerwane")
    expect(page).to_have_title(re.compile(r"^Logowanie zostało przerwane"))
    expect(page.locator("main .panel-error p").first).to_have_text(
        "Logowanie w Węźle Krajowym zostało anulowane albo nie zakończyło się "
        "uwierzytelnieniem. Możesz spróbować jeszcze raz."
    )
    expect(page.get_by_role("link", name="Zaloguj się ponownie", exact=True)).to_be_visible()
    assert "Traceback" not in page.content()
    assert_accessible(axe, page)
    screenshot(page, "13-login-cancelled")

    page.get_by_role("link", name="Wróć do systemu Platforma P1 (demo) bez logowania").click()
    expect(page.get_by_role("alert")).to_have_text(
        "Logowanie przez UEOZ zostało anulowane. Możesz spróbować ponownie."
    )


@pytest.mark.parametrize(
    ("client_id", "redirect_uri", "says"),
    [
        ("P1", "https://evil.example/", "Adres powrotu podany przez system dziedzinowy"),
        ("EVIL", "https://evil.example/", "System, z którego przychodzisz, nie jest"),
    ],
)
def test_an_unregistered_system_or_return_address_is_refused_at_ueoz(
    page, demo, axe, client_id, redirect_uri, says
):
    query = urlencode(
        {
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": "openid",
            "state": "s",
            "nonce": "n",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
        }
    )
    answer = page.goto(f"/oidc/authorize?{query}")

    assert answer.status == 400
    expect(page.get_by_role("heading", level=1)).to_have_text("Nie można rozpocząć logowania")
    expect(page.locator("main")).to_contain_text(says)
    assert page.url.startswith(demo.base_url + "/oidc/authorize?"), "the browser left UEOZ"
    assert_accessible(axe, page)


def test_a_login_back_from_another_site_reads_in_both_languages(browser, demo, axe):
    # The node's post back is cross-site in production, so it comes without the session
    # cookie and the service answers with one more step from its own site. Scripts are kept
    # from sending the forms on, so that both pages stay to be read.
    starter = browser.new_context(base_url=demo.base_url, locale="pl-PL")
    starter.route("**/js/autosubmit.js", lambda route: route.abort())
    to_node = starter.new_page()
    to_node.goto("/login")  # UEOZ's own start page's login
    relay_state = to_node.locator("input[name=RelayState]").get_attribute("value")

    elsewhere = browser.new_context(base_url=demo.base_url, locale="pl-PL")
    elsewhere.route("**/js/autosubmit.js", lambda route: route.abort())
    page = elsewhere.new_page()
    for language, heading in (("pl", "Powrót z login.gov.pl"), ("en", "Back from login.gov.pl")):
        if language == "en":
            page.goto("/jezyk/en")
        page.set_content(
            f'<form method="post" action="{demo.base_url}/saml/acs">'
            f'<input type="hidden" name="SAMLart" value="AAQAAA==">'
            f'<input type="hidden" name="RelayState" value="{relay_state}">'
            "<button>post</button></form>"
        )
        page.get_by_role("button", name="post").click()
        expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        assert_accessible(axe, page)
    starter.close()
    elsewhere.close()
