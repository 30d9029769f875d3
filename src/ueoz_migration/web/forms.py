"""The forms of the journey; every one carries a CSRF token (flask-wtf)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, Field
from wtforms.validators import DataRequired, Email, ValidationError

from ..states.email_entry import normalized_email

# The domain's reasons (EventRefused.fields) in the words the page shows beside a field.
FIELD_MESSAGES = {
    ("email", "required"): _l("Podaj adres e-mail."),
    ("email", "invalid"): _l("Podaj poprawny adres e-mail, np. jan.kowalski@example.pl."),
    ("email_repeat", "required"): _l("Powtórz adres e-mail."),
    ("email_repeat", "mismatch"): _l("Adresy e-mail różnią się. Wpisz ten sam adres dwa razy."),
    ("terms_accepted", "required"): _l("Zaakceptuj warunki korzystania z serwisu."),
}


class EmailForm(FlaskForm):
    """``email_entry``: the address of the new UEOZ account, twice, and the terms."""

    email = EmailField(
        _l("E-mail"),
        validators=[
            DataRequired(FIELD_MESSAGES["email", "required"]),
            Email(FIELD_MESSAGES["email", "invalid"]),
        ],
    )
    email_repeat = EmailField(
        _l("Powtórz e-mail"),
        validators=[
            DataRequired(FIELD_MESSAGES["email_repeat", "required"]),
        ],
    )
    terms_accepted = BooleanField(
        validators=[DataRequired(FIELD_MESSAGES["terms_accepted", "required"])]
    )

    def validate_email_repeat(self, field: Field) -> None:
        """Compare the addresses as the journey will: in their normal form."""
        address = normalized_email(self.email.data)
        if address is not None and normalized_email(field.data) != address:
            raise ValidationError(str(FIELD_MESSAGES["email_repeat", "mismatch"]))

    def add_domain_errors(self, fields: dict[str, str]) -> None:
        """Show the reasons the journey gave for refusing the submission beside their fields."""
        for name, reason in fields.items():
            field = getattr(self, name, None)
            message = FIELD_MESSAGES.get((name, reason))
            if field is not None and message is not None and message not in field.errors:
                field.errors = [*field.errors, message]
