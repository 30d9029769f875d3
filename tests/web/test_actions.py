"""The buttons: each fires one event; refusals and bad input show where the person is."""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta

from sqlalchemy import select, update
from structlog.testing import capture_logs

from tests.clock import Clock
from tests.domain_systems import DomainSystem
from tests.factories import HERMEGILDA, count, log_of, user
from ueoz_migration.audit.replay import replay_log
from ueoz_migration.audit.verify import verify_chain
from ueoz_migration.db.models import (
    Attempt,
    EplozAccount,
    OutboxMessage,
    PendingLogin,
    TransitionLogEntry,
    UeozAccount,
)
from ueoz_migration.journey import CHAINED_REFUSALS


def text_of(response):
    return html.unescape(response.get_data(as_text=True))


def submit_form(email="anna@example.pl", repeat=None, terms=True):
    data = {"email": email, "email_repeat": email if repeat is None else repeat}
    if terms:
        data["terms_accepted"] = "y"
    return data


def test_create_account_leads_to_the_email_form(browser, start_attempt, services):
    attempt = start_attempt("found")
    browser.hold(attempt.id)

    response = browser.post("/migracja/create_account")

    assert response.status_code == 200
    assert "<h1>Uzupełnij adres e-mail</h1>" in text_of(response)
    assert "Wysłaliśmy nowy link" not in text_of(response)  # said after a resend only
    assert services.journey.get(attempt.id).state == "email_entry"


def test_every_event_is_logged_with_the_request_id_of_its_page(browser, start_attempt, services):
    attempt = start_attempt("found")
    browser.hold(attempt.id)

    token = browser.token()
    response = browser.client.post("/migracja/create_account", data={"csrf_token": token})

    with services.sessions() as session:
        row = session.scalars(
            select(TransitionLogEntry)
            .where(TransitionLogEntry.attempt_id == attempt.id)
            .order_by(TransitionLogEntry.seq.desc())
        ).first()
    assert (row.event, row.actor) == ("create_account", "user")
    assert row.request_id == response.headers["X-Request-Id"]


def test_continue_new_after_an_error_opens_an_empty_email_form(browser, start_attempt):
    browser.hold(start_attempt("error", person=HERMEGILDA).id)

    text = text_of(browser.post("/migracja/continue_new"))

    assert "<h1>Uzupełnij adres e-mail</h1>" in text and "<dd>HERMEGILDA</dd>" in text


def test_cancel_returns_to_the_start_screen_with_a_notice(browser, start_attempt, services):
    attempt = start_attempt("found")
    browser.hold(attempt.id)

    response = browser.post("/migracja/cancel", follow=False)
    assert response.status_code == 303
    response = browser.get("/migracja", follow_redirects=True)

    text = text_of(response)
    assert response.request.path == "/"
    assert "Przerwano tworzenie konta w UEOZ." in text
    assert "<h1>Zaloguj się do Systemu</h1>" in text
    assert services.journey.get(attempt.id).state == "cancelled"
    assert "Wróć do migracji" not in text


def test_after_cancel_the_account_menu_offers_no_migration_to_go_back_to(browser, start_attempt):
    browser.hold(start_attempt("found").id)
    with browser.client.session_transaction() as session:
        session["sso_session"] = "logged-in-at-the-node"  # still logged in: Wyloguj stays
    assert ">Migracja konta</a>" in text_of(browser.get("/migracja"))

    browser.post("/migracja/cancel")
    text = text_of(browser.get("/"))

    assert "<summary>Moje konto</summary>" in text and ">Wyloguj</button>" in text
    assert ">Migracja konta</a>" not in text


def test_after_cancel_a_new_login_goes_back_to_the_same_domain_system(
    browser, start_attempt, services
):
    p1 = DomainSystem.register(services, "P1", name="Platforma P1")
    browser.get(p1.authorize_url())  # as the domain system sent the person here
    attempt = start_attempt("found", domain_system="P1")
    browser.hold(attempt.id)

    text = text_of(browser.post("/migracja/cancel"))

    assert "Przerwano tworzenie konta w UEOZ." in text
    assert '<a href="/przejdz-do-systemu">Wróć do systemu Platforma P1 bez logowania</a>' in text
    browser.get("/login")  # Zaloguj się przez login.gov.pl
    with services.sessions() as db:
        first, again = db.scalars(select(PendingLogin).order_by(PendingLogin.created_at)).all()
    assert (again.domain_system, again.authorization_id) == ("P1", first.authorization_id)


def test_the_start_page_leads_back_to_a_migration_under_way(browser, start_attempt):
    browser.hold(start_attempt("email_entry").id)

    text = browser.text("/")

    assert "Twoja migracja konta do UEOZ jest w toku." in text
    assert '<a href="/migracja">Wróć do migracji</a>' in text


def test_the_start_page_does_not_offer_a_migration_that_has_ended(browser, start_attempt, services):
    attempt = start_attempt("awaiting_verification")
    services.journey.fire(attempt.id, "change_email", actor=user())
    services.journey.fire(attempt.id, "cancel", actor=user())
    browser.hold(attempt.id)

    assert "Wróć do migracji" not in browser.text("/")


def test_the_email_form_cancels_through_its_own_form(browser, start_attempt, services):
    attempt = start_attempt("email_entry")
    browser.hold(attempt.id)
    text = browser.text("/migracja")

    assert '<button type="submit" class="button button-secondary" form="cancel-form">Anuluj' in text
    assert '<form id="cancel-form" method="post" action="/migracja/cancel">' in text


def test_submit_creates_the_account_and_shows_the_masked_address(browser, start_attempt, services):
    attempt = start_attempt("email_entry")
    browser.hold(attempt.id)

    text = text_of(browser.post("/migracja/submit", submit_form("nowy.adres@example.pl")))

    assert "Wysłaliśmy link weryfikacyjny na adres n***@example.pl" in text
    assert services.journey.get(attempt.id).state == "awaiting_verification"
    assert count(services, UeozAccount) == 1


def test_validation_messages_stand_next_to_their_fields(browser, start_attempt, services):
    attempt = start_attempt("email_entry")
    browser.hold(attempt.id)

    response = browser.post("/migracja/submit", {"email": "", "email_repeat": ""})

    text = text_of(response)
    # Shown again after a redirect: Back, once the form went through, asks no resubmission.
    assert response.request.path == "/migracja" and response.status_code == 200
    assert "<title>Błąd: Uzupełnij adres e-mail" in text
    assert '<p class="field-error" id="email-error">' in text
    assert "Podaj adres e-mail." in text and "Powtórz adres e-mail." in text
    assert "Zaakceptuj warunki korzystania z serwisu." in text
    assert 'aria-describedby="email-error"' in text and 'aria-invalid="true"' in text
    assert 'aria-describedby="terms_accepted-error"' in text
    assert services.journey.get(attempt.id).state == "email_entry"
    assert count(services, UeozAccount) == 0


def test_a_refused_form_is_shown_again_once_and_a_reload_brings_the_form_as_it_stands(
    browser, start_attempt
):
    browser.hold(start_attempt("email_entry").id)

    refused = browser.post(
        "/migracja/submit", {"email": "nowak@", "email_repeat": "x"}, follow=False
    )
    first = text_of(browser.get("/migracja"))
    again = text_of(browser.get("/migracja"))

    assert (refused.status_code, refused.headers["Location"]) == (303, "/migracja")
    assert 'value="nowak@"' in first and "Podaj poprawny adres e-mail" in first
    assert "Podaj poprawny adres e-mail" not in again  # the errors were for that one page


def test_an_invalid_address_and_differing_addresses_are_named(browser, start_attempt):
    browser.hold(start_attempt("email_entry").id)

    text = text_of(browser.post("/migracja/submit", submit_form("not-an-address")))
    assert "Podaj poprawny adres e-mail" in text

    text = text_of(browser.post("/migracja/submit", submit_form("a@example.pl", "b@example.pl")))
    assert "Adresy e-mail różnią się. Wpisz ten sam adres dwa razy." in text
    assert 'value="a@example.pl"' in text and 'value="b@example.pl"' in text


def test_terms_not_accepted_is_refused(browser, start_attempt, services):
    attempt = start_attempt("email_entry")
    browser.hold(attempt.id)

    text = text_of(browser.post("/migracja/submit", submit_form(terms=False)))

    assert "Zaakceptuj warunki korzystania z serwisu." in text
    assert services.journey.get(attempt.id).state == "email_entry"


def test_an_eploz_account_changed_since_the_search_is_not_migrated(
    browser, start_attempt, services
):
    attempt = start_attempt("email_entry")
    browser.hold(attempt.id)
    with services.sessions() as session, session.begin():
        session.execute(update(EplozAccount).values(status="blocked"))  # a later import

    text = text_of(browser.post("/migracja/submit", submit_form()))

    assert "Dane Twojego konta e-PLOZ zmieniły się w trakcie migracji." in text
    assert "<h1>Uzupełnij adres e-mail</h1>" in text
    assert count(services, UeozAccount) == 0


def test_validation_messages_in_english(browser, start_attempt):
    browser.hold(start_attempt("email_entry").id)
    browser.language("en")

    text = text_of(browser.post("/migracja/submit", submit_form("a@example.pl", "b@example.pl")))

    assert "The e-mail addresses differ. Enter the same address twice." in text


def test_after_a_refused_form_the_language_switch_leads_back_to_the_migration(
    browser, start_attempt
):
    browser.hold(start_attempt("email_entry").id)

    text = text_of(browser.post("/migracja/submit", submit_form("a@example.pl", "b@example.pl")))

    assert '<div class="error-summary" role="alert" tabindex="-1" autofocus>' in text
    switch = re.search(r'href="(/jezyk/en\?[^"]+)"', text).group(1)
    assert switch == "/jezyk/en?next=/migracja"
    english = text_of(browser.get(switch, follow_redirects=True))
    assert "<h1>Complete your e-mail address</h1>" in english


def test_email_form_add_domain_errors_puts_the_refusal_on_the_fields(browser):
    """The submission's rules are the journey's; its reasons stand beside the fields."""
    from ueoz_migration.web.forms import EmailForm

    app = browser.client.application
    with app.test_request_context("/migracja/submit", method="POST", data={}):
        form = EmailForm()
        form.add_domain_errors({"email": "invalid", "email_repeat": "mismatch"})
        assert [str(m) for m in form.email.errors] == [
            "Podaj poprawny adres e-mail, np. jan.kowalski@example.pl."
        ]
        assert [str(m) for m in form.email_repeat.errors] == [
            "Adresy e-mail różnią się. Wpisz ten sam adres dwa razy."
        ]


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    browser, start_attempt, services
):
    attempt = start_attempt("found")
    browser.hold(attempt.id)

    response = browser.client.post("/migracja/create_account", data={})

    assert response.status_code == 400
    text = text_of(response)
    assert "<h1>Formularz wygasł</h1>" in text and "Nic nie zostało zmienione." in text
    assert "Traceback" not in text
    assert services.journey.get(attempt.id).state == "found"


def test_a_forged_csrf_token_is_refused(browser, start_attempt, services):
    attempt = start_attempt("found")
    browser.hold(attempt.id)

    response = browser.post("/migracja/create_account", token="forged", follow=False)

    assert response.status_code == 400
    assert services.journey.get(attempt.id).state == "found"


def test_double_submit_makes_one_account_and_shows_the_current_screen(
    browser, start_attempt, services
):
    attempt = start_attempt("email_entry")
    browser.hold(attempt.id)
    token = browser.token()

    first = browser.post("/migracja/submit", submit_form(), token=token)
    second = browser.post("/migracja/submit", submit_form(), token=token)

    assert "Wysłaliśmy link weryfikacyjny" in text_of(first)
    text = text_of(second)
    assert second.status_code == 200
    assert "Tego kroku nie można już wykonać" in text
    assert "Wysłaliśmy link weryfikacyjny na adres a***@example.pl" in text
    assert count(services, UeozAccount) == 1
    assert count(services, OutboxMessage) == 1
    refused = count(
        services,
        TransitionLogEntry,
        TransitionLogEntry.attempt_id == attempt.id,
        TransitionLogEntry.outcome == "refused",
    )
    assert refused == 1


def test_a_button_from_an_old_tab_shows_the_current_screen(browser, start_attempt):
    browser.hold(start_attempt("email_entry").id)

    text = text_of(browser.post("/migracja/create_account"))

    assert "Tego kroku nie można już wykonać" in text
    assert "<h1>Uzupełnij adres e-mail</h1>" in text


def email_entry_past_its_time(browser, start_attempt, services):
    """An attempt at the e-mail form, held by the browser, left alone for over 72 hours."""
    attempt = start_attempt("email_entry")
    browser.hold(attempt.id)
    with services.sessions.begin() as session:
        session.execute(
            update(Attempt)
            .where(Attempt.id == attempt.id)
            .values(expires_at=services.journey.clock() - timedelta(minutes=1))
        )
    return attempt


def test_a_click_after_the_migration_ran_out_of_time_shows_it_expired(
    browser, start_attempt, services
):
    # 72 h without a step, and the sweep has not come by: Zakończ ends it instead.
    attempt = email_entry_past_its_time(browser, start_attempt, services)

    response = browser.post("/migracja/submit", data=submit_form())

    text = text_of(response)
    assert "<h1>Migracja wygasła</h1>" in text
    assert "Tego kroku nie można już wykonać" not in text  # no double click to suspect
    assert count(services, UeozAccount) == 0 and count(services, OutboxMessage) == 0
    assert [(row.event, row.outcome) for row in log_of(services, attempt.id)][-2:] == [
        ("expire", "applied"),
        ("submit", "refused"),
    ]


def test_a_page_refusal_after_the_migration_ran_out_of_time_shows_it_expired(
    browser, start_attempt, services
):
    # A post the page itself turns down (here the worker's own event) finds it stale too.
    attempt = email_entry_past_its_time(browser, start_attempt, services)

    response = browser.post("/migracja/expire")

    assert "<h1>Migracja wygasła</h1>" in text_of(response)
    assert [(row.event, row.outcome) for row in log_of(services, attempt.id)][-2:] == [
        ("expire", "applied"),
        ("expire", "refused"),
    ]
    with services.sessions() as session:
        assert replay_log(session, [attempt.id]).ok


def test_resend_and_its_limit(browser, start_attempt, services):
    attempt = start_attempt("awaiting_verification")
    browser.hold(attempt.id)

    for _ in range(services.settings.resend_limit_per_hour - 1):
        text = text_of(browser.post("/migracja/resend"))
        assert "Tego kroku" not in text and "Wysłaliśmy już kilka linków" not in text
    text = text_of(browser.post("/migracja/resend"))

    assert "Wysłaliśmy już kilka linków w ciągu ostatniej godziny." in text
    assert count(services, OutboxMessage) == services.settings.resend_limit_per_hour


def test_a_resend_says_that_a_new_link_is_on_its_way(browser, start_attempt, services):
    browser.hold(start_attempt("awaiting_verification").id)

    text = text_of(browser.post("/migracja/resend"))

    assert "Wysłaliśmy nowy link weryfikacyjny. Poprzednie linki przestały działać." in text
    assert count(services, OutboxMessage) == 2


def test_changing_the_address_again_and_again_does_not_get_round_the_limit(
    browser, start_attempt, services
):
    # Otherwise "change the address, give the same one again" would mail a link to any
    # mailbox as often as someone clicks.
    attempt = start_attempt("awaiting_verification")  # the first link
    browser.hold(attempt.id)
    form = {
        "email": "victim@example.pl",
        "email_repeat": "victim@example.pl",
        "terms_accepted": "y",
    }

    limit = services.settings.resend_limit_per_hour
    for _ in range(limit):
        browser.post("/migracja/change_email")
        text = text_of(browser.post("/migracja/submit", form))
        assert "<h1>Weryfikacja adresu e-mail</h1>" in text
    browser.post("/migracja/change_email")
    response = browser.post("/migracja/submit", form)
    text = text_of(response)

    assert response.request.path == "/migracja"
    assert "Wysłaliśmy już kilka linków w ciągu ostatniej godziny." in text
    assert "<h1>Uzupełnij adres e-mail</h1>" in text
    assert 'value="victim@example.pl"' in text  # what was typed, to correct it
    assert services.journey.get(attempt.id).state == "email_entry"
    assert count(services, OutboxMessage) == 1 + limit  # the first link, to another address


def test_an_address_that_reached_the_limit_can_still_be_corrected(browser, start_attempt, services):
    # Links asked for a mistyped address count against that address, not the next one.
    attempt = start_attempt("awaiting_verification")  # the first link, to anna@example.pl
    browser.hold(attempt.id)
    for _ in range(services.settings.resend_limit_per_hour - 1):
        browser.post("/migracja/resend")
    assert "Wysłaliśmy już kilka linków" in text_of(browser.post("/migracja/resend"))

    browser.post("/migracja/change_email")
    text = text_of(browser.post("/migracja/submit", submit_form("anna.nowa@example.pl")))

    assert "<h1>Weryfikacja adresu e-mail</h1>" in text
    assert services.journey.get(attempt.id).email == "anna.nowa@example.pl"


def test_the_letter_case_of_an_address_does_not_get_round_the_limit(
    browser, start_attempt, services
):
    # Żaneta@ and żANETA@ reach one mailbox: they share its count (letters beyond ASCII too,
    # which SQL's lower() leaves alone on SQLite).
    attempt = start_attempt("awaiting_verification")
    browser.hold(attempt.id)
    limit = services.settings.resend_limit_per_hour
    spellings = ["żaneta@example.pl", "Żaneta@example.pl", "żANETA@Example.PL", "ZANETA@x.pl"]
    for address in spellings[:limit]:
        browser.post("/migracja/change_email")
        assert "Weryfikacja adresu" in text_of(
            browser.post("/migracja/submit", submit_form(address))
        )

    browser.post("/migracja/change_email")
    text = text_of(browser.post("/migracja/submit", submit_form("ŻANETA@EXAMPLE.PL")))

    assert "Wysłaliśmy już kilka linków w ciągu ostatniej godziny." in text
    assert count(services, OutboxMessage) == 1 + limit


def test_new_addresses_cannot_be_tried_without_end(browser, start_attempt, services):
    # Each address has its own count, and the attempt twice the limit in all.
    attempt = start_attempt("awaiting_verification")  # link 1, to anna@example.pl
    browser.hold(attempt.id)
    limit = services.settings.resend_limit_per_hour
    for number in range(2 * limit - 1):
        browser.post("/migracja/change_email")
        text = text_of(browser.post("/migracja/submit", submit_form(f"p{number}@example.pl")))
        assert "Weryfikacja adresu" in text

    browser.post("/migracja/change_email")
    text = text_of(browser.post("/migracja/submit", submit_form("one.more@example.pl")))

    assert "Wysłaliśmy już kilka linków w ciągu ostatniej godziny." in text
    assert count(services, OutboxMessage) == 2 * limit


def test_change_email_goes_back_to_the_form(browser, start_attempt, services):
    attempt = start_attempt("awaiting_verification")
    browser.hold(attempt.id)

    text = text_of(browser.post("/migracja/change_email"))

    assert "<h1>Uzupełnij adres e-mail</h1>" in text
    assert services.journey.get(attempt.id).state == "email_entry"
    # The address to correct is the one given last, not e-PLOZ's again.
    assert text.count('value="anna@example.pl"') == 2
    assert 'value="amicsokol@csioz.pl"' not in text
    assert "Link wyślemy na nowy adres; link z poprzedniej wiadomości już nie działa." in text
    # Keeping the address is one click; Anuluj is said to end the whole migration.
    assert "Aby zostać przy dotychczasowym adresie, zaakceptuj warunki i wybierz Zakończ" in text
    assert "Anuluj przerywa całą migrację" in text


def test_only_the_persons_events_can_be_fired(browser, start_attempt, services):
    attempt = start_attempt("searching")
    browser.hold(attempt.id)

    text = text_of(browser.post("/migracja/account_found", {"eploz_account_id": "1"}))

    assert "Tego kroku nie można już wykonać" in text  # and the screen where it stands
    assert services.journey.get(attempt.id).state == "searching"
    *_, last = log_of(services, attempt.id)
    assert (last.event, last.outcome, last.actor) == ("account_found", "rejected", "user")
    assert json.loads(last.detail) == {"reason": "not_a_user_event"}
    assert browser.post("/migracja/no_such_event", follow=False).status_code == 404


def test_a_worker_event_posted_by_a_person_leaves_a_log_that_replays(
    browser, start_attempt, services
):
    # The flow takes "expire" in "found": a person's post of it is the page's refusal,
    # which replay must read as such, not as a divergence from the flow.
    attempt = start_attempt("found")
    browser.hold(attempt.id)

    browser.post("/migracja/expire")
    browser.post("/migracja/verify")  # one the flow refuses in "found"

    assert services.journey.get(attempt.id).state == "found"
    *_, expire, verify = log_of(services, attempt.id)
    assert (expire.event, expire.outcome) == ("expire", "rejected")
    assert (verify.event, verify.outcome) == ("verify", "refused")
    with services.sessions() as session:
        report = replay_log(session, [attempt.id])
    assert report.ok, report


def test_a_form_the_page_refuses_is_in_the_log_as_a_rejected_submit(
    browser, start_attempt, services
):
    attempt = start_attempt("new:email_entry")
    browser.hold(attempt.id)
    form = {"email": "anna@example.pl", "email_repeat": "anna@exampel.pl", "terms_accepted": "y"}

    response = browser.post("/migracja/submit", form)

    assert "Adresy e-mail różnią się." in text_of(response)
    assert services.journey.get(attempt.id).state == "email_entry"
    *_, last = log_of(services, attempt.id)
    assert (last.event, last.outcome) == ("submit", "rejected")
    assert json.loads(last.detail) == {"reason": "invalid_submission"}
    assert "anna@" not in last.detail


def test_a_button_after_the_session_lost_its_attempt_leads_to_the_start(browser, start_attempt):
    browser.hold(start_attempt("found").id)
    token = browser.token()
    with browser.client.session_transaction() as session:
        del session["attempt_id"]

    response = browser.post("/migracja/create_account", token=token)

    assert response.request.path == "/"
    assert "Twoja sesja wygasła. Zaloguj się ponownie, aby kontynuować." in text_of(response)


def test_an_hour_after_the_limit_the_link_can_be_sent_again(browser, start_attempt, services):
    # The notice says "spróbuj ponownie za godzinę": an hour later the button works again.
    clock = Clock()
    services.journey.clock = clock
    attempt = start_attempt("awaiting_verification")  # the first link
    browser.hold(attempt.id)
    limit = services.settings.resend_limit_per_hour
    for _ in range(limit - 1):
        browser.post("/migracja/resend")
    assert "Wysłaliśmy już kilka linków" in text_of(browser.post("/migracja/resend"))

    clock.advance(hours=1)
    text = text_of(browser.post("/migracja/resend"))

    assert "Wysłaliśmy już kilka linków" not in text
    assert "Wysłaliśmy link weryfikacyjny na adres a***@example.pl" in text
    assert count(services, OutboxMessage) == limit + 1


def test_a_refused_event_posted_again_and_again_stops_growing_the_chain(
    browser, start_attempt, services
):
    # A finished attempt: every button of it is refused, however often it is posted.
    attempt = start_attempt("error")
    browser.hold(attempt.id)
    token = browser.token()
    browser.post("/migracja/cancel", token=token, follow=False)
    rows_before = len(log_of(services, attempt.id))

    with capture_logs() as lines:
        for _ in range(CHAINED_REFUSALS + 20):
            response = browser.post("/migracja/create_account", token=token, follow=False)
            assert response.status_code == 303  # back to where the attempt stands

    log = log_of(services, attempt.id)
    assert len(log) == rows_before + CHAINED_REFUSALS
    assert [row.outcome for row in log[rows_before:]] == ["refused"] * CHAINED_REFUSALS
    refused = [line for line in lines if line["event"] == "attempt.event_refused"]
    assert [line["chained"] for line in refused] == [True] * CHAINED_REFUSALS + [False] * 20
    assert services.journey.get(attempt.id).state == "cancelled"
    with services.sessions() as session:
        assert replay_log(session, [attempt.id]).ok
        assert verify_chain(session, services.settings.audit_key, [attempt.id]).ok


def test_an_address_with_more_than_64_characters_before_the_at_is_refused_beside_the_field(
    browser, start_attempt, services
):
    attempt = start_attempt("email_entry")
    browser.hold(attempt.id)

    text = text_of(browser.post("/migracja/submit", submit_form("a" * 65 + "@example.pl")))

    assert "Część adresu e-mail przed znakiem @ może mieć najwyżej 64 znaki." in text
    assert '<p class="field-error" id="email-error">' in text
    assert services.journey.get(attempt.id).state == "email_entry"
    assert count(services, UeozAccount) == 0

    browser.language("en")
    text = text_of(browser.post("/migracja/submit", submit_form("b" * 65 + "@example.pl")))
    assert "The part of the e-mail address before the @ sign can be at most 64 characters" in text

    browser.post("/migracja/submit", submit_form("a" * 64 + "@example.pl"))
    assert services.journey.get(attempt.id).state == "awaiting_verification"
