"""What of an e-mail address the pages and logs show, and what the audit chain keeps."""

from __future__ import annotations

import pytest

from ueoz_migration.domain.privacy import mask_email, mask_email_for_audit


def test_pages_and_logs_show_the_first_letter_and_the_domain():
    assert mask_email("anna.kowalska@kowalski.pl") == "a***@kowalski.pl"


@pytest.mark.parametrize(
    ("address", "kept"),
    [
        ("anna.kowalska@kowalski.pl", "a***@k***.pl"),  # a personal domain names its owner
        ("jan@mail.szpital.waw.pl", "j***@m***.pl"),
        ("x@localhost", "x***@l***"),
        ("not-an-address", "***"),
    ],
)
def test_the_audit_chain_keeps_no_domain_that_could_name_a_person(address, kept):
    assert mask_email_for_audit(address) == kept
