"""Build the data tests need, the way the service itself would."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from ueoz_migration.db.engine import transaction
from ueoz_migration.db.models import EplozAccount, OutboxMessage, TransitionLogEntry
from ueoz_migration.domain.identity import Person
from ueoz_migration.journey import Actor
from ueoz_migration.workers.search import SearchWorker

ANNA = Person("Anna Maria", "Mickiewicz-Sokołowska", date(1987, 4, 27), "87042712342")
HERMEGILDA = Person("HERMEGILDA", "DLIGEMREH", date(1997, 4, 1), "97040117247")


def user(request_id: str = "req-test") -> Actor:
    return Actor("user", request_id)


def submit(services, attempt_id, email="anna@example.pl", *, actor: Actor | None = None, **extra):
    """The person gives ``email`` (twice) and accepts the terms on the e-mail form."""
    return services.journey.fire(
        attempt_id,
        "submit",
        actor=actor or user(),
        email=email,
        email_repeat=extra.pop("email_repeat", email),
        terms_accepted=extra.pop("terms_accepted", True),
    )


#: Anna's e-PLOZ account, as the demo export has it.
ANNA_EPLOZ = {
    "login": "amicsokol",
    "pesel": ANNA.pesel,
    "first_name": "Anna",
    "last_name": "MICKIEWICZ - SOKOLOWSKA",
    "email": "amicsokol@csioz.pl",
    "status": "active",
    "roles": "P1:LEKARZ;GABINET:ADMIN",
}


def add_eploz_account(services, **fields) -> int:
    """Put one e-PLOZ account in the directory and return its id."""
    values = {**ANNA_EPLOZ, "imported_at": datetime.now(UTC)} | fields
    with transaction(services.sessions) as session:
        account = EplozAccount(**values)
        session.add(account)
        session.flush()
        return account.id


def migrate(services, attempt_id, email="anna@example.pl"):
    """Walk a searching attempt to ``done``, as the worker and the person would: Anna's
    e-PLOZ account found, the account created, the address given and verified."""
    journey = services.journey
    eploz_id = add_eploz_account(services)
    journey.fire(attempt_id, "account_found", actor=user(), eploz_account_id=eploz_id)
    journey.fire(attempt_id, "create_account", actor=user())
    submit(services, attempt_id, email)
    return journey.fire(attempt_id, "verify", actor=user(), token=link_token(services, attempt_id))


def log_of(services, attempt_id) -> list[TransitionLogEntry]:
    """The attempt's transition log, in order."""
    with services.sessions() as session:
        return session.scalars(
            select(TransitionLogEntry)
            .where(TransitionLogEntry.attempt_id == attempt_id)
            .order_by(TransitionLogEntry.seq)
        ).all()


def count(services, model, *where) -> int:
    """How many rows of ``model`` there are (that match ``where``)."""
    with services.sessions() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def link_token(services, attempt_id) -> str:
    """Read the link out of the newest e-mail in the outbox, as the person would."""
    with services.sessions() as session:
        body = session.scalars(
            select(OutboxMessage.body)
            .where(OutboxMessage.attempt_id == attempt_id)
            .order_by(OutboxMessage.id.desc())
        ).first()
    return re.search(r"/weryfikacja/(\S+)", body).group(1)


def put_on_flow_version(services, attempt_id, source: str) -> str:
    """Store the flow definition ``source`` and put the attempt on it, as if the attempt had
    started under that version (say, an older release's); return the version."""
    from ueoz_migration.db.models import Attempt, FlowVersion
    from ueoz_migration.flow import flow_version

    version = flow_version(source)
    with transaction(services.sessions) as session:
        if session.get(FlowVersion, version) is None:
            session.add(
                FlowVersion(
                    version=version,
                    name="migration",
                    source=source,
                    first_used_at=datetime.now(UTC),
                )
            )
        session.get(Attempt, attempt_id).flow_version = version
    return version


def search_worker(services, directory=None, **options) -> SearchWorker:
    """The search worker on ``services``, as `ueoz-migration worker` builds it from settings."""
    return SearchWorker.from_settings(
        services.settings, services.sessions, services.journey, directory, **options
    )


class CountedStop:
    """A stop event for a loop that returns from each wait at once and notes how long.

    Set once the loop has waited ``waits`` times: the test counts waits, no clock runs.
    """

    def __init__(self, waits: int) -> None:
        self.limit = waits
        self.waits: list[float] = []

    def is_set(self) -> bool:
        return len(self.waits) >= self.limit

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        return self.is_set()


def down_first(times: int, look: Callable[[], bool], statement: str) -> Callable[[], bool]:
    """``look`` with the database refusing connections for its first ``times`` calls."""
    calls = 0

    def down_then_back() -> bool:
        nonlocal calls
        calls += 1
        if calls <= times:
            raise OperationalError(statement, {}, Exception("connection refused"))
        return look()

    return down_then_back
