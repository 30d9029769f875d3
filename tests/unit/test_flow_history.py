"""This release runs every version of the flow that attempts may still be open under.

Only ``flows/migration.yaml`` is versioned (by its hash): the behaviours it names
(``states/``), the events the service fires (``events.FIRED_BY``) and the screens
(``web/migration.py``) are this release's code, and they serve the attempts still open under
older versions too. ``flows/history/`` keeps every version the project has shipped; a version
is retired from it only once no attempt of it can be open (docs/operations.md, "Changing the
flow").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ueoz_migration.flow import flow_version, load_flow_file, parse_flow
from ueoz_migration.journey import FlowNotRunnable, check_runnable, load_runnable
from ueoz_migration.states import AttemptModel
from ueoz_migration.web.migration import states_without_screen

FLOWS = Path(__file__).resolve().parents[2] / "flows"
HISTORY = sorted((FLOWS / "history").glob("*.yaml"))
FLOW = load_flow_file()


def test_each_version_in_the_history_is_named_by_its_hash():
    assert HISTORY, "flows/history/ holds no version"
    for path in HISTORY:
        assert path.stem == flow_version(path.read_text(encoding="utf-8"))[:12], path.name


def test_the_flow_file_as_it_stands_is_in_the_history():
    kept = {path.stem for path in HISTORY}
    assert FLOW.version[:12] in kept, (
        "flows/migration.yaml changed: copy it to "
        f"flows/history/{FLOW.version[:12]}.yaml (see docs/operations.md, 'Changing the flow')"
    )


@pytest.mark.parametrize("path", HISTORY, ids=[path.stem for path in HISTORY])
def test_this_release_runs_every_version_in_the_history(path):
    flow = parse_flow(path.read_text(encoding="utf-8"))

    check_runnable(flow)  # raises FlowNotRunnable, naming what is missing
    assert states_without_screen(flow) == []


def test_a_version_naming_a_behaviour_this_release_lacks_cannot_run():
    renamed = parse_flow(FLOW.source.replace("start_without_eploz", "begin_without_eploz"))

    with pytest.raises(FlowNotRunnable) as problem:
        check_runnable(renamed)

    assert str(problem.value).startswith(
        f"flow version {renamed.version[:12]} cannot run in this release: "
    )
    assert "'begin_without_eploz'" in str(problem.value)


def test_a_version_with_an_event_nothing_fires_cannot_run():
    renamed = parse_flow(FLOW.source.replace("continue_new", "new_account"))

    with pytest.raises(FlowNotRunnable) as problem:
        check_runnable(renamed)

    assert problem.value.reason == "nothing fires new_account"


def test_a_version_with_a_state_the_pages_cannot_show_is_named():
    renamed = parse_flow(FLOW.source.replace("email_entry", "address_entry"))

    assert states_without_screen(renamed) == ["address_entry"]


def test_a_version_whose_guard_names_no_behaviour_cannot_run():
    guarded = parse_flow(
        FLOW.source.replace(
            "{event: cancel, target: cancelled}",
            '{event: cancel, target: cancelled, cond: "may_cancel and not busy"}',
            1,
        )
    )

    with pytest.raises(FlowNotRunnable) as problem:
        check_runnable(guarded)

    assert problem.value.reason == "no behaviour busy, may_cancel (a guard)"


@pytest.mark.parametrize(
    "guard",
    ["In('searching')", "not is_attempt_open", "search_tries > 1e3 or search_tries == 'x'"],
)
def test_guards_of_the_librarys_grammar_over_names_the_model_has_can_run(guard, monkeypatch):
    monkeypatch.setattr(AttemptModel, "is_attempt_open", True, raising=False)
    monkeypatch.setattr(AttemptModel, "search_tries", 0, raising=False)
    guarded = parse_flow(
        FLOW.source.replace(
            "{event: cancel, target: cancelled}",
            f'{{event: cancel, target: cancelled, cond: "{guard}"}}',
            1,
        )
    )

    check_runnable(guarded)  # a function of the library, a plain attribute, literals: fine


def test_a_definition_this_release_cannot_read_is_not_runnable_and_says_why():
    broken = FLOW.source.replace("target: found", "target: nowhere", 1)

    with pytest.raises(FlowNotRunnable) as problem:
        load_runnable("f" * 64, broken)

    assert str(problem.value).startswith(
        "flow version ffffffffffff cannot run in this release: its definition does not load here: "
    )


def test_checking_a_version_runs_none_of_its_behaviours(monkeypatch):
    behaviours = {
        name
        for name in vars(AttemptModel)
        | {n: None for cls in AttemptModel.__mro__ for n in vars(cls)}
        if not name.startswith("_") and callable(getattr(AttemptModel, name, None))
    }

    def forbidden(*_args, **_kwargs):
        raise AssertionError("a behaviour ran while the version was only being checked")

    for name in behaviours:
        monkeypatch.setattr(AttemptModel, name, forbidden)
    # Including a version whose initial state has an entry behaviour of its own.
    entering = FLOW.source.replace(
        "    initial: true\n", "    initial: true\n    enter: mint_event_number\n"
    )
    assert entering != FLOW.source
    for source in [entering, *(path.read_text(encoding="utf-8") for path in HISTORY)]:
        check_runnable(parse_flow(source))
