"""Re-run the logged events through the flow that was in force (``ueoz-migration audit replay``).

Each attempt's flow version is rebuilt from ``flow_versions`` with :func:`parse_flow`, and its
logged events are run again from the initial state:

- the first row is ``start``, applied, entering the flow's initial state;
- an ``applied`` row is allowed from the replayed state and lands on the logged target;
- a ``refused`` row is not allowed from the replayed state and leaves it;
- a ``rejected`` row is allowed (a step's check failed) and leaves the state unchanged;
- the replayed state at the end is the attempt's state, and the last event number and code
  the log minted are the attempt's.

``replay_export`` does the same for the attempts of an ``audit export`` file, with no
database: the flow versions come from the release's ``flows/history/``, and the last check
(where the attempt stands now) is left to the database.

The flow is flat and has no guards, so its transition table *is* the machine's semantics
(tests/unit/test_flow.py proves it); replay walks the table rather than building machines,
which keeps a log of a hundred thousand transitions to a second or two.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path
from time import perf_counter

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.models import Attempt, FlowVersion
from ..flow import Flow, flow_version, parse_flow
from ..resources import flows_dir
from .export import read_export
from .log import stream_rows
from .report import AuditReport, Finding

START_EVENT = "start"
ROW_COLUMNS = (
    "attempt_id",
    "seq",
    "event",
    "source",
    "target",
    "outcome",
    "flow_version",
    "event_number",
    "event_code",
)


class _FlowCache:
    """Flow versions rebuilt on first use; ``_build`` says from where."""

    def __init__(self) -> None:
        self.built: dict[str, Flow | str] = {}

    def get(self, version: str) -> Flow | str:
        """Return the flow, or why it cannot be rebuilt."""
        if version not in self.built:
            self.built[version] = self._build(version)
        return self.built[version]

    def _build(self, version: str) -> Flow | str:
        raise NotImplementedError


class _Flows(_FlowCache):
    """The flow versions stored in the database."""

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session

    def _build(self, version: str) -> Flow | str:
        source = self.session.scalar(
            select(FlowVersion.source).where(FlowVersion.version == version)
        )
        if source is None:
            return f"flow version {version[:12]}… is not stored"
        if flow_version(source) != version:
            return (
                f"the stored definition of flow version {version[:12]}… no longer hashes "
                "to it, so the flow in force cannot be rebuilt"
            )
        return parse_flow(source)


class _Attempt:
    """Where the replay of one attempt stands."""

    __slots__ = (
        "code",
        "event_code",
        "event_number",
        "flow",
        "id",
        "is_open",
        "number",
        "state",
        "stored_state",
        "version",
        "version_from",
    )

    def __init__(self, row: tuple) -> None:  # type: ignore[type-arg]
        (
            self.id,
            self.stored_state,
            self.version,
            self.event_number,
            self.event_code,
            self.is_open,
        ) = row
        self.state: str | None = None
        self.number: str | None = None
        self.code: int | None = None
        self.flow: Flow | None = None
        # Whose flow version every row must name, as the divergence says it.
        self.version_from = "the attempt's"


def replay_log(session: Session, attempt_ids: Collection[str] | None = None) -> AuditReport:
    """Replay the given attempts' logs (all of them when None) and report divergences."""
    started = perf_counter()
    report = AuditReport("replay")
    flows = _Flows(session)
    statement = select(
        Attempt.id,
        Attempt.state,
        Attempt.flow_version,
        Attempt.event_number,
        Attempt.event_code,
        Attempt.open_pesel_key.is_not(None),
    )
    if attempt_ids is not None:
        statement = statement.where(Attempt.id.in_(list(attempt_ids)))
    attempts = {row[0]: _Attempt(tuple(row)) for row in session.execute(statement)}

    current: _Attempt | None = None
    broken = False
    rows = 0
    for row in stream_rows(session, ROW_COLUMNS, attempt_ids):
        rows += 1
        attempt_id, seq, event, source, target, outcome, version, number, code = row
        if current is None or attempt_id != current.id:
            if current is not None and not broken:
                _finish(report, current)
            report.attempts += 1
            broken = False
            current = attempts.pop(attempt_id, None)
            if current is None:
                report.add(Finding(attempt_id, seq, "rows of an attempt that does not exist"))
                current, broken = _Attempt((attempt_id, None, None, None, None, None)), True
                continue
            flow = flows.get(current.version)
            if isinstance(flow, str):
                report.add(Finding(attempt_id, seq, flow))
                broken = True
                continue
            current.flow = flow
        if broken:
            continue
        problem = _step(current, seq, event, source, target, outcome, version)
        if problem is not None:
            report.add(Finding(attempt_id, seq, problem))
            broken = True
            continue
        if number is not None:
            current.number, current.code = number, code
    if current is not None and not broken:
        _finish(report, current)
    for attempt in attempts.values():
        report.attempts += 1
        report.add(Finding(attempt.id, 1, "expected a log starting with 'start', logged nothing"))
    report.rows = rows
    report.seconds = perf_counter() - started
    return report


def _step(
    attempt: _Attempt,
    seq: int,
    event: str,
    source: str,
    target: str,
    outcome: str,
    version: str,
) -> str | None:
    """Replay one row; return the divergence, or None when the log agrees with the flow."""
    flow = attempt.flow
    assert flow is not None
    if version != attempt.version:
        return (
            f"expected flow version {attempt.version[:12]}… ({attempt.version_from}), "
            f"logged {version[:12]}…"
        )
    state = attempt.state
    if state is None:  # the first row
        if (event, outcome, target) != (START_EVENT, "applied", flow.initial):
            return (
                f"expected 'start' applied into '{flow.initial}', "
                f"logged '{event}' {outcome} into '{target}'"
            )
        attempt.state = target
        return None
    if source != state:
        return f"expected source '{state}', logged '{source}' ('{event}' {outcome})"
    allowed = flow.transitions.get((state, event))
    if outcome == "applied":
        if allowed is None:
            return f"expected '{event}' to be refused in '{state}', logged it applied"
        if target != allowed:
            return f"expected '{event}' to lead from '{state}' to '{allowed}', logged '{target}'"
        attempt.state = target
        return None
    if outcome not in ("refused", "rejected"):
        return f"expected outcome applied, refused or rejected, logged '{outcome}'"
    if target != state:
        return f"expected a {outcome} '{event}' to stay in '{state}', logged target '{target}'"
    if outcome == "refused" and allowed is not None:
        return f"expected '{event}' to be allowed in '{state}' (to '{allowed}'), logged refused"
    if outcome == "rejected" and allowed is None:
        return f"expected '{event}' to be refused in '{state}', logged rejected by a check"
    return None


def _finish(report: AuditReport, attempt: _Attempt) -> None:
    """The replay must end where the attempt stands, with the event number it shows."""
    if attempt.state != attempt.stored_state:
        report.add(
            Finding(
                attempt.id,
                None,
                f"replay ends in '{attempt.state}', the attempt is in '{attempt.stored_state}'",
            )
        )
    elif attempt.flow is not None and (attempt.state not in attempt.flow.closed) != bool(
        attempt.is_open
    ):
        # An attempt holds the person's one open place (open_pesel_key) from its start until
        # a state that closes it; anything else was changed outside the flow.
        report.add(
            Finding(
                attempt.id,
                None,
                f"replay ends in '{attempt.state}', "
                + (
                    "which is open, but the attempt is marked ended (its open_pesel_key is empty)"
                    if not attempt.is_open
                    else "which is final, but the attempt is still marked open (open_pesel_key)"
                    if attempt.state in attempt.flow.finals
                    else "which closes it, but the attempt is still marked open (open_pesel_key)"
                ),
            )
        )
    elif (attempt.number, attempt.code) != (attempt.event_number, attempt.event_code):
        report.add(
            Finding(
                attempt.id,
                None,
                f"replay minted event number {attempt.number} code {attempt.code}, "
                f"the attempt shows {attempt.event_number} code {attempt.event_code}",
            )
        )


class _HistoryFlows(_FlowCache):
    """The flow versions this release keeps in ``flows/history/``."""

    def __init__(self, history: Path) -> None:
        super().__init__()
        self.history = history

    def _build(self, version: str) -> Flow | str:
        path = self.history / f"{version[:12]}.yaml"  # the reader let only hex through
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            source = None
        if source is None or flow_version(source) != version:
            return (
                f"flow version {version[:12]}… is not among those this release keeps "
                f"({self.history}): replay it against the database (audit replay), "
                "which stores every version it ran"
            )
        return parse_flow(source)


# What an export cannot show, said after every replay of one.
EXPORT_LIMITS = (
    "an export alone cannot show where its attempts stand now (their state, open place and "
    "event number are in the database): audit replay there can"
)


def replay_export(lines: Iterable[str], history: Path | None = None) -> AuditReport:
    """Replay the attempts of an ``audit export`` file, with no database.

    Each attempt's events are run again through the flow version its first row names, as
    this release keeps it in ``flows/history/``: every row must agree with the flow, as
    ``replay_log`` checks it; what the attempt's row would add (where it stands now) is not
    in the file. ExportUnreadable when the file is not an export.
    """
    started = perf_counter()
    report = AuditReport("replay")
    flows = _HistoryFlows(history or flows_dir() / "history")
    for attempt_id, records in read_export(lines):
        report.attempts += 1
        report.rows += len(records)
        first = records[0]
        attempt = _Attempt((attempt_id, None, first["flow_version"], None, None, None))
        # The attempt's row, which names its version, is not in the file: its first row is.
        attempt.version_from = "the attempt's first row's"
        flow = flows.get(attempt.version)
        if isinstance(flow, str):
            report.add(Finding(attempt_id, first["seq"], flow))
            continue
        attempt.flow = flow
        for record in records:
            problem = _step(
                attempt,
                record["seq"],
                record["event"],
                record["source"],
                record["target"],
                record["outcome"],
                record["flow_version"],
            )
            if problem is not None:
                report.add(Finding(attempt_id, record["seq"], problem))
                break
    report.notes.append(EXPORT_LIMITS)
    report.seconds = perf_counter() - started
    return report
