"""The stand-in writes its assertion as text: what a person types must come back intact."""

from __future__ import annotations

import dataclasses

import pytest

from .conftest import ANNA, Browser

# Everything XML must escape, in text and in attributes, and a CDATA end.
AWKWARD = dataclasses.replace(
    ANNA,
    first_name='Zoë & "Ola" <Łucja>',
    last_name="O'Brien-Źdźbło ]]> a\tb",
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
