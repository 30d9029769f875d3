"""What of an e-mail address the pages and logs show, and what the audit chain keeps."""

from __future__ import annotations

import pytest

from ueoz_migration.domain.privacy import (
    domain_forms,
    mask_email,
    mask_email_for_audit,
    mask_pesel,
    shown_email,
)


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


def test_the_helpdesk_sees_the_last_three_digits_of_a_pesel():
    assert mask_pesel("97040117247") == "********247"


@pytest.mark.parametrize(
    ("address", "shown"),
    [
        ("anna@csioz.pl", "a***@csioz.pl"),
        ("anna@bücher.de", "a***@bücher.de (xn--bcher-kva.de)"),
        ("anna@аррӏе.com", "a***@аррӏе.com (xn--80ak6aa92e.com)"),  # Cyrillic look-alike
        ("anna@xn--80ak6aa92e.com", "a***@аррӏе.com (xn--80ak6aa92e.com)"),  # typed as punycode
        ("anna@xn--zz.pl", "a***@xn--zz.pl"),  # not valid punycode: shown as it is
    ],
)
def test_an_internationalised_domain_is_shown_in_both_forms(address, shown):
    assert shown_email(address) == shown


def test_a_plain_domain_has_no_second_form():
    assert domain_forms("jan@szpital.waw.pl") is None
