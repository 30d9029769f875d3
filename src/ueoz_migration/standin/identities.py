"""The demo people the stand-in node can log in, one per branch of the journey.

They are the people of `ueoz_migration.demo.DEMO_PEOPLE`, the list the e-PLOZ demo data
(`ueoz-migration eploz seed-demo`) is built from, so that each person reaches the branch
named in `scenario`. Every PESEL is valid and agrees with the date of birth.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ..demo import DEMO_PEOPLE


@dataclass(frozen=True)
class DemoIdentity:
    """One person as the node would describe them."""

    key: str
    first_name: str
    last_name: str
    pesel: str
    date_of_birth: dt.date
    scenario: str
    description: str


DEMO_IDENTITIES: tuple[DemoIdentity, ...] = tuple(
    DemoIdentity(
        demo.key,
        demo.person.given_names,
        demo.person.family_name,
        demo.person.pesel,
        demo.person.date_of_birth,
        demo.scenario,
        demo.label,
    )
    for demo in DEMO_PEOPLE
    if demo.person.date_of_birth is not None
)
