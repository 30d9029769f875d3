"""The stand-in writes its assertion as text: what a person types must come back intact."""

from __future__ import annotations

import dataclasses

import pytest

from ueoz_migration.adapters.wk import FailureReason, LoginFailed

from .conftest import ANNA, Browser

# Everything XML must escape, in text and in attributes, a CDATA end, and white space inside.
AWKWARD = dataclasses.replace(
    ANNA,
    first_name='Zoë & "Ola" <Łucja>',
    last_name="O'Brien-Źdźbło ]]> a  b",
)


@pytest.mark.parametrize("sign_assertion", [False, True], ids=["unsigned", "signed"])
def test_names_with_markup_characters_come_back_as_typed(make_standin, make_sp, sign_assertion):
    app = make_standin(sign_assertion=sign_assertion)
    sp = make_sp(app)
    arrival = Browser(app).login(sp, AWKWARD)

    identity = sp.resolve(arrival.artifact, arrival.request_id)

    assert (identity.given_names, identity.family_name) == (
        AWKWARD.first_name,
        AWKWARD.last_name,
    )


def test_a_control_character_in_a_name_is_refused_and_named_by_code_point(sp, browser):
    arrival = browser.login(sp, dataclasses.replace(ANNA, last_name="Mickiewicz\tSokołowska"))

    with pytest.raises(LoginFailed) as failed:
        sp.resolve(arrival.artifact, arrival.request_id)

    assert failed.value.reason is FailureReason.INVALID_ATTRIBUTE
    assert failed.value.detail == "CurrentFamilyName contains a control character (U+0009)"
