"""The migration flow: the statechart in flows/, loaded safely, versioned by its file's hash."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from statemachine import StateChart
from statemachine.io import load

from .resources import default_flow_path

#: The behaviour with which a state ends the attempt's hold on the PESEL (states/finals.py).
CLOSE_ATTEMPT = "close_attempt"


class FlowVersionUnknown(LookupError):
    """A log names a flow version whose definition is nowhere to be found."""


@dataclass(frozen=True)
class Flow:
    """One version of the flow: its source, the machine class and its transition table."""

    version: str
    name: str
    source: str
    machine_class: type[StateChart] = field(repr=False)
    transitions: Mapping[tuple[str, str], str] = field(repr=False)
    initial: str
    finals: frozenset[str]
    #: The states in which the attempt is no longer open: the final ones, and those that
    #: close it as they are entered yet still take an event (``done`` and ``skipped`` wait
    #: for the hand-off to the domain system).
    closed: frozenset[str]

    @property
    def states(self) -> list[str]:
        return [state.id for state in self.machine_class.states]

    @property
    def events(self) -> list[str]:
        return sorted({event for _, event in self.transitions})

    def allowed_events(self, state: str) -> list[str]:
        return [event for (source, event) in self.transitions if source == state]

    def target(self, state: str, event: str) -> str | None:
        """Where ``event`` leads from ``state``, or None when the flow does not allow it."""
        return self.transitions.get((state, event))


def flow_version(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


@cache
def parse_flow(source: str) -> Flow:
    """Build a flow from YAML text with the library's safe loader, never ``trusted=True``.

    The library's defaults for loaded charts suit SCXML, not us: an event with no transition
    would be silently ignored, and an exception inside an action would become an
    ``error.execution`` event after the target state had been entered. We refuse such events
    and let the exception abort the transition, so the attempt stays where it was and the
    transaction around it rolls back.
    """
    machine_class = load(source, format="yaml")
    machine_class.allow_event_without_transition = False
    machine_class.catch_errors_as_events = False
    machine_class.atomic_configuration_update = True
    machine_class.enable_self_transition_entries = False
    transitions = {
        (state.id, event.id): transition.target.id
        for state in machine_class.states
        for transition in state.transitions
        for event in transition.events
    }
    initial = machine_class.initial_state
    assert initial is not None
    finals = frozenset(state.id for state in machine_class.final_states)
    closing = {
        state.id
        for state in machine_class.states
        if any(spec.attr_name == CLOSE_ATTEMPT for spec in state.enter)
    }
    return Flow(
        version=flow_version(source),
        name=machine_class.name,
        source=source,
        machine_class=machine_class,
        transitions=transitions,
        initial=initial.id,
        finals=finals,
        closed=finals | closing,
    )


def load_flow_file(path: Path | None = None) -> Flow:
    return parse_flow((path or default_flow_path()).read_text(encoding="utf-8"))
