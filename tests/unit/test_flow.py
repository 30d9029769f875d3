"""The flow's transition table is exactly what its state machine does.

The journey asks the table before it builds a machine, and the audit replay walks the table
alone; both are right only if the table and the machine agree on every state and event.
"""

from __future__ import annotations

import pytest
from statemachine.exceptions import TransitionNotAllowed

from ueoz_migration.flow import load_flow_file, parse_flow
from ueoz_migration.states import AttemptModel
from ueoz_migration.states.base import StateBehaviour

FLOW = load_flow_file()
BEHAVIOURS = sorted(
    name for name in set(dir(AttemptModel)) - set(dir(StateBehaviour)) if not name.startswith("_")
)


def tiny_model(state: str):
    """A model that holds only a state and records which behaviours the machine calls."""
    calls: list[str] = []

    def behaviour(name):
        def record(*args, **kwargs):
            calls.append(name)

        record.__name__ = name
        return record

    model = type("TinyAttempt", (), {name: behaviour(name) for name in BEHAVIOURS})()
    model.state = state
    return model, calls


def what_the_machine_does(state: str, event: str) -> str | None:
    """Send ``event`` to a machine in ``state``; return its new state, or None if refused."""
    model, calls = tiny_model(state)
    machine = FLOW.machine_class(model=model)
    calls.clear()
    try:
        machine.send(event)
    except TransitionNotAllowed:
        return None
    assert calls or model.state != state, f"{event} in {state} was accepted but did nothing"
    return model.state


@pytest.mark.parametrize("state", FLOW.states)
def test_the_table_is_the_machine_for_every_state_and_event(state):
    events = [*FLOW.events, "an_event_no_flow_has"]

    machine = {event: what_the_machine_does(state, event) for event in events}
    table = {event: FLOW.target(state, event) for event in events}

    assert machine == table


def test_every_state_is_reachable_and_every_non_final_state_can_be_left():
    reached = {FLOW.initial}
    frontier = [FLOW.initial]
    while frontier:
        state = frontier.pop()
        for event in FLOW.allowed_events(state):
            target = FLOW.target(state, event)
            if target not in reached:
                reached.add(target)
                frontier.append(target)

    assert reached == set(FLOW.states)
    assert {state for state in FLOW.states if not FLOW.allowed_events(state)} == set(FLOW.finals)


def test_the_version_is_the_hash_of_the_file_and_changes_with_it():
    edited = parse_flow(FLOW.source + "\n# a comment\n")

    assert len(FLOW.version) == 64
    assert edited.version != FLOW.version
    assert edited.transitions == FLOW.transitions
