"""The person, as the national login node identified them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class Person:
    given_names: str
    family_name: str
    date_of_birth: date | None
    pesel: str
