"""Each screen of the journey shows the manual's texts, in Polish and in English."""

from __future__ import annotations

import html

import pytest
from lxml import html as lxml_html
from sqlalchemy import select, update

from tests.domain_systems import DomainSystem
from tests.factories import HERMEGILDA, submit, user
from ueoz_migration.db.models import OutboxMessage
from ueoz_migration.journey import utcnow


def page(browser, url="/migracja", language=None):
    if language:
        browser.language(language)
    response = browser.get(url, follow_redirects=True)
    return response, html.unescape(response.get_data(as_text=True))


def test_start_screen_offers_login_through_login_gov_pl(browser):
    response, text = page(browser, "/")

    assert response.status_code == 200
    assert '<html lang="pl">' in text
    assert "UEOZ" in text and "Usługi Elektroniczne Ochrony Zdrowia" in text
    assert "<h1>Zaloguj się do Systemu</h1>" in text
    assert 'href="/login">Zaloguj się przez login.gov.pl</a>' in text
    assert "Dowiedz się więcej o logowaniu za pośrednictwem login.gov.pl" in text
    for label in (
        "Czym jest UEOZ?",
        "Pomoc",
        "Warunki korzystania z serwisu",
        "Polityka prywatności",
        "Deklaracja dostępności",
        "Mapa strony",
        "Skontaktuj się z nami",
    ):
        assert f">{label}</a>" in text
    assert "Elektroniczna Platforma Logowania Ochrony Zdrowia (e-PLOZ)" in text


def test_start_screen_logs_in_for_the_domain_system_waiting_and_offers_the_way_back(
    browser, services
):
    p1 = DomainSystem.register(services, "GABINET", name="gabinet.gov.pl")
    browser.get(p1.authorize_url())  # the domain system's request waits for the person

    _, text = page(browser, "/")

    assert 'href="/login">Zaloguj się przez login.gov.pl</a>' in text
    assert '<a href="/przejdz-do-systemu">Wróć do systemu gabinet.gov.pl bez logowania</a>' in text


def test_the_language_switch_turns_every_page_english_and_back(browser):
    _, text = page(browser, "/", language="en")
    assert '<html lang="en">' in text
    assert "<h1>Log in to the System</h1>" in text
    assert "Log in through login.gov.pl" in text
    assert ">Accessibility statement</a>" in text

    response = browser.get("/jezyk/pl?next=/pomoc")
    assert response.status_code == 302 and response.headers["Location"] == "/pomoc"
    _, text = page(browser, "/pomoc")
    assert '<html lang="pl">' in text and "<h1>Pomoc</h1>" in text


def test_the_language_switch_never_sends_the_browser_off_site(browser):
    for target in (
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "/\t/evil.example",  # browsers drop the tab: //evil.example
        "/\n/evil.example",
        "/pomoc\r\nSet-Cookie: x=1",  # no header may be smuggled in, nor a 500
    ):
        response = browser.get("/jezyk/en", query_string={"next": target})
        assert response.headers["Location"] == "/"
    assert browser.get("/jezyk/de").status_code == 404


def test_the_mail_the_person_asks_for_is_in_the_language_of_the_pages(
    browser, start_attempt, services
):
    attempt = start_attempt("awaiting_verification")  # the first e-mail, in Polish
    browser.hold(attempt.id)

    browser.language("en")
    # The switch is a link (a GET any site can make): it changes this browser's pages only.
    assert services.journey.get(attempt.id).language == "pl"
    browser.post("/migracja/resend")

    assert services.journey.get(attempt.id).language == "en"
    with services.sessions() as session:
        subjects = session.scalars(select(OutboxMessage.subject).order_by(OutboxMessage.id)).all()
    assert subjects == ["UEOZ – potwierdź adres e-mail", "UEOZ – confirm your e-mail address"]


def test_searching_screen_updates_by_itself_with_and_without_javascript(browser, start_attempt):
    attempt = start_attempt("searching")
    browser.hold(attempt.id)

    _, text = page(browser)

    assert "<h1>Wyszukiwanie Twojego konta</h1>" in text
    assert (
        "W związku z migracją danych między portalami ePLOZ i UEOZ, system musi odnaleźć Twoje "
        "konto. Może to potrwać kilka minut." in text
    )
    assert '<noscript><meta http-equiv="refresh" content="3"></noscript>' in text
    assert 'src="/static/js/status.js"' in text
    assert browser.get("/migracja/status").get_json() == {"state": "searching"}


def test_status_says_when_the_search_has_moved_on(browser, start_attempt, services):
    attempt = start_attempt("searching")
    browser.hold(attempt.id)
    services.journey.fire(attempt.id, "search_failed", actor=_system(), code=201)

    assert browser.get("/migracja/status").get_json() == {"state": "error"}


def test_status_without_an_attempt_is_not_found(browser):
    response = browser.get("/migracja/status")
    assert response.status_code == 404 and response.get_json() == {"state": None}


def test_found_screen_shows_the_person_and_the_create_button(browser, start_attempt):
    browser.hold(start_attempt("found").id)

    _, text = page(browser)

    assert "<h1>Migracja danych do UEOZ</h1>" in text
    assert "Odnaleźliśmy Twoje dane i zweryfikowaliśmy je" in text
    assert "Możesz teraz utworzyć konto w UEOZ, aby pracować w systemach CeZ." in text
    assert "<dd>Anna Maria</dd>" in text and "<dd>Mickiewicz-Sokołowska</dd>" in text
    assert "<dd>87042712342</dd>" in text
    assert 'action="/migracja/create_account"' in text and "Utwórz konto w UEOZ" in text
    assert 'action="/migracja/cancel"' in text and ">Anuluj<" in text


def test_found_screen_in_english(browser, start_attempt):
    browser.hold(start_attempt("found").id)

    _, text = page(browser, language="en")

    assert "<h1>Data migration to UEOZ</h1>" in text
    assert "We have found your data and verified it" in text
    assert "<dt>First name</dt>" in text and "<dt>Last name</dt>" in text
    assert "Create a UEOZ account" in text


def test_error_screen_gives_the_helpdesk_everything_it_asks_for(browser, start_attempt):
    attempt = start_attempt("error", person=HERMEGILDA)
    browser.hold(attempt.id)

    _, text = page(browser)

    assert "<h1>Wystąpił błąd w trakcie weryfikacji konta</h1>" in text
    assert "Migracja Twojego konta ePLOZ nie powiodła się." in text
    assert 'href="tel:19239">19239</a>' in text
    assert 'href="mailto:logowanie@cez.gov.pl">logowanie@cez.gov.pl</a>' in text
    assert f"numer zdarzenia ({attempt.event_number}) i kod zdarzenia (208)" in text
    assert attempt.event_number.startswith("MIGRATION_")
    assert f'<dd class="event-number">{attempt.event_number}</dd>' in text
    assert '<dd class="event-code">208</dd>' in text
    assert "<dd>HERMEGILDA</dd>" in text and "<dd>DLIGEMREH</dd>" in text
    # The screen asks for a screenshot; the helpdesk needs only the last three digits.
    assert "<dd>********247</dd>" in text and "97040117247" not in text
    assert "Z numeru PESEL pokazujemy tylko 3 ostatnie cyfry" in text
    assert 'action="/migracja/continue_new"' in text and ">Dalej<" in text
    assert 'action="/migracja/cancel"' in text


def test_error_screen_in_english(browser, start_attempt):
    attempt = start_attempt("error", person=HERMEGILDA)
    browser.hold(attempt.id)

    _, text = page(browser, language="en")

    assert "An error occurred while verifying your account" in text
    assert f"the event number ({attempt.event_number}) and the event code (208)" in text
    assert "<dd>********247</dd>" in text and "97040117247" not in text
    assert "Of the PESEL number we show only the last 3 digits" in text
    assert ">Next<" in text and ">Cancel<" in text


def test_email_entry_is_prefilled_from_eploz_and_shows_the_login(browser, start_attempt):
    browser.hold(start_attempt("email_entry").id)

    _, text = page(browser)

    assert "<h1>Uzupełnij adres e-mail</h1>" in text
    assert "<dt>Login</dt><dd>amicsokol</dd>" in text
    assert 'id="email" name="email"' in text and 'value="amicsokol@csioz.pl"' in text
    assert text.count('value="amicsokol@csioz.pl"') == 2
    assert '<label for="email">E-mail<span aria-hidden="true">*</span>' in text
    assert '<label for="email_repeat">Powtórz e-mail<span aria-hidden="true">*</span>' in text
    assert 'href="/warunki-korzystania"' in text and 'id="terms_accepted"' in text
    assert ">Zakończ<" in text and ">Anuluj<" in text
    assert "Jeśli adres e-mail z e-PLOZ nie jest aktualny" in text


def test_email_entry_after_an_error_starts_empty_and_without_a_login(browser, start_attempt):
    browser.hold(start_attempt("new:email_entry", person=HERMEGILDA).id)

    _, text = page(browser)

    assert "<dt>Login</dt><dd>—</dd>" in text
    assert 'value="amicsokol' not in text
    assert 'name="email" required spellcheck="false" type="email" value=""' in text
    # Nothing came from e-PLOZ: the hint does not speak of an e-PLOZ address.
    assert "e-PLOZ" not in text.split("<h1>")[1].split("</form>")[0]
    assert "Wpisz adres e-mail swojego konta UEOZ w obu polach." in text


def test_email_entry_in_english(browser, start_attempt):
    browser.hold(start_attempt("email_entry").id)

    _, text = page(browser, language="en")

    assert "<h1>Complete your e-mail address</h1>" in text
    assert ">Repeat e-mail<" in text and ">Finish<" in text and "terms of service" in text


def test_awaiting_verification_names_the_masked_address(browser, start_attempt):
    browser.hold(start_attempt("awaiting_verification").id)

    _, text = page(browser)

    assert "Wysłaliśmy link weryfikacyjny na adres a***@example.pl" in text
    assert "anna@example.pl" not in text
    assert 'action="/migracja/resend"' in text and 'action="/migracja/change_email"' in text

    _, text = page(browser, language="en")
    assert "We have sent a verification link to a***@example.pl" in text


def test_an_internationalised_domain_is_shown_beside_its_punycode(browser, start_attempt, services):
    # Cyrillic letters that look like "apple.com": the punycode gives the look-alike away.
    attempt = start_attempt("email_entry")
    submit(services, attempt.id, "anna@аррӏе.com")
    browser.hold(attempt.id)

    _, waiting = page(browser)
    services.journey.fire(attempt.id, "change_email", actor=user())
    _, form = page(browser)

    assert "na adres a***@аррӏе.com (xn--80ak6aa92e.com)." in waiting
    assert (
        "Domena аррӏе.com zawiera znaki spoza ASCII (na przykład litery z ogonkami albo z "
        "innych alfabetów); zapisana w ASCII to xn--80ak6aa92e.com." in form
    )
    _, english = page(browser, language="en")
    assert "written in ASCII it is xn--80ak6aa92e.com" in english


def test_a_plain_domain_gets_no_punycode_note(browser, start_attempt):
    browser.hold(start_attempt("email_entry").id)

    _, text = page(browser)

    assert "zawiera znaki spoza ASCII" not in text


def test_awaiting_verification_says_when_the_link_could_not_be_delivered(
    browser, start_attempt, services
):
    attempt = start_attempt("awaiting_verification")
    browser.hold(attempt.id)
    with services.engine.begin() as connection:  # the recipient's server refused it for good
        connection.execute(
            update(OutboxMessage).values(
                failed_at=utcnow(), last_error="recipient refused: 550 5.1.1"
            )
        )

    _, text = page(browser)

    assert (
        "Nie udało się dostarczyć wiadomości z linkiem na adres a***@example.pl: serwer poczty "
        "odbiorcy jej nie przyjął." in text
    )
    assert "Wysłaliśmy link weryfikacyjny" not in text
    assert 'action="/migracja/change_email"' in text

    services.journey.fire(attempt.id, "resend", actor=user())  # a new message, not failed
    _, text = page(browser)
    assert "Wysłaliśmy link weryfikacyjny na adres a***@example.pl" in text
    assert "Nie udało się dostarczyć" not in text


def test_expired_attempt_says_to_log_in_again(browser, start_attempt, services):
    attempt = start_attempt("found", domain_system="GABINET")
    services.journey.fire(attempt.id, "expire", actor=_system())
    browser.hold(attempt.id)

    _, text = page(browser)

    assert "<h1>Migracja wygasła</h1>" in text
    # The start page logs in for the domain system's request, if it still waits.
    assert '<a class="button button-primary" href="/">Zaloguj się ponownie</a>' in text


def test_without_an_attempt_the_migration_page_sends_to_the_start(browser):
    response = browser.get("/migracja")

    assert response.status_code == 302 and response.headers["Location"] == "/"
    _, text = page(browser, "/")
    assert "Zaloguj się, aby rozpocząć lub kontynuować migrację konta." in text


@pytest.mark.parametrize(
    ("url", "polish", "english"),
    [
        ("/czym-jest-ueoz", "Czym jest UEOZ?", "What is UEOZ?"),
        ("/pomoc", "Pomoc", "Help"),
        ("/warunki-korzystania", "Warunki korzystania z serwisu", "Terms of service"),
        ("/polityka-prywatnosci", "Polityka prywatności", "Privacy policy"),
        ("/deklaracja-dostepnosci", "Deklaracja dostępności", "Accessibility statement"),
        ("/mapa-strony", "Mapa strony", "Site map"),
        ("/kontakt", "Skontaktuj się z nami", "Contact us"),
        (
            "/logowanie-login-gov-pl",
            "Logowanie za pośrednictwem login.gov.pl",
            "Logging in through login.gov.pl",
        ),
    ],
)
def test_footer_pages_exist_in_both_languages(browser, url, polish, english):
    response, text = page(browser, url)
    assert response.status_code == 200 and f"<h1>{polish}</h1>" in text
    assert text.count("<h1>") == 1

    _, text = page(browser, url, language="en")
    assert f"<h1>{english}</h1>" in text


def test_the_login_page_links_to_the_instructions_for_an_account_at_the_node(browser):
    _, text = page(browser, "/logowanie-login-gov-pl")
    assert 'href="https://www.gov.pl/web/gov/zaloz-profil-zaufany"' in text
    assert "Instrukcja założenia konta w Węźle Krajowym" in text


def test_the_footer_links_to_the_ministry_and_the_e_health_centre(browser):
    _, text = page(browser, "/")
    assert '<a href="https://www.gov.pl/web/zdrowie" rel="noopener">Ministerstwo Zdrowia' in text
    assert '<a href="https://cez.gov.pl/" rel="noopener">Centrum e-Zdrowia' in text


def test_accessibility_statement_declares_wcag_aa(browser):
    _, text = page(browser, "/deklaracja-dostepnosci")
    assert "WCAG 2.1" in text and "AA" in text and "200%" in text


# Not the defaults (19239, logowanie@cez.gov.pl): a page that wrote those in would fail here.
@pytest.mark.parametrize(
    "settings",
    [{"HELPDESK_PHONE": "225970900", "HELPDESK_EMAIL": "pomoc@cez.gov.pl"}],
    ids=["another-helpdesk"],
    indirect=True,
)
def test_contact_page_shows_the_helpdesk_from_settings(browser):
    _, text = page(browser, "/kontakt")
    assert 'href="tel:225970900">225970900</a>' in text
    assert 'href="mailto:pomoc@cez.gov.pl">pomoc@cez.gov.pl</a>' in text


def test_site_map_lists_every_page(browser):
    _, text = page(browser, "/mapa-strony")

    # Only the map's own links: the footer around it links most of these pages on every page.
    main = lxml_html.fromstring(text).xpath("//main")[0]
    links = [(a.get("href"), " ".join(a.text_content().split())) for a in main.iter("a")]
    assert links == [
        ("/", "Strona główna – Zaloguj się do Systemu"),
        ("/logowanie-login-gov-pl", "Logowanie za pośrednictwem login.gov.pl"),
        ("/migracja", "Migracja konta z e-PLOZ do UEOZ"),
        ("/czym-jest-ueoz", "Czym jest UEOZ?"),
        ("/pomoc", "Pomoc"),
        ("/warunki-korzystania", "Warunki korzystania z serwisu"),
        ("/polityka-prywatnosci", "Polityka prywatności"),
        ("/deklaracja-dostepnosci", "Deklaracja dostępności"),
        ("/kontakt", "Skontaktuj się z nami"),
    ]


def _system():
    from ueoz_migration.journey import Actor

    return Actor.system()


def test_the_account_menu_of_the_manual_holds_the_migration_and_the_logout(browser, start_attempt):
    _, text = page(browser, "/")
    assert "Moje konto" not in text.split("</header>")[0]  # nobody logged in

    browser.hold(start_attempt("email_entry").id)
    _, text = page(browser, "/")
    header = text.split("</header>")[0]

    assert '<details class="account-menu">' in header
    assert "<summary>Moje konto</summary>" in header
    assert '<a href="/migracja">Migracja konta</a>' in header
    assert 'action="/logout"' in header and ">Wyloguj</button>" in header
