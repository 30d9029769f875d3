"""How long to wait before trying again: a loop the database fails, a delivery refused."""

from __future__ import annotations

import random
from datetime import timedelta


def wait_after_failures(interval: float, failures: int, cap: float) -> float:
    """The wait after ``failures`` failed passes in a row.

    ``interval`` (the loop's usual wait) doubled after each failure, up to ``cap`` and never
    below ``interval``: a loop that looks five times a second would otherwise fill the log
    with the same line while the database is away.
    """
    if failures <= 0:
        return interval
    return max(interval, min(cap, interval * 2 ** min(failures - 1, 30)))  # 2**30: no overflow


def jittered(base: timedelta, tries: int, cap: timedelta, rng: random.Random) -> timedelta:
    """The wait before the next try of a delivery that failed ``tries`` times.

    ``base`` doubled after each failed try, up to ``cap``, with up to half of it random: many
    deliveries that failed together (a server restart) do not all come back in one second.
    """
    ceiling = min(cap, base * 2 ** (tries - 1))
    return ceiling / 2 + ceiling / 2 * rng.random()
