"""The verification e-mail as its reader sees it: the link's expiry on the Polish clock."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from ueoz_migration.adapters.mail_templates import TemplateMailComposer


@pytest.mark.parametrize(
    ("expires_at", "language", "shown"),
    [
        # Winter: UTC+1; summer: UTC+2 (the clocks change on the last Sunday of March).
        (
            datetime(2026, 11, 27, 3, 49, tzinfo=UTC),
            "pl",
            "ważny do 2026-11-27 04:49 czasu polskiego",
        ),
        (
            datetime(2026, 7, 1, 22, 30, tzinfo=UTC),
            "pl",
            "ważny do 2026-07-02 00:30 czasu polskiego",
        ),
        (
            datetime(2026, 11, 27, 3, 49, tzinfo=UTC),
            "en",
            "valid until 2026-11-27 04:49 Polish time",
        ),
    ],
)
def test_the_link_expiry_is_given_in_polish_time(expires_at, language, shown):
    composer = TemplateMailComposer(helpdesk_phone="19239", helpdesk_email="logowanie@cez.gov.pl")
    attempt = SimpleNamespace(language=language, given_names="Anna", family_name="Nowak")

    _, body = composer.verification(
        attempt=attempt, link="http://ueoz.test/weryfikacja/t", expires_at=expires_at
    )

    assert shown in body
    assert "UTC" not in body
