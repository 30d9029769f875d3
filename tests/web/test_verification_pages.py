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


def test_the_link_completes_the_migration_in_a_fresh_browser(client, start_attempt, services):
    DomainSystem.register(services, "P1")
    attempt = start_attempt("awaiting_verification", domain_system="P1")
    token = link_token(services, attempt.id)

    response = client.get(f"/weryfikacja/{token}")

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

    text = text_of(client.get(f"/weryfikacja/{link_token(services, attempt.id)}"))

    assert "Your UEOZ account has been created and your e-mail address verified." in text


def test_a_link_opened_in_a_fresh_browser_speaks_the_migrations_language(
    client, start_attempt, services
):
    attempt = start_attempt("awaiting_verification", language="en")  # its e-mail was English
    token = link_token(services, attempt.id)

    done = text_of(client.get(f"/weryfikacja/{token}"))
    used = text_of(client.get(f"/weryfikacja/{token}"))

    assert "Your UEOZ account has been created and your e-mail address verified." in done
    assert '<html lang="en">' in used


def test_a_language_chosen_in_the_browser_wins_over_the_migrations(client, start_attempt, services):
    attempt = start_attempt("awaiting_verification", language="en")
    client.get("/jezyk/pl")

    text = text_of(client.get(f"/weryfikacja/{link_token(services, attempt.id)}"))

    assert "Twoje konto UEOZ zostało utworzone" in text


def test_a_used_link_says_so_and_lets_the_person_continue(client, start_attempt, services):
    DomainSystem.register(services, "P1")
    attempt = start_attempt("awaiting_verification", domain_system="P1")
    token = link_token(services, attempt.id)
    client.get(f"/weryfikacja/{token}")

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
