"""The migration journey: start attempts and fire events at them, one transaction each.

This is the one door to an attempt's state. Web handlers, the search worker and the expiry
sweep all come through :meth:`Journey.fire`, which

1. locks the attempt (``SELECT … FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite),
2. runs the event through the flow version the attempt started on, with the behaviours of
   :mod:`ueoz_migration.states`,
3. appends the log row and commits the new state, the row and any outbox mail together.

An event the state does not allow, or whose check fails, changes nothing but the log: the
caller gets :class:`EventRefused`, and the log a row for the refusal. The flow's refusal is
written in the same transaction, under the same lock. A step's check may have written
something already, so its transaction is rolled back and the refusal written in a transaction
of its own, under the lock again; if the attempt moved meanwhile to a state that does not
take the event, the refusal recorded is the flow's. Two events fired at once at one attempt
therefore queue on the lock; the second sees the state the first left and is applied or
refused from there, and the log never shows a check's refusal in a state the flow would have
refused the event in.

The log chains an attempt's first :data:`CHAINED_REFUSALS` refusals; later ones go to the
application log only (``attempt.event_refused`` with ``chained=False``), so that no one can
grow the chain without end by posting a refused event again and again (docs/audit.md).

An open attempt left alone past its time (``expires_at``) is expired by whichever comes
first, the sweep (:meth:`Journey.expire_stale`) or an event fired at it; that event is then
refused, as any event is in ``expired``.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, NamedTuple, cast

import structlog
from sqlalchemy import bindparam, func, insert, select, tuple_
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from statemachine import StateChart
from statemachine.exceptions import InvalidDefinition, TransitionNotAllowed
from statemachine.spec_parser import Functions, names_in_boolean_expr
from yaml import YAMLError

from .audit.chain import GENESIS, link_hash
from .db.engine import snapshot, transaction
from .db.models import Attempt, FlowVersion, TransitionLogEntry, UeozAccount, VerificationLink
from .domain.identity import Person
from .domain.privacy import mask_pesel, pesel_hash
from .events import FIRED_BY
from .flow import Flow, FlowVersionUnknown, parse_flow
from .metrics import note_log_row
from .states import AttemptContext, AttemptModel, MailComposer, Rejected
from .states.awaiting_verification import link_refusal, token_hash
from .states.base import Policy

log = structlog.get_logger(__name__)

LOG = TransitionLogEntry.__table__

# The statements every transition runs are built once, here and in the states: SQLAlchemy
# takes longer to build a statement and derive its cache key than to run it from its cache
# (docs/performance.md, "Statements built once").
APPEND_LOG_ROW = insert(LOG)
ATTEMPT = select(Attempt).where(Attempt.id == bindparam("attempt_id"))
LOCK_ATTEMPT = ATTEMPT.with_for_update()
OPEN_ATTEMPT = select(Attempt).where(Attempt.open_pesel_key == bindparam("key"))
VERIFIED_ACCOUNT = (
    select(UeozAccount.id)
    .where(UeozAccount.pesel_hash == bindparam("key"))
    .where(UeozAccount.email_verified_at.is_not(None))
)

START_EVENT = "start"

#: Refused and rejected events chained per attempt; a person's own mistakes (a mistyped
#: address, a double click, an old tab, a used link) stay far below it.
CHAINED_REFUSALS = 50
REFUSALS_CHAINED = (
    select(func.count())
    .select_from(LOG)
    .where(LOG.c.attempt_id == bindparam("attempt_id"))
    .where(LOG.c.outcome != "applied")
)


class FlowNotRunnable(RuntimeError):
    """This release cannot run attempts of a flow version: a name the version uses is gone.

    Only the flow file is versioned; the behaviours it names (``states/``) and the parts that
    fire its events are this release's code. docs/operations.md, "Changing the flow", says
    how a release keeps the versions of open attempts running.
    """

    def __init__(self, version: str, reason: str) -> None:
        super().__init__(f"flow version {version[:12]} cannot run in this release: {reason}")
        self.version = version
        self.reason = reason


def check_runnable(flow: Flow) -> None:
    """Raise :class:`FlowNotRunnable` unless this release can run attempts of ``flow``.

    Every event the version names must be one some part of this release fires
    (:data:`ueoz_migration.events.FIRED_BY`), and every behaviour it names must exist.
    Building its machine resolves the actions (enter, exit, before, on, after); guards
    (``cond``, ``unless``) are resolved only when a transition is tried, so their names are
    looked up here. The machine is built on a stand-in attempt that already sits in the
    initial state, as a stored attempt does: nothing is entered and no behaviour runs.
    """
    unfired = sorted(set(flow.events) - FIRED_BY.keys())
    if unfired:
        raise FlowNotRunnable(flow.version, "nothing fires " + ", ".join(unfired))
    missing = sorted(name for name in _guard_names(flow) if not hasattr(AttemptModel, name))
    if missing:
        raise FlowNotRunnable(flow.version, "no behaviour " + ", ".join(missing) + " (a guard)")
    resting = SimpleNamespace(attempt=SimpleNamespace(state=flow.initial))
    try:
        flow.machine_class(model=AttemptModel(cast(AttemptContext, resting)))
    except InvalidDefinition as error:
        raise FlowNotRunnable(flow.version, str(error)) from None


def _guard_names(flow: Flow) -> set[str]:
    """The names the guards of ``flow`` read from the model (a guard is a name, or a boolean
    expression such as ``a and not b`` or ``In('searching')``, in the library's own grammar)."""
    names: set[str] = set()
    for state in flow.machine_class.states:
        for transition in state.transitions:
            for group in (transition.cond, getattr(transition, "unless", None)):
                for spec in group or ():
                    if not spec.is_convention and isinstance(spec.attr_name, str):
                        names |= names_in_boolean_expr(spec.attr_name)
    # Less the library's own functions (In), which it looks up without regard to case.
    return {name for name in names if name.lower() not in Functions.registry}


def load_runnable(version: str, source: str) -> Flow:
    """Build a stored flow version and check this release can run it (:class:`FlowNotRunnable`).

    A definition this release's python-statemachine no longer reads (an upgrade that changed
    what its loader accepts) cannot run either, and is said so, like a missing behaviour.
    """
    try:
        flow = parse_flow(source)
    except (InvalidDefinition, YAMLError, ValueError, TypeError, AttributeError, KeyError) as error:
        reason = " ".join(str(error).split())
        raise FlowNotRunnable(version, f"its definition does not load here: {reason}") from None
    check_runnable(flow)
    return flow


def utcnow() -> datetime:
    return datetime.now(UTC)


class AttemptNotFound(LookupError):
    """No attempt has that id (or that verification link)."""


class EventRefused(Exception):
    """The event was not applied; ``reason`` says why and ``fields`` which inputs were wrong.

    ``reason`` is ``not_allowed`` when the attempt's state does not take the event, or the
    reason a step's check gave (``invalid_submission``, ``link_expired``, …).
    """

    def __init__(
        self,
        attempt: Attempt,
        event: str,
        reason: str,
        allowed: list[str],
        fields: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{event} refused in {attempt.state}: {reason}")
        self.attempt = attempt
        self.event = event
        self.reason = reason
        self.allowed = allowed
        self.fields = fields or {}
        # False past the attempt's CHAINED_REFUSALS: in the application log only.
        self.chained = True


class ExpiryReport(NamedTuple):
    """What a sweep of stale attempts did: ended, and could not be moved (logged)."""

    expired: int
    failed: int


class _IdleMachines(threading.local):
    """One idle flow machine per flow version and thread, rebound to each attempt it runs.

    Building a python-statemachine machine resolves every callback of the flow against the
    model, which costs more than the transition itself. The machine holds no attempt state of
    its own (it reads and writes the state through its model, and our model reads the attempt
    of its current context), so one machine can serve one attempt after another: only the
    model's context changes. A machine that raised, or that reached a final state (a finished
    chart stops running), is thrown away rather than reused.
    """

    def __init__(self) -> None:
        self._idle: dict[str, tuple[StateChart, AttemptModel]] = {}

    def bind(self, flow: Flow, context: AttemptContext) -> StateChart:
        idle = self._idle.get(flow.version)
        if idle is None:
            model = AttemptModel(context)
            idle = self._idle[flow.version] = (flow.machine_class(model=model), model)
        machine, model = idle
        model.context = context
        return machine

    def start(self, flow: Flow, context: AttemptContext) -> None:
        """Enter the flow's initial state (and run its entry behaviour) for a new attempt.

        A machine built for the attempt enters it as it is built; an idle one is told to,
        which costs a fraction of building one.
        """
        machine = self.bind(flow, context)
        try:
            machine.activate_initial_state()
        except BaseException:
            self.discard(flow)
            raise

    def discard(self, flow: Flow) -> None:
        self._idle.pop(flow.version, None)


@dataclass(frozen=True)
class Actor:
    """Who fired an event, and in which request (for the log)."""

    kind: str  # user | worker | system | helpdesk
    request_id: str
    # A staff member acting in the console (kind ``helpdesk``): their staff id, which the
    # log row's ``detail`` names (``{"staff": 7}``); never their name or PESEL.
    staff: int | None = None

    @classmethod
    def system(cls) -> Actor:
        return cls("system", uuid.uuid4().hex)


class Journey:
    """The migration service's application core."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        flow: Flow,
        policy: Policy,
        audit_key: bytes,
        pesel_key: bytes,
        mail: MailComposer,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.flow = flow
        self.policy = policy
        self.audit_key = audit_key  # the transition log's chain
        self.pesel_key = pesel_key  # the PESEL hashes (pesel_hash), a key auditors never hold
        self.mail = mail
        self.clock = clock
        self._flows: dict[str, Flow] = {flow.version: flow}
        self._flow_recorded = False
        self._machines = _IdleMachines()

    # -- starting -------------------------------------------------------------------------

    def start(
        self,
        person: Person,
        *,
        actor: Actor,
        domain_system: str | None = None,
        language: str = "pl",
    ) -> Attempt:
        """Resume the person's open attempt, or start a new one.

        A person whose UEOZ account is already verified gets an attempt that goes straight to
        ``skipped``, so that the audit log shows the visit too. An open attempt past its expiry
        is expired first, and a new one started.
        """
        if not self.pesel_key:  # the auditors' and helpdesk's commands read, never start
            raise RuntimeError("no PESEL_HASH_KEY in this process: it cannot start attempts")
        key = pesel_hash(self.pesel_key, person.pesel)
        open_attempt = self._open_attempt(key)
        if open_attempt is not None:
            resumed = self._resume(open_attempt.id, actor, domain_system, language)
            if resumed is not None:
                return resumed
        try:
            return self._create(person, key, actor, domain_system, language)
        except IntegrityError:
            # Another request for the same person (a second tab, a double login) created
            # the open attempt between our look-up and our insert: resume that one.
            open_attempt = self._open_attempt(key)
            if open_attempt is None:
                raise
            return open_attempt

    def _create(
        self,
        person: Person,
        key: str,
        actor: Actor,
        domain_system: str | None,
        language: str,
    ) -> Attempt:
        now = self.clock()
        self._record_flow()
        with transaction(self.sessions) as session:
            attempt = Attempt(
                id=uuid.uuid4().hex,
                flow_version=self.flow.version,
                pesel=person.pesel,
                pesel_hash=key,
                given_names=person.given_names,
                family_name=person.family_name,
                date_of_birth=person.date_of_birth,
                open_pesel_key=key,
                domain_system=domain_system,
                language=language,
                created_at=now,
                updated_at=now,
                expires_at=now + self.policy.attempt_ttl,
                search_due_at=now,
                search_tries=0,
                log_seq=0,
                log_head="",
            )
            session.add(attempt)
            context = self._context(session, attempt, now)
            self._machines.start(self.flow, context)
            self._append(session, attempt, START_EVENT, "", "applied", actor, now, context.notes)
            verified = session.scalar(VERIFIED_ACCOUNT, {"key": key})
            skipped = (
                self._apply(session, attempt, "skip", actor, now, {})
                if verified is not None
                else None
            )
        log.info(
            "attempt.started",
            attempt=attempt.id,
            pesel=mask_pesel(person.pesel),
            state=attempt.state,
        )
        if skipped is not None:
            log.info("attempt.transition", **skipped)
        return attempt

    # -- firing events --------------------------------------------------------------------

    def fire(self, attempt_id: str, event: str, *, actor: Actor, **data: Any) -> Attempt:
        """Apply ``event`` to the attempt or raise :class:`EventRefused`; see the module doc."""
        lines: list[dict[str, Any]] = []
        refused: EventRefused | None = None
        try:
            with transaction(self.sessions) as session:
                attempt = self._lock(session, attempt_id)
                now = self.clock()  # read under the lock: the log's times follow its order
                if event != "expire":  # an expire finding it stale is applied as it is
                    lines += self._expire_if_past_time(session, attempt, actor, now)
                flow = self.flow_for(session, attempt.flow_version)
                if flow.target(attempt.state, event) is None:
                    refused = self._append_refusal(
                        session, flow, attempt, event, actor, now, "not_allowed"
                    )
                else:
                    lines.append(self._apply(session, attempt, event, actor, now, data))
        except TransitionNotAllowed:
            reason, fields = "not_allowed", {}
        except Rejected as rejected:
            reason, fields = rejected.reason, rejected.fields
        except IntegrityError:
            # A uniqueness rule held against a concurrent change (another attempt's UEOZ
            # account came to hold the e-PLOZ account a moment ago): refuse rather than
            # half-apply.
            reason, fields = "conflict", {}
        else:
            # Told once it is committed: an event number in the logs is one the database kept.
            for line in lines:
                log.info("attempt.transition", **line)
            if refused is None:
                return attempt
            self._log_refusal(refused, actor)
            raise refused
        # A step turned the event down, and everything it wrote was rolled back with the
        # lock; the refusal is written under the lock again (see _refuse).
        raise self._refuse(attempt_id, event, actor, reason, fields)

    def _apply(
        self,
        session: Session,
        attempt: Attempt,
        event: str,
        actor: Actor,
        now: datetime,
        data: dict[str, Any],
    ) -> dict[str, Any]:
        """Take the attempt through ``event`` and append its log row; return its log line's
        fields, for the caller to log once the transaction has committed.

        The caller has made sure the state takes the event (``fire`` asks the flow's table;
        ``skip`` and ``expire`` are taken by the states they are applied in): a finished
        chart would ignore an event in a final state rather than refuse it.
        """
        source, number_before = attempt.state, attempt.event_number
        flow = self.flow_for(session, attempt.flow_version)
        assert flow.target(source, event) is not None, f"{event} in {source}"
        context = self._context(session, attempt, now)
        machine = self._machines.bind(flow, context)
        try:
            # The step's queries read what earlier transactions committed; its writes go out
            # together when the log row is appended, not one flush per query in between.
            # A step that needs a row written first (to catch a uniqueness rule there)
            # flushes it itself.
            with session.no_autoflush:
                machine.send(event, **data)
        except BaseException:
            self._machines.discard(flow)
            raise
        if attempt.state in flow.finals:
            self._machines.discard(flow)
        if attempt.state not in flow.closed:
            attempt.expires_at = now + self.policy.attempt_ttl
        attempt.updated_at = now
        minted = attempt.event_number != number_before
        self._append(
            session, attempt, event, source, "applied", actor, now, context.notes, minted=minted
        )
        return {
            "attempt": attempt.id,
            "event_name": event,
            "source": source,
            "target": attempt.state,
            "actor": actor.kind,
            "request_id": actor.request_id,
            "event_number": attempt.event_number,
            "event_code": attempt.event_code,
        }

    def reject(
        self,
        attempt_id: str,
        event: str,
        *,
        actor: Actor,
        reason: str,
        fields: dict[str, str] | None = None,
    ) -> EventRefused:
        """Record an event turned down before it reached the flow, as :meth:`fire` would.

        For the pages: a form their own checks refused (``invalid_submission``), or an event
        a person may not fire from a page at all. The log shows it like any refusal; if the
        attempt's state does not take the event anyway, that is the reason recorded.
        """
        return self._refuse(attempt_id, event, actor, reason, fields or {})

    def _refuse(
        self, attempt_id: str, event: str, actor: Actor, reason: str, fields: dict[str, str]
    ) -> EventRefused:
        """Record a refusal under the attempt's lock, in the state the attempt now stands in.

        Between a step's refusal and this, or a page's check and this, another request may
        have moved the attempt on (another tab, the sweep). If its state no longer takes the
        event, the refusal recorded is the flow's (``not_allowed``), as replay expects of
        that state; the caller is told the same.
        """
        with transaction(self.sessions) as session:
            attempt = self._lock(session, attempt_id)
            now = self.clock()
            lines = self._expire_if_past_time(session, attempt, actor, now)
            flow = self.flow_for(session, attempt.flow_version)
            if flow.target(attempt.state, event) is None:
                reason = "not_allowed"
            refused = self._append_refusal(session, flow, attempt, event, actor, now, reason)
        for line in lines:
            log.info("attempt.transition", **line)
        refused.fields = fields
        self._log_refusal(refused, actor)
        return refused

    def _expire_if_past_time(
        self, session: Session, attempt: Attempt, actor: Actor, now: datetime
    ) -> list[dict[str, Any]]:
        """Expire the locked attempt if it was left alone past its time; its log line, if so.

        Whoever finds it so ends it (as a login does): the same end whether the sweep or the
        person's click comes first. The event that found it is then refused in ``expired``.
        """
        if not self._stale(attempt, now):
            return []
        return [self._apply(session, attempt, "expire", actor, now, {})]

    def _append_refusal(
        self,
        session: Session,
        flow: Flow,
        attempt: Attempt,
        event: str,
        actor: Actor,
        now: datetime,
        reason: str,
    ) -> EventRefused:
        """Append the log row of an event not applied, up to the attempt's
        :data:`CHAINED_REFUSALS`; return what to tell the caller."""
        refused = EventRefused(attempt, event, reason, flow.allowed_events(attempt.state))
        chained = session.scalar(REFUSALS_CHAINED, {"attempt_id": attempt.id}) or 0
        if chained >= CHAINED_REFUSALS:
            refused.chained = False
            return refused
        outcome = "refused" if reason == "not_allowed" else "rejected"
        self._append(
            session, attempt, event, attempt.state, outcome, actor, now, {"reason": reason}
        )
        return refused

    @staticmethod
    def _log_refusal(refused: EventRefused, actor: Actor) -> None:
        log.info(
            "attempt.event_refused",
            attempt=refused.attempt.id,
            event_name=refused.event,
            state=refused.attempt.state,
            reason=refused.reason,
            actor=actor.kind,
            request_id=actor.request_id,
            chained=refused.chained,
        )

    @staticmethod
    def _stale(attempt: Attempt, now: datetime) -> bool:
        """Whether the attempt is open and was left alone past its time."""
        return attempt.open_pesel_key is not None and attempt.expires_at <= now

    def _expire_if_stale(self, attempt_id: str, actor: Actor) -> bool:
        """End the attempt if, under its lock, it is still open and past its time.

        The sweep and a returning login find stale attempts in a snapshot; by the time the
        lock is theirs, the person may have moved the attempt on (its time starts again) or
        ended it. Then nothing happens and nothing is logged.
        """
        with transaction(self.sessions) as session:
            attempt = self._lock(session, attempt_id)
            lines = self._expire_if_past_time(session, attempt, actor, self.clock())
        for line in lines:
            log.info("attempt.transition", **line)
        return bool(lines)

    # -- looking things up ----------------------------------------------------------------

    def get(self, attempt_id: str) -> Attempt:
        with snapshot(self.sessions) as session:
            attempt = session.scalars(ATTEMPT, {"attempt_id": attempt_id}).one_or_none()
            if attempt is None:
                raise AttemptNotFound(attempt_id)
            return attempt

    def allowed_events(self, attempt: Attempt) -> list[str]:
        with snapshot(self.sessions) as session:
            return self.flow_for(session, attempt.flow_version).allowed_events(attempt.state)

    def attempt_for_link(self, token: str) -> str:
        """Return the id of the attempt a verification link belongs to."""
        with snapshot(self.sessions) as session:
            attempt_id = session.scalar(
                select(VerificationLink.attempt_id).where(
                    VerificationLink.token_hash == token_hash(token)
                )
            )
        if attempt_id is None:
            raise AttemptNotFound("verification link")
        return attempt_id

    def link_standing(self, token: str) -> tuple[Attempt, str | None]:
        """Return a verification link's attempt, and why ``verify`` would refuse it now (None:
        it would be taken), reading only: the link's page asks before it fires anything.

        The reason is the flow's (``not_allowed``) when the attempt no longer waits for a
        link. An attempt past its time is left for the event to expire: None here.
        """
        with snapshot(self.sessions) as session:
            link = session.scalar(
                select(VerificationLink).where(VerificationLink.token_hash == token_hash(token))
            )
            if link is None:
                raise AttemptNotFound("verification link")
            attempt = session.scalars(ATTEMPT, {"attempt_id": link.attempt_id}).one()
            flow = self.flow_for(session, attempt.flow_version)
            if flow.target(attempt.state, "verify") is None:
                return attempt, "not_allowed"
            if self._stale(attempt, self.clock()):
                return attempt, None
            return attempt, link_refusal(link, attempt, self.clock())

    def link_is_for_current_address(self, token: str) -> bool:
        """Tell whether a verification link went to the address its attempt now has.

        A link to an address since changed belongs to someone the person no longer means:
        it may not ask for links (nor learn where the new ones go).
        """
        with snapshot(self.sessions) as session:
            return (
                session.scalar(
                    select(VerificationLink.id)
                    .join(Attempt, Attempt.id == VerificationLink.attempt_id)
                    .where(VerificationLink.token_hash == token_hash(token))
                    .where(VerificationLink.email == Attempt.email)
                )
                is not None
            )

    def expire_stale(self, *, batch: int = 500) -> ExpiryReport:
        """End the open attempts that were left alone past their time; say how it went.

        Stale attempts are taken in batches, oldest first, each batch after the last one's
        final (expires_at, id): an attempt that cannot be moved is passed over, so it never
        holds up the ones behind it (it is tried again at the next sweep).
        """
        now = self.clock()
        actor = Actor.system()
        expired = failed = 0
        after: tuple[datetime, str] | None = None
        while True:
            query = (
                select(Attempt.expires_at, Attempt.id)
                .where(Attempt.open_pesel_key.is_not(None))
                .where(Attempt.expires_at <= now)
                .order_by(Attempt.expires_at, Attempt.id)
                .limit(batch)
            )
            if after is not None:
                query = query.where(tuple_(Attempt.expires_at, Attempt.id) > tuple_(*after))
            with snapshot(self.sessions) as session:
                stale = [(row.expires_at, row.id) for row in session.execute(query)]
            for _expires_at, attempt_id in stale:
                try:
                    if self._expire_if_stale(attempt_id, actor):
                        expired += 1
                except SQLAlchemyError:
                    raise  # the database itself: the caller waits and sweeps again
                except Exception as error:
                    # One attempt that cannot be moved (its flow version is nowhere to be
                    # found, say) must not keep the others open past their time.
                    log.error(
                        "attempt.expiry_failed",
                        attempt=attempt_id,
                        error=type(error).__name__,
                        # Names only (versions, behaviours, events), never personal data.
                        **({"reason": str(error)} if isinstance(error, FlowNotRunnable) else {}),
                    )
                    failed += 1
            if len(stale) < batch:
                return ExpiryReport(expired, failed)
            after = stale[-1]

    def flow_for(self, session: Session, version: str) -> Flow:
        """Return the flow version an attempt started on, from the database if need be.

        Raises :class:`FlowNotRunnable` when this release cannot run that version.
        """
        flow = self._flows.get(version)
        if flow is None:
            source = session.scalar(
                select(FlowVersion.source).where(FlowVersion.version == version)
            )
            if source is None:
                raise FlowVersionUnknown(version)
            flow = self._flows[version] = load_runnable(version, source)
        return flow

    def open_flow_versions(self) -> dict[str, int]:
        """How many attempts are open under each flow version (the versions this release
        must be able to run)."""
        with snapshot(self.sessions) as session:
            rows = session.execute(
                select(Attempt.flow_version, func.count())
                .where(Attempt.open_pesel_key.is_not(None))
                .group_by(Attempt.flow_version)
            )
            return {version: count for version, count in rows}

    def open_flows(self) -> tuple[list[Flow], list[FlowNotRunnable]]:
        """The flow versions of open attempts: those this release runs, those it cannot."""
        runnable: list[Flow] = []
        problems: list[FlowNotRunnable] = []
        for version in sorted(self.open_flow_versions()):
            try:
                with snapshot(self.sessions) as session:
                    runnable.append(self.flow_for(session, version))
            except FlowNotRunnable as problem:
                problems.append(problem)
            except FlowVersionUnknown:
                problems.append(FlowNotRunnable(version, "its definition is not in the database"))
        return runnable, problems

    # -- internals ------------------------------------------------------------------------

    def _open_attempt(self, key: str) -> Attempt | None:
        with snapshot(self.sessions) as session:
            return session.scalars(OPEN_ATTEMPT, {"key": key}).one_or_none()

    def _resume(
        self,
        attempt_id: str,
        actor: Actor,
        domain_system: str | None,
        language: str,
    ) -> Attempt | None:
        """The person's open attempt, under its lock, told where they came from this time.

        None when it is over once the lock is ours: ended meanwhile (in another tab), or
        left alone past its time, which ends it now; the caller then starts a new one.
        """
        with transaction(self.sessions) as session:
            attempt = self._lock(session, attempt_id)
            lines = self._expire_if_past_time(session, attempt, actor, self.clock())
            resumed = attempt if attempt.open_pesel_key is not None else None
            if resumed is not None and domain_system is not None:
                # A person who comes back from another system returns to that one at the end.
                attempt.domain_system = domain_system
                attempt.language = language
        for line in lines:
            log.info("attempt.transition", **line)
        return resumed

    def _lock(self, session: Session, attempt_id: str) -> Attempt:
        attempt = session.scalars(LOCK_ATTEMPT, {"attempt_id": attempt_id}).one_or_none()
        if attempt is None:
            raise AttemptNotFound(attempt_id)
        return attempt

    def _context(self, session: Session, attempt: Attempt, now: datetime) -> AttemptContext:
        return AttemptContext(
            session=session, attempt=attempt, now=now, policy=self.policy, mail=self.mail
        )

    def _record_flow(self) -> None:
        """Keep the running flow's definition in the database, once, for future replays.

        In a transaction of its own, committed before the first attempt that runs on it: as
        part of that attempt's transaction, a rollback there (a double login losing the race
        for the open attempt) would take the definition with it, while this process went on
        believing it recorded, and the attempts would outlive the next change of the flow
        file with no definition to run or replay them by.
        """
        if self._flow_recorded:
            return
        with transaction(self.sessions) as session:
            if session.get(FlowVersion, self.flow.version) is None:
                try:
                    with session.begin_nested():
                        session.add(
                            FlowVersion(
                                version=self.flow.version,
                                name=self.flow.name,
                                source=self.flow.source,
                                first_used_at=self.clock(),
                            )
                        )
                except IntegrityError:
                    pass  # another process recorded it first; the row is the same
        self._flow_recorded = True

    def _append(
        self,
        session: Session,
        attempt: Attempt,
        event: str,
        source: str,
        outcome: str,
        actor: Actor,
        now: datetime,
        notes: dict[str, Any],
        *,
        minted: bool = False,
    ) -> None:
        """Append one row to the attempt's log and move the chain's head on the attempt."""
        if actor.staff is not None:
            notes = {**notes, "staff": actor.staff}
        fields = {
            "attempt_id": attempt.id,
            "seq": attempt.log_seq + 1,
            "at": now,
            "event": event,
            "source": source,
            "target": attempt.state,
            "outcome": outcome,
            "actor": actor.kind,
            "request_id": actor.request_id,
            "flow_version": attempt.flow_version,
            "event_number": attempt.event_number if minted else None,
            "event_code": attempt.event_code if minted else None,
            "pesel_hash": attempt.pesel_hash,
            "detail": json.dumps(notes, sort_keys=True) if notes else "",
        }
        prev_hash = attempt.log_head or GENESIS
        digest = link_hash(self.audit_key, prev_hash, fields)
        attempt.log_seq = fields["seq"]
        attempt.log_head = digest
        # The attempt's row (new state and head) goes first: the log row refers to it. The log
        # row is append-only and never read back in this transaction, so it skips the unit of
        # work and goes out as one plain INSERT.
        session.flush()
        session.connection().execute(
            APPEND_LOG_ROW, {**fields, "prev_hash": prev_hash, "hash": digest}
        )
        note_log_row(session, event, outcome, fields["event_code"])
