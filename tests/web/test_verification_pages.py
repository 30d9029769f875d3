"""The e-mail's link: done, expired (with one-click resend), used, retired, unknown."""

from __future__ import annotations

import html
import re
from datetime import timedelta

from sqlalchemy import select, update

from tests.domain_systems import DomainSystem
from tests.factories import link_token, log_of, submit
from ueoz_migration.db.engine import transaction
from ueoz_migration.db.models import OutboxMessage, UeozAccount, VerificationLink
from ueoz_migration.journey import utcnow


def text_of(response):
    return html.unescape(response.get_data(as_text=True))


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def open_link(client, token):
    """Open the link in a browser that does not run the attempt: its confirm page, then the
    button, as the person would."""
    page = client.get(f"/weryfikacja/{token}")
    assert page.status_code == 200 and f'action="/weryfikacja/{token}"' in text_of(page)
    csrf = CSRF.search(text_of(page)).group(1)
    return client.post(f"/weryfikacja/{token}", data={"csrf_token": csrf})


def test_the_link_completes_the_migration_in_a_fresh_browser(client, start_attempt, services):
    DomainSystem.register(services, "P1")
    attempt = start_attempt("awaiting_verification", domain_system="P1")
    token = link_token(services, attempt.id)

    response = open_link(client, token)

    text = text_of(response)
    assert response.status_code == 200
    assert (
        "Twoje konto UEOZ zostało utworzone, a adres e-mail zweryfikowany. Od tej pory możesz "
        "logować się do systemu dziedzinowego wyłącznie za pomocą Węzła Krajowego." in text
    )
    assert 'href="/przejdz-do-systemu">Przejdź do systemu dziedzinowego</a>' in text
    assert services.journey.get(attempt.id).state == "done"
    with services.sessions() as session:
        assert session.scalar(select(UeozAccount.email_verified_at)) is not None
    # The browser that opened the link now holds the attempt: /migracja shows it done.
    assert "zweryfikowany" in text_of(client.get("/migracja"))


def test_the_done_screen_in_english(client, start_attempt, services):
    attempt = start_attempt("awaiting_verification")
    client.get("/jezyk/en")

    text = text_of(open_link(client, link_token(services, attempt.id)))

    assert "Your UEOZ account has been created and your e-mail address verified." in text


def test_a_link_opened_in_a_fresh_browser_speaks_the_migrations_language(
    client, start_attempt, services
):
    attempt = start_attempt("awaiting_verification", language="en")  # its e-mail was English
    token = link_token(services, attempt.id)

    done = text_of(open_link(client, token))
    used = text_of(client.get(f"/weryfikacja/{token}"))

    assert "Your UEOZ account has been created and your e-mail address verified." in done
    assert '<html lang="en">' in used


def test_a_language_chosen_in_the_browser_wins_over_the_migrations(client, start_attempt, services):
    attempt = start_attempt("awaiting_verification", language="en")
    client.get("/jezyk/pl")

    text = text_of(open_link(client, link_token(services, attempt.id)))

    assert "Twoje konto UEOZ zostało utworzone" in text


def test_a_used_link_says_so_and_lets_the_person_continue(client, start_attempt, services):
    DomainSystem.register(services, "P1")
    attempt = start_attempt("awaiting_verification", domain_system="P1")
    token = link_token(services, attempt.id)
    open_link(client, token)

    response = client.get(f"/weryfikacja/{token}")

    text = text_of(response)
    assert response.status_code == 410
    assert "<h1>Link został już użyty</h1>" in text
    assert "Twój adres e-mail jest już zweryfikowany" in text
    assert 'href="/przejdz-do-systemu">Przejdź do systemu dziedzinowego</a>' in text


def test_an_expired_link_offers_a_one_click_resend(client, start_attempt, services):
    attempt = start_attempt("awaiting_verification")
    token = link_token(services, attempt.id)
    with transaction(services.sessions) as session:
        session.execute(update(VerificationLink).values(expires_at=utcnow() - timedelta(minutes=1)))

    response = client.get(f"/weryfikacja/{token}")

    text = text_of(response)
    assert response.status_code == 410
    assert "<h1>Link weryfikacyjny wygasł</h1>" in text
    assert f'action="/weryfikacja/{token}/resend"' in text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', text).group(1)

    response = client.post(f"/weryfikacja/{token}/resend", data={"csrf_token": csrf})

    text = text_of(response)
    assert "Nowy link weryfikacyjny jest w drodze na adres a***@example.pl" in text
    assert "anna@example.pl" not in text
    new_token = link_token(services, attempt.id)
    assert new_token != token
    assert client.get(f"/weryfikacja/{new_token}").status_code == 200


def test_a_link_resent_from_an_english_page_comes_in_english(client, start_attempt, services):
    attempt = start_attempt("awaiting_verification")  # the first e-mail, in Polish
    token = link_token(services, attempt.id)
    with transaction(services.sessions) as session:
        session.execute(update(VerificationLink).values(expires_at=utcnow() - timedelta(minutes=1)))
    client.get("/jezyk/en")
    page = text_of(client.get(f"/weryfikacja/{token}"))
    assert "The verification link has expired" in page
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)

    client.post(f"/weryfikacja/{token}/resend", data={"csrf_token": csrf})

    with services.sessions() as session:
        subject = session.scalars(
            select(OutboxMessage.subject).order_by(OutboxMessage.id.desc())
        ).first()
    assert subject == "UEOZ – confirm your e-mail address"


def test_a_retired_link_points_to_the_newest_message(client, start_attempt, services):
    attempt = start_attempt("awaiting_verification")
    old = link_token(services, attempt.id)
    services.journey.fire(attempt.id, "resend", actor=_user())

    response = client.get(f"/weryfikacja/{old}")

    assert response.status_code == 410
    assert "<h1>Ten link nie jest już ważny</h1>" in text_of(response)
    assert services.journey.get(attempt.id).state == "awaiting_verification"


def test_a_superseded_link_whose_successor_expired_too_offers_the_resend(
    client, start_attempt, services
):
    attempt = start_attempt("awaiting_verification")
    old = link_token(services, attempt.id)
    services.journey.fire(attempt.id, "resend", actor=_user())
    with transaction(services.sessions) as session:  # days later: every link has expired
        session.execute(update(VerificationLink).values(expires_at=utcnow() - timedelta(days=1)))

    text = text_of(client.get(f"/weryfikacja/{old}"))

    assert "<h1>Ten link nie jest już ważny</h1>" in text
    assert "albo jej link też wygasł, wyślemy nowy link" in text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', text).group(1)
    text = text_of(client.post(f"/weryfikacja/{old}/resend", data={"csrf_token": csrf}))
    assert "Nowy link weryfikacyjny jest w drodze na adres a***@example.pl" in text
    assert client.get(f"/weryfikacja/{link_token(services, attempt.id)}").status_code == 200


def test_a_link_opened_while_the_address_is_being_changed_says_why_it_died(
    client, start_attempt, services
):
    attempt = start_attempt("awaiting_verification")
    old = link_token(services, attempt.id)
    services.journey.fire(attempt.id, "change_email", actor=_user())  # no address given yet

    text = text_of(client.get(f"/weryfikacja/{old}"))

    assert "<h1>Ten link nie jest już ważny</h1>" in text
    assert "Ten link przestał działać, gdy wybrano „Zmień adres e-mail”." in text
    # Not "a newer link was sent or the address changed": neither happened.
    assert "wysłaliśmy nowszy" not in text
    # The person is giving a new address: no link to send until they have.
    assert "/resend" not in text


def test_a_link_for_an_address_since_changed_is_retired(client, start_attempt, services):
    attempt = start_attempt("awaiting_verification")
    old = link_token(services, attempt.id)
    services.journey.fire(attempt.id, "change_email", actor=_user())
    submit(services, attempt.id, "anna.k@example.pl")

    text = text_of(client.get(f"/weryfikacja/{old}"))

    assert "adres e-mail został zmieniony" in text
    assert "/resend" not in text  # a link to the old address asks for none to the new one


def test_a_link_to_a_mistyped_address_cannot_ask_for_links_after_the_correction(
    client, start_attempt, services
):
    # Whoever got the mail at the mistyped address must not learn where the new links go,
    # nor retire the person's live link.
    attempt = start_attempt("awaiting_verification")
    stray = link_token(services, attempt.id)
    with transaction(services.sessions) as session:  # its holder opens it a day later
        session.execute(update(VerificationLink).values(expires_at=utcnow() - timedelta(hours=1)))
    expired_page = text_of(client.get(f"/weryfikacja/{stray}"))
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', expired_page).group(1)
    services.journey.fire(attempt.id, "change_email", actor=_user())  # the person corrects it
    submit(services, attempt.id, "anna.k@example.pl")
    live = link_token(services, attempt.id)
    page = text_of(client.get(f"/weryfikacja/{stray}"))
    assert "<h1>Ten link nie jest już ważny</h1>" in page and "/resend" not in page

    response = client.post(f"/weryfikacja/{stray}/resend", data={"csrf_token": csrf})

    text = text_of(response)
    assert response.status_code == 410
    assert "<h1>Ten link nie jest już ważny</h1>" in text
    assert "a***@example.pl" not in text
    assert link_token(services, attempt.id) == live
    *_, last = log_of(services, attempt.id)
    assert (last.event, last.outcome, last.detail) == (
        "resend",
        "rejected",
        '{"reason": "link_retired"}',
    )
    assert client.get(f"/weryfikacja/{live}").status_code == 200


def test_an_unknown_link_is_a_clear_page(client, services):
    response = client.get("/weryfikacja/not-a-real-token")

    text = text_of(response)
    assert response.status_code == 404
    assert "<h1>Nieprawidłowy link weryfikacyjny</h1>" in text
    assert "Traceback" not in text


def test_the_link_of_a_cancelled_migration_says_it_ended(client, start_attempt, services):
    attempt = start_attempt("awaiting_verification", domain_system="P1")
    token = link_token(services, attempt.id)
    services.journey.fire(attempt.id, "expire", actor=_user())

    text = text_of(client.get(f"/weryfikacja/{token}"))

    assert "została zakończona (anulowana albo wygasła)" in text
    assert '<a href="/">Przejdź do strony głównej</a>' in text


def _user():
    from tests.factories import user

    return user()


# -- one click for the person's browser, a confirm button for any other client -------------


def link_state(services, attempt_id):
    """What a verification could change: the attempt's state, its log, the account, the link."""
    with services.sessions() as session:
        return (
            services.journey.get(attempt_id).state,
            [(row.event, row.outcome) for row in log_of(services, attempt_id)],
            session.scalar(select(UeozAccount.email_verified_at)),
            session.scalars(select(VerificationLink.used_at)).all(),
        )


def test_the_browser_running_the_attempt_verifies_with_one_click(browser, start_attempt, services):
    attempt = start_attempt("awaiting_verification")
    browser.hold(attempt.id)

    response = browser.get(f"/weryfikacja/{link_token(services, attempt.id)}")

    assert response.status_code == 200
    assert "Twoje konto UEOZ zostało utworzone, a adres e-mail zweryfikowany" in text_of(response)
    assert services.journey.get(attempt.id).state == "done"


def test_another_browser_gets_a_confirm_button_and_nothing_is_verified_before_it(
    client, start_attempt, services
):
    attempt = start_attempt("awaiting_verification")
    token = link_token(services, attempt.id)
    before = link_state(services, attempt.id)

    page = client.get(f"/weryfikacja/{token}")

    text = text_of(page)
    assert page.status_code == 200
    assert "<h1>Potwierdź adres e-mail</h1>" in text
    assert "potwierdź, że adres a***@example.pl jest Twój" in text
    assert "anna@example.pl" not in text
    assert f'<form method="post" action="/weryfikacja/{token}">' in text
    assert '<button type="submit" class="button button-primary">Potwierdź adres e-mail' in text
    assert link_state(services, attempt.id) == before

    done = client.post(f"/weryfikacja/{token}", data={"csrf_token": CSRF.search(text).group(1)})

    assert "adres e-mail zweryfikowany" in text_of(done)
    assert services.journey.get(attempt.id).state == "done"


def test_the_confirm_page_speaks_the_migrations_language(client, start_attempt, services):
    attempt = start_attempt("awaiting_verification", language="en")

    text = text_of(client.get(f"/weryfikacja/{link_token(services, attempt.id)}"))

    assert "<h1>Confirm your e-mail address</h1>" in text
    assert "confirm that the address a***@example.pl is yours" in text
    assert ">Confirm your e-mail address</button>" in text


def test_the_confirm_button_without_its_csrf_token_verifies_nothing(
    client, start_attempt, services
):
    attempt = start_attempt("awaiting_verification")
    token = link_token(services, attempt.id)
    client.get(f"/weryfikacja/{token}")
    before = link_state(services, attempt.id)

    response = client.post(f"/weryfikacja/{token}")

    assert response.status_code == 400
    assert link_state(services, attempt.id) == before


def test_a_prefetch_by_a_client_without_cookies_verifies_nothing(
    app, browser, start_attempt, services
):
    # A mail gateway or link scanner fetching the link before the person reads the e-mail.
    attempt = start_attempt("awaiting_verification")
    token = link_token(services, attempt.id)
    gateway = app.test_client(use_cookies=False)
    before = link_state(services, attempt.id)

    fetched = [gateway.get(f"/weryfikacja/{token}") for _ in range(3)]

    assert {response.status_code for response in fetched} == {200}
    assert link_state(services, attempt.id) == before
    # The link still works for the person, in one click in their own browser.
    browser.hold(attempt.id)
    assert "zweryfikowany" in text_of(browser.get(f"/weryfikacja/{token}"))


def test_a_prefetch_of_an_expired_link_shows_its_page_and_logs_nothing(
    app, start_attempt, services
):
    attempt = start_attempt("awaiting_verification")
    token = link_token(services, attempt.id)
    with transaction(services.sessions) as session:
        session.execute(update(VerificationLink).values(expires_at=utcnow() - timedelta(minutes=1)))
    before = link_state(services, attempt.id)

    response = app.test_client(use_cookies=False).get(f"/weryfikacja/{token}")

    assert response.status_code == 410
    assert "<h1>Link weryfikacyjny wygasł</h1>" in text_of(response)
    assert link_state(services, attempt.id) == before
