"""How long a background loop waits while the database keeps failing it."""

from __future__ import annotations


def wait_after_failures(interval: float, failures: int, cap: float) -> float:
    """The wait after ``failures`` failed passes in a row.

    ``interval`` (the loop's usual wait) doubled after each failure, up to ``cap`` and never
    below ``interval``: a loop that looks five times a second would otherwise fill the log
    with the same line while the database is away.
    """
    if failures <= 0:
        return interval
    return max(interval, min(cap, interval * 2 ** min(failures - 1, 30)))  # 2**30: no overflow
