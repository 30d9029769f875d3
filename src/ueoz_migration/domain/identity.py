"""The person, as the national login node identified them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

# The most characters the tables keep of each (db/models.py sizes its columns by them); what
# comes from the login node or the e-PLOZ export is checked against them before it is stored.
GIVEN_NAMES_MAX = 200
FAMILY_NAME_MAX = 200
PESEL_LENGTH = 11
LOGIN_MAX = 200  # an e-PLOZ login
EMAIL_MAX = 320  # RFC 5321's 64 + 1 + 255; email_validator allows no more than 254


@dataclass(frozen=True)
class Person:
    given_names: str
    family_name: str
    date_of_birth: date | None
    pesel: str
