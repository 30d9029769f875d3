"""Logins resolved at the same moment on fresh threads, as gunicorn's gthread workers do."""

from __future__ import annotations

import threading

from ueoz_migration.adapters.wk import LoginFailed

from .conftest import ANNA

THREADS = 6


def test_logins_on_new_threads_at_once_all_succeed(sp, browser):
    arrivals = [browser.login(sp) for _ in range(THREADS)]
    start = threading.Barrier(THREADS)
    outcomes: list[str] = []

    def resolve(arrival) -> None:
        start.wait()
        try:
            identity = sp.resolve(arrival.artifact, arrival.request_id)
            outcomes.append(identity.pesel)
        except LoginFailed as failure:
            outcomes.append(f"refused: {failure}")

    threads = [threading.Thread(target=resolve, args=(arrival,)) for arrival in arrivals]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    # Each thread compiles its own copy of the schema; none may come out without the eIDAS types.
    assert outcomes == [ANNA.pesel] * THREADS
