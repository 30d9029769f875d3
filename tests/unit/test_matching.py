"""Matching a person from the national login node with their e-PLOZ account (codes 201–208)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ueoz_migration.domain.codes import EventCode
from ueoz_migration.domain.matching import (
    first_name_agrees,
    last_name_agrees,
    match_account,
    normalize_name,
)


@dataclass(frozen=True)
class Account:
    first_name: str = "Anna"
    last_name: str = "MICKIEWICZ - SOKOLOWSKA"
    status: str = "active"


NODE = ("Anna Maria", "Mickiewicz-Sokołowska")


@pytest.mark.parametrize(
    ("written", "normal"),
    [
        ("MICKIEWICZ - SOKOLOWSKA", "mickiewicz-sokolowska"),
        ("Mickiewicz-Sokołowska", "mickiewicz-sokolowska"),
        ("Mickiewicz -Sokołowska", "mickiewicz-sokolowska"),
        ("  Anna   Maria ", "anna maria"),
        ("Anna\tMaria", "anna maria"),
        ("ŁUKASZ Żółć Ęą Śń Ćź", "lukasz zolc ea sn cz"),
        ("łódź", "lodz"),
    ],
)
def test_names_agree_regardless_of_case_diacritics_and_spacing(written, normal):
    assert normalize_name(written) == normal


def test_the_manuals_spelling_of_the_last_name_agrees():
    assert last_name_agrees("MICKIEWICZ - SOKOLOWSKA", "Mickiewicz-Sokołowska")


def test_a_different_last_name_does_not_agree():
    assert not last_name_agrees("Mickiewicz", "Mickiewicz-Sokołowska")


@pytest.mark.parametrize("eploz_first", ["Anna", "ANNA", "Anna Maria", "anna  maria"])
def test_the_first_name_agrees_with_all_given_names_or_the_first(eploz_first):
    assert first_name_agrees(eploz_first, "Anna Maria")


@pytest.mark.parametrize("eploz_first", ["Maria", "Ann", "Anna Maria Józefa", "Annamaria"])
def test_the_first_name_does_not_agree_with_a_later_or_partial_name(eploz_first):
    assert not first_name_agrees(eploz_first, "Anna Maria")


def test_a_single_matching_active_account_is_found():
    account = Account()
    outcome = match_account([account], *NODE)
    assert (outcome.account, outcome.code) == (account, None)


@pytest.mark.parametrize(
    ("accounts", "elsewhere", "code"),
    [
        ([], False, 201),
        ([Account(first_name="Maria")], False, 202),
        ([Account(last_name="Sokołowska")], False, 203),
        ([Account(), Account()], False, 204),
        ([Account(status="blocked")], False, 205),
        ([Account()], True, 206),
        ([Account(first_name="Helena", last_name="Grabowska")], False, 208),
    ],
    ids=["201-none", "202-first", "203-last", "204-several", "205-blocked", "206-migrated", "208"],
)
def test_each_reason_gives_its_event_code(accounts, elsewhere, code):
    outcome = match_account(accounts, *NODE, migrated_elsewhere=elsewhere)
    assert outcome.account is None
    assert outcome.code == EventCode(code)


def test_the_manuals_208_example():
    outcome = match_account([Account("Helena", "Grabowska")], "HERMEGILDA", "DLIGEMREH")
    assert outcome.code == EventCode.BOTH_NAMES_DIFFER


def test_a_blocked_account_is_reported_as_blocked_even_when_names_differ():
    # The helpdesk must learn the account is blocked first: fixing a name would not help.
    outcome = match_account([Account("Helena", "Grabowska", "blocked")], *NODE)
    assert outcome.code == EventCode.ACCOUNT_BLOCKED


def test_two_accounts_are_reported_even_when_one_of_them_would_match():
    outcome = match_account([Account(), Account(first_name="Helena")], *NODE)
    assert outcome.code == EventCode.SEVERAL_ACCOUNTS
