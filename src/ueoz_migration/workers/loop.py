"""The loop every worker runs: a pass, a wait, and patience while the database is away.

docs/operations.md, "Search worker and mail sender", says what an operator sees of it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from structlog.typing import FilteringBoundLogger

from ..backoff import wait_after_failures
from ..metrics import worker_pass


@dataclass(frozen=True)
class LoopEvents:
    """The names a worker's loop logs under (each worker kept the ones operators know)."""

    started: str
    stopped: str
    database_error: str
    database_recovered: str
    unexpected: str  # a pass failed on anything but the database: a bug


def run_passes(
    stop: threading.Event,
    one_pass: Callable[[], object],
    *,
    worker: str,
    log: FilteringBoundLogger,
    events: LoopEvents,
    interval: float,
    backoff_cap: float,
    context: Mapping[str, object] | None = None,
) -> None:
    """Run ``one_pass`` every ``interval`` seconds until ``stop`` is set.

    While the database keeps failing, the wait doubles after each failed pass, up to
    ``backoff_cap`` seconds (never below ``interval``), and the first pass that works brings
    it back: the database restarting or failing over would otherwise fill the log with the
    same line five times a second. Any other failure is a bug, logged with its traceback;
    the loop goes on with the next pass. Each pass that works is counted for /metrics
    under ``worker``. ``context``: fields of the ``started`` line.
    """
    log.info(events.started, **(context or {}))
    failures = 0  # passes in a row that the database failed
    while not stop.is_set():
        wait = interval
        try:
            one_pass()
        except SQLAlchemyError as error:
            failures += 1
            wait = wait_after_failures(interval, failures, backoff_cap)
            log.error(
                events.database_error,
                error=type(error).__name__,
                failures=failures,
                retry_in_seconds=round(wait, 3),
            )
        except Exception:
            log.exception(events.unexpected)
        else:
            worker_pass(worker)
            if failures:
                log.info(events.database_recovered, failures=failures)
                failures = 0
        stop.wait(wait)
    log.info(events.stopped)
