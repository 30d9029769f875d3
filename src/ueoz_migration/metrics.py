"""What an operator's Prometheus reads: the service's metrics and where each process serves them.

Every process counts what it does itself (prometheus_client's counters and histograms):

- a web instance (gunicorn) counts in each of its worker processes, in prometheus_client's
  multiprocess mode: ``gunicorn_config`` gives the instance a folder of its own
  (``PROMETHEUS_MULTIPROC_DIR``), and its master process serves the sum of its workers on a
  port of its own, ``METRICS_BIND``, with the queues' depth and age (:data:`QUEUES`), which
  it reads from the database at each scrape;
- a search worker or a mail sender serves its own counters and its liveness on the port its
  ``--metrics-bind`` option names.

Not on the service's public port: the load balancer never routes to the metrics port, so no
allow-list has to be kept right, and the master answers a scrape even while every worker of
the instance is busy (slow clients, a hung database), which is when it matters most.

No metric holds personal data: its labels are routes as the application declares them
(``/weryfikacja/<token>``), events, outcomes, reasons and codes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import ColumnElement, Engine, and_, event, func, select
from sqlalchemy.orm import Session

from .db.engine import READ_ONLY
from .db.models import OUTBOX_UNSENT, Attempt, BackchannelLogout, OutboxMessage

# -- what every process counts ------------------------------------------------------------

REQUEST_SECONDS = Histogram(
    "ueoz_http_request_duration_seconds",
    "Time from a request's arrival in the application to its response's last byte, by route.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REQUESTS_IN_PROGRESS = Gauge(
    "ueoz_http_requests_in_progress",
    "Requests the instance's worker processes are serving now.",
    multiprocess_mode="livesum",
)
TRANSITIONS = Counter(
    "ueoz_transitions_total",
    "Rows written to the transition log, once committed: events by outcome "
    "(applied, refused, rejected).",
    ["event", "outcome"],
)
EVENT_CODES = Counter(
    "ueoz_event_codes_total",
    "Event numbers minted, by the event code (201-208) the person was shown.",
    ["code"],
)
LOGIN_FAILURES = Counter(
    "ueoz_login_failures_total",
    "Logins through the node that ended without an identity, by reason.",
    ["reason"],
)
SEARCHES = Counter(
    "ueoz_searches_total",
    "Searches of the e-PLOZ directory by outcome (found, failed, retried, superseded, broken).",
    ["outcome"],
)
MAIL_DELIVERIES = Counter(
    "ueoz_mail_deliveries_total",
    "Outbox messages handed to the transport, by outcome "
    "(sent, retry, failed, withdrawn, lease_lost).",
    ["outcome"],
)
MAIL_FAILURES = Counter(
    "ueoz_mail_failures_total",
    "Failed deliveries, by the kind of failure (as outbox.last_error begins) and whether "
    "it was final.",
    ["reason", "final"],
)
WORKER_PASS = Gauge(
    "ueoz_worker_last_pass_timestamp_seconds",
    "When the worker last finished a pass of its loop without a database error (Unix time).",
    ["worker"],
    multiprocess_mode="livemax",
)
WORKER_STARTED = Gauge(
    "ueoz_worker_started_timestamp_seconds",
    "When the worker started (Unix time).",
    ["worker"],
    multiprocess_mode="livemax",
)

_COUNTED = "ueoz.metrics"


def note_log_row(session: Session, event_name: str, outcome: str, code: int | None) -> None:
    """Count a transition log row when its transaction commits (never one rolled back)."""
    session.info.setdefault(_COUNTED, []).append((event_name, outcome, code))


@event.listens_for(Session, "after_commit")
def _count_committed(session: Session) -> None:
    for event_name, outcome, code in session.info.pop(_COUNTED, ()):
        TRANSITIONS.labels(event_name, outcome).inc()
        if code is not None:
            EVENT_CODES.labels(str(code)).inc()


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_COUNTED, None)


def mail_failure(reason: str, *, final: bool) -> None:
    """Count a failed delivery by its kind: ``recipient refused: 550 5.1.1`` → recipient refused."""
    kind = reason.split(":", 1)[0].split(" (", 1)[0].strip() or "unknown"
    MAIL_FAILURES.labels(kind, "yes" if final else "no").inc()


def worker_started(worker: str) -> None:
    WORKER_STARTED.labels(worker).set(time.time())


def worker_pass(worker: str) -> None:
    """Say that the worker's loop went round once more, its database answering."""
    WORKER_PASS.labels(worker).set(time.time())


# -- the queues, read from the database at each scrape -------------------------------------


@dataclass(frozen=True)
class Queue:
    """Work waiting in a table: its rows that wait, and since when each waits."""

    name: str
    waiting: ColumnElement[bool]
    since: Any  # the column that says since when a row waits


#: The queues a scrape of a web instance reports; any number of workers take from each.
QUEUES: tuple[Queue, ...] = (
    # An attempt waits for the search worker from its start (no transition while searching).
    Queue("search", Attempt.state == "searching", Attempt.updated_at),
    Queue("outbox", OUTBOX_UNSENT, OutboxMessage.created_at),
    Queue(
        "backchannel_logout",
        and_(BackchannelLogout.sent_at.is_(None), BackchannelLogout.failed_at.is_(None)),
        BackchannelLogout.created_at,
    ),
)


class QueueCollector:
    """``ueoz_queue_depth`` and ``ueoz_queue_oldest_age_seconds`` of each of :data:`QUEUES`.

    Read at scrape time from the database every instance shares, so every instance reports
    the same figures (aggregate them with ``max``), and they are there while every worker
    is dead, which is when they matter. A database that does not answer makes
    ``ueoz_queue_scrape_ok`` 0 rather than the scrape fail.
    """

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.engine = engine
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "ueoz_queue_depth", "Items waiting in the queue (due or not yet).", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "ueoz_queue_oldest_age_seconds",
            "How long the queue's oldest waiting item has waited; 0 when it is empty.",
            labels=["queue"],
        )
        ok = GaugeMetricFamily(
            "ueoz_queue_scrape_ok", "1 when the database answered this scrape's questions."
        )
        try:
            figures = self.figures()
        except Exception:  # the scrape must answer; the 0 says why its figures are missing
            ok.add_metric([], 0)
            yield ok
            return
        now = self.clock()
        for name, (count, oldest) in figures.items():
            depth.add_metric([name], count)
            age.add_metric([name], max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
        ok.add_metric([], 1)
        yield from (depth, age, ok)

    def figures(self) -> dict[str, tuple[int, datetime | None]]:
        """Each queue's depth and the time its oldest item has waited since."""
        # Read-only: on SQLite a plain BEGIN, which waits for no writer.
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as connection:
            result = {}
            for queue in QUEUES:
                count, oldest = connection.execute(
                    select(func.count(), func.min(queue.since)).where(queue.waiting)
                ).one()
                result[queue.name] = (int(count), oldest)
            return result


# -- serving ---------------------------------------------------------------------------------


def parse_bind(value: str) -> tuple[str, int]:
    """``127.0.0.1:9464`` or ``9464`` (loopback) → (host, port); ValueError otherwise."""
    host, _, port = value.strip().rpartition(":")
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"{value!r} has no port from 1 to 65535")
    return host.strip("[]") or "127.0.0.1", number


def serve(bind: str, collectors: Iterable[object] = (), *, multiprocess: bool = False) -> None:
    """Serve the metrics on ``bind`` from a daemon thread of this process.

    ``multiprocess``: this process is a gunicorn master; the figures are its workers', summed
    from ``PROMETHEUS_MULTIPROC_DIR``.
    """
    host, port = parse_bind(bind)
    registry = REGISTRY
    if multiprocess:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    start_http_server(port, addr=host, registry=registry)


def serve_worker(worker: str, bind: str | None) -> None:
    """Serve a background worker's metrics on ``bind`` (when given); mark it started."""
    worker_started(worker)
    if bind:
        serve(bind)


__all__ = [
    "QUEUES",
    "Queue",
    "QueueCollector",
    "mail_failure",
    "note_log_row",
    "parse_bind",
    "serve",
    "serve_worker",
    "worker_pass",
]
