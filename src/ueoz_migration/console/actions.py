"""What the helpdesk may do to an attempt, on a caller's behalf: each through the journey.

Each action is one or more of the flow's own events, fired by :meth:`Journey.fire` with the
staff member as actor (kind ``helpdesk``, their staff id in the row's ``detail``), so the log
shows who did it and ``audit replay`` follows it as any other step. Nothing here writes to an
attempt directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..db.engine import snapshot
from ..db.models import Attempt
from ..flow import Flow
from ..journey import Actor, EventRefused, Journey

RESEND = "resend"
CANCEL = "cancel"
# An attempt waiting for its address to be verified takes no ``cancel``: the person's own
# way out is **Zmień adres e-mail**, then **Anuluj** on the e-mail form, and the helpdesk
# takes the same two steps for them (docs/console-helpdesk.md).
CANCEL_BY_WAY_OF = "change_email"


@dataclass(frozen=True)
class Done:
    """What an action did: the events applied, and the one refused (with why), if any."""

    applied: tuple[str, ...]
    refused: EventRefused | None = None


def cancel_steps(flow: Flow, state: str) -> tuple[str, ...]:
    """The events that cancel an attempt in ``state``; empty when it cannot be cancelled."""
    if flow.target(state, CANCEL) is not None:
        return (CANCEL,)
    through = flow.target(state, CANCEL_BY_WAY_OF)
    if through is not None and flow.target(through, CANCEL) is not None:
        return (CANCEL_BY_WAY_OF, CANCEL)
    return ()


def can_resend(flow: Flow, state: str) -> bool:
    return flow.target(state, RESEND) is not None


def resend(journey: Journey, attempt: Attempt, actor: Actor) -> Done:
    """Send the verification link again, to the attempt's address, under the hourly limit."""
    try:
        journey.fire(attempt.id, RESEND, actor=actor, language=attempt.language)
    except EventRefused as refused:
        return Done((), refused)
    return Done((RESEND,))


def cancel(journey: Journey, attempt: Attempt, actor: Actor) -> Done:
    """End the open attempt as **Anuluj** would, so that the person's next login starts anew.

    Each step is its own transition; when a step is refused (the person moved the attempt
    on meanwhile), the ones after it are not tried, and the answer says where it stopped.
    """
    with snapshot(journey.sessions) as session:
        flow = journey.flow_for(session, attempt.flow_version)
    steps = cancel_steps(flow, attempt.state) or (CANCEL,)  # refused, and logged, as it is
    applied: list[str] = []
    for event in steps:
        try:
            journey.fire(attempt.id, event, actor=actor)
        except EventRefused as refused:
            return Done(tuple(applied), refused)
        applied.append(event)
    return Done(tuple(applied))
