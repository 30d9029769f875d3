"""Write the e-mails the flow sends, from the templates in templates/mail/."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ..db.models import Attempt
from ..resources import templates_dir

#: The people who get the mail live in Poland: times are given in their clock, not in UTC.
POLISH_TIME = ZoneInfo("Europe/Warsaw")

SUBJECTS = {
    "pl": "UEOZ – potwierdź adres e-mail",
    "en": "UEOZ – confirm your e-mail address",
}


class TemplateMailComposer:
    """Renders plain-text mail in the attempt's language (Polish unless it chose English)."""

    def __init__(self, *, helpdesk_phone: str, helpdesk_email: str) -> None:
        self.environment = Environment(
            loader=FileSystemLoader(templates_dir() / "mail"),
            undefined=StrictUndefined,
            autoescape=False,  # noqa: S701 - plain-text mail, never rendered as HTML
            keep_trailing_newline=True,
        )
        self.helpdesk = {"helpdesk_phone": helpdesk_phone, "helpdesk_email": helpdesk_email}

    def verification(self, *, attempt: Attempt, link: str, expires_at: datetime) -> tuple[str, str]:
        language = attempt.language if attempt.language in SUBJECTS else "pl"
        template = self.environment.get_template(f"verification.{language}.txt")
        body = template.render(
            attempt=attempt,
            link=link,
            expires_at=expires_at.astimezone(POLISH_TIME),
            **self.helpdesk,
        )
        return SUBJECTS[language], body
