"""The forms of the journey; every one carries a CSRF token (flask-wtf)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField

# The domain's reasons (EventRefused.fields) in the words the page shows beside a field.
FIELD_MESSAGES = {
    ("email", "required"): _l("Podaj adres e-mail."),
    ("email", "invalid"): _l("Podaj poprawny adres e-mail, np. jan.kowalski@example.pl."),
    ("email", "local_part_too_long"): _l(
        "Część adresu e-mail przed znakiem @ może mieć najwyżej 64 znaki."
    ),
    ("email_repeat", "required"): _l("Powtórz adres e-mail."),
    ("email_repeat", "mismatch"): _l("Adresy e-mail różnią się. Wpisz ten sam adres dwa razy."),
    ("terms_accepted", "required"): _l("Zaakceptuj warunki korzystania z serwisu."),
}


class EmailForm(FlaskForm):
    """``email_entry``: the address of the new UEOZ account, twice, and the terms.

    The submission's rules are the journey's (``EmailEntry.check_submission``), checked
    once, there; the form carries the fields and shows the journey's reasons beside them.
    """

    email = EmailField(_l("E-mail"))
    email_repeat = EmailField(_l("Powtórz e-mail"))
    terms_accepted = BooleanField()

    def add_domain_errors(self, fields: dict[str, str]) -> None:
        """Show the reasons the journey gave for refusing the submission beside their fields."""
        for name, reason in fields.items():
            field = getattr(self, name, None)
            message = FIELD_MESSAGES.get((name, reason))
            if field is not None and message is not None:
                field.errors = [*field.errors, message]
