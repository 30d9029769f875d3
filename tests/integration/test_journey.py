"""The journey as the service runs it: persisted transitions, refusals, the log they leave."""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.clock import Clock
from tests.factories import (
    ANNA,
    HERMEGILDA,
    add_eploz_account,
    count,
    link_token,
    log_of,
    submit,
    user,
)
from ueoz_migration.audit.replay import replay_log
from ueoz_migration.db.models import (
    Attempt,
    EplozAccount,
    OutboxMessage,
    UeozAccount,
    VerificationLink,
)
from ueoz_migration.journey import EventRefused, Journey


def to_email_entry(services, person=ANNA):
    journey = services.journey
    eploz_id = add_eploz_account(services)
    attempt = journey.start(person, actor=user())
    journey.fire(attempt.id, "account_found", actor=user(), eploz_account_id=eploz_id)
    return journey.fire(attempt.id, "create_account", actor=user())


def test_a_new_attempt_starts_searching_and_logs_its_start(services):
    attempt = services.journey.start(ANNA, actor=user("req-1"))

    assert attempt.state == "searching"
    (row,) = log_of(services, attempt.id)
    assert (row.seq, row.event, row.source, row.target, row.outcome) == (
        1,
        "start",
        "",
        "searching",
        "applied",
    )
    assert (row.actor, row.request_id, row.flow_version) == ("user", "req-1", services.flow.version)


def test_found_account_prefills_the_eploz_email(services):
    attempt = to_email_entry(services)

    assert attempt.state == "email_entry"
    assert attempt.email_prefill == "amicsokol@csioz.pl"


def test_an_event_the_state_does_not_allow_is_refused_and_logged(services):
    attempt = services.journey.start(ANNA, actor=user())

    with pytest.raises(EventRefused) as refused:
        services.journey.fire(attempt.id, "verify", actor=user(), token="x")

    assert refused.value.reason == "not_allowed"
    assert "cancel" in refused.value.allowed
    assert services.journey.get(attempt.id).state == "searching"
    last = log_of(services, attempt.id)[-1]
    assert (last.event, last.outcome, last.source, last.target) == (
        "verify",
        "refused",
        "searching",
        "searching",
    )


def test_an_unknown_event_is_refused_too(services):
    attempt = services.journey.start(ANNA, actor=user())

    with pytest.raises(EventRefused):
        services.journey.fire(attempt.id, "fly_to_the_moon", actor=user())

    assert services.journey.get(attempt.id).state == "searching"


def test_a_final_state_refuses_every_event(services):
    attempt = services.journey.start(ANNA, actor=user())
    services.journey.fire(attempt.id, "cancel", actor=user())

    with pytest.raises(EventRefused):
        services.journey.fire(attempt.id, "cancel", actor=user())
    assert services.journey.get(attempt.id).state == "cancelled"


def test_a_failed_check_changes_nothing(services):
    attempt = to_email_entry(services)

    with pytest.raises(EventRefused) as refused:
        submit(services, attempt.id, email="anna@example.pl", email_repeat="anna@example.com")

    assert refused.value.fields == {"email_repeat": "mismatch"}
    assert services.journey.get(attempt.id).state == "email_entry"
    assert count(services, UeozAccount) == 0
    assert count(services, OutboxMessage) == 0
    assert log_of(services, attempt.id)[-1].outcome == "rejected"


def test_the_two_addresses_agree_whatever_the_case_of_their_letters(services):
    attempt = to_email_entry(services)

    submitted = submit(
        services, attempt.id, email="Julia.Nowak@Example.PL", email_repeat="julia.nowak@example.pl"
    )

    assert submitted.state == "awaiting_verification"
    assert submitted.email == "Julia.Nowak@example.pl"  # as given first, the domain as DNS has it


@pytest.mark.parametrize(
    ("email", "repeat"),
    [
        ("strasse@example.pl", "straße@example.pl"),  # casefold() would make these one
        ("\u03c3ofia@example.gr", "\u03c2ofia@example.gr"),  # σ and ς: casefold() makes one
    ],
)
def test_addresses_that_only_look_alike_do_not_agree(services, email, repeat):
    attempt = to_email_entry(services)

    with pytest.raises(EventRefused) as refused:
        submit(services, attempt.id, email=email, email_repeat=repeat)

    assert refused.value.fields == {"email_repeat": "mismatch"}


def test_search_failure_mints_an_event_number_and_keeps_the_code(services):
    attempt = services.journey.start(HERMEGILDA, actor=user())

    failed = services.journey.fire(attempt.id, "search_failed", actor=user(), code=208)

    assert failed.state == "error"
    assert re.fullmatch(r"MIGRATION_\d{12}", failed.event_number)
    assert failed.event_code == 208
    row = log_of(services, attempt.id)[-1]
    assert (row.event_number, row.event_code) == (failed.event_number, 208)


def test_event_numbers_are_never_reused(services):
    numbers = set()
    for index in range(3):
        person = HERMEGILDA.__class__("X", "Y", None, f"9704011724{index}")
        attempt = services.journey.start(person, actor=user())
        numbers.add(
            services.journey.fire(attempt.id, "search_failed", actor=user(), code=201).event_number
        )
    assert len(numbers) == 3


def test_continue_after_error_starts_with_an_empty_address(services):
    attempt = services.journey.start(HERMEGILDA, actor=user())
    services.journey.fire(attempt.id, "search_failed", actor=user(), code=208)

    attempt = services.journey.fire(attempt.id, "continue_new", actor=user())

    assert (attempt.state, attempt.email_prefill, attempt.eploz_account_id) == (
        "email_entry",
        None,
        None,
    )


def test_submit_creates_an_unverified_account_and_one_email(services):
    attempt = to_email_entry(services)

    attempt = submit(services, attempt.id)

    assert attempt.state == "awaiting_verification"
    with services.sessions() as session:
        account = session.scalars(select(UeozAccount)).one()
        mail = session.scalars(select(OutboxMessage)).one()
    assert (account.email, account.email_verified_at, account.login) == (
        "anna@example.pl",
        None,
        "amicsokol",
    )
    assert account.roles == "P1:LEKARZ;GABINET:ADMIN"
    assert mail.recipient == "anna@example.pl"
    assert "http://localhost/weryfikacja/" in mail.body
    assert '"email": "a***@e***.pl"' in log_of(services, attempt.id)[-1].detail


def test_two_submits_at_once_give_one_account_and_one_email(services):
    attempt = to_email_entry(services)
    outcomes = []
    barrier = threading.Barrier(2)

    def click():
        barrier.wait()
        try:
            submit(services, attempt.id)
            outcomes.append("applied")
        except EventRefused as refused:
            outcomes.append(refused.reason)

    threads = [threading.Thread(target=click) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["applied", "not_allowed"]
    assert count(services, UeozAccount) == 1
    assert count(services, OutboxMessage) == 1
    seqs = [row.seq for row in log_of(services, attempt.id)]
    assert seqs == list(range(1, len(seqs) + 1))


def test_the_link_verifies_once(services):
    attempt = submit(services, to_email_entry(services).id)
    token = link_token(services, attempt.id)

    done = services.journey.fire(attempt.id, "verify", actor=user(), token=token)

    assert done.state == "done"
    with services.sessions() as session:
        assert session.scalars(select(UeozAccount)).one().email_verified_at is not None
    with pytest.raises(EventRefused):
        services.journey.fire(attempt.id, "verify", actor=user(), token=token)


def test_a_resent_link_retires_the_old_one(services):
    attempt = submit(services, to_email_entry(services).id)
    old = link_token(services, attempt.id)
    services.journey.fire(attempt.id, "resend", actor=user())
    new = link_token(services, attempt.id)

    with pytest.raises(EventRefused) as refused:
        services.journey.fire(attempt.id, "verify", actor=user(), token=old)

    assert refused.value.reason == "link_retired"
    assert services.journey.fire(attempt.id, "verify", actor=user(), token=new).state == "done"


def test_resend_is_limited_per_hour(services):
    attempt = submit(services, to_email_entry(services).id)
    limit = services.settings.resend_limit_per_hour
    for _ in range(limit - 1):
        services.journey.fire(attempt.id, "resend", actor=user())

    with pytest.raises(EventRefused) as refused:
        services.journey.fire(attempt.id, "resend", actor=user())

    assert refused.value.reason == "resend_limit"
    assert count(services, OutboxMessage) == limit


def test_cancelling_and_logging_in_again_starts_no_new_count_of_links(services):
    # Otherwise each new login would mail the limit again to the same mailbox.
    journey = services.journey
    attempt = submit(services, to_email_entry(services).id)
    for _ in range(services.settings.resend_limit_per_hour - 1):
        journey.fire(attempt.id, "resend", actor=user())
    journey.fire(attempt.id, "change_email", actor=user())
    journey.fire(attempt.id, "cancel", actor=user())

    again = journey.start(ANNA, actor=user())  # a new attempt, a new search
    journey.fire(again.id, "account_found", actor=user(), eploz_account_id=_anna_account(services))
    journey.fire(again.id, "create_account", actor=user())
    with pytest.raises(EventRefused) as refused:
        submit(services, again.id)

    assert refused.value.reason == "resend_limit"
    assert count(services, OutboxMessage) == services.settings.resend_limit_per_hour
    assert submit(services, again.id, "anna.k@example.pl").state == "awaiting_verification"


def _anna_account(services) -> int:
    with services.sessions() as session:
        return session.scalar(select(EplozAccount.id))


def test_the_resend_limit_frees_up_an_hour_after_the_links(services):
    # The refusal tells the person to try again in an hour; then a link must go out.
    clock = Clock()
    services.journey.clock = clock
    attempt = submit(services, to_email_entry(services).id)  # the first link
    limit = services.settings.resend_limit_per_hour
    for _ in range(limit - 1):
        services.journey.fire(attempt.id, "resend", actor=user())
    clock.advance(minutes=59)
    with pytest.raises(EventRefused) as refused:
        services.journey.fire(attempt.id, "resend", actor=user())
    assert refused.value.reason == "resend_limit"

    clock.advance(minutes=1)  # an hour after the links went out
    resent = services.journey.fire(attempt.id, "resend", actor=user())

    assert resent.state == "awaiting_verification"
    assert count(services, OutboxMessage) == limit + 1
    token = link_token(services, attempt.id)  # the new e-mail's link is the one that works
    assert services.journey.fire(attempt.id, "verify", actor=user(), token=token).state == "done"


def test_an_expired_link_is_refused(services):
    attempt = submit(services, to_email_entry(services).id)
    token = link_token(services, attempt.id)
    journey = services.journey
    journey.clock = lambda: _later(services, hours=25)

    with pytest.raises(EventRefused) as refused:
        journey.fire(attempt.id, "verify", actor=user(), token=token)

    assert refused.value.reason == "link_expired"


def _later(services, hours):
    from ueoz_migration.journey import utcnow

    return utcnow() + timedelta(hours=hours)


def test_changing_the_address_kills_the_link(services):
    attempt = submit(services, to_email_entry(services).id)
    token = link_token(services, attempt.id)
    services.journey.fire(attempt.id, "change_email", actor=user())
    submit(services, attempt.id, email="anna.nowy@example.pl")

    with pytest.raises(EventRefused) as refused:
        services.journey.fire(attempt.id, "verify", actor=user(), token=token)

    assert refused.value.reason == "link_retired"
    with services.sessions() as session:
        assert session.scalars(select(UeozAccount.email)).one() == "anna.nowy@example.pl"
        assert session.scalar(select(func.count()).select_from(VerificationLink)) == 2


def test_one_open_attempt_per_person(services):
    first = services.journey.start(ANNA, actor=user())
    second = services.journey.start(ANNA, actor=user())

    assert first.id == second.id
    assert count(services, Attempt) == 1


def test_a_migrated_person_skips_the_flow(services):
    attempt = submit(services, to_email_entry(services).id)
    services.journey.fire(
        attempt.id, "verify", actor=user(), token=link_token(services, attempt.id)
    )

    again = services.journey.start(ANNA, actor=user())

    assert again.id != attempt.id
    assert again.state == "skipped"
    assert [row.event for row in log_of(services, again.id)] == ["start", "skip"]


def test_an_abandoned_attempt_expires(services):
    attempt = services.journey.start(ANNA, actor=user())
    services.journey.clock = lambda: _later(services, hours=100)

    assert services.journey.expire_stale() == (1, 0)

    expired = services.journey.get(attempt.id)
    assert expired.state == "expired"
    assert expired.open_pesel_key is None
    assert log_of(services, attempt.id)[-1].actor == "system"


def test_a_login_as_another_tab_cancels_starts_a_new_attempt(services, monkeypatch):
    # The login found the open attempt; the person's Anuluj in another tab ends it before the
    # login takes it up. The login goes on with a new attempt, not the cancelled one.
    journey = services.journey
    first = journey.start(ANNA, actor=user())
    real_open_attempt = Journey._open_attempt

    def found_then_cancelled(self, key):
        found = real_open_attempt(self, key)
        if found is not None and found.id == first.id:
            journey.fire(first.id, "cancel", actor=user("tab-2"))
        return found

    monkeypatch.setattr(Journey, "_open_attempt", found_then_cancelled)

    again = journey.start(ANNA, actor=user(), domain_system="P1")

    assert again.id != first.id
    assert (again.state, again.domain_system) == ("searching", "P1")
    assert journey.get(first.id).state == "cancelled"


def test_a_returning_person_after_expiry_gets_a_new_attempt(services):
    attempt = services.journey.start(ANNA, actor=user())
    services.journey.clock = lambda: _later(services, hours=100)

    again = services.journey.start(ANNA, actor=user())

    assert again.id != attempt.id
    assert services.journey.get(attempt.id).state == "expired"


def test_a_step_keeps_the_attempt_open_past_its_first_72_hours(services):
    clock = Clock()
    services.journey.clock = clock
    attempt = to_email_entry(services)
    assert services.settings.attempt_ttl == timedelta(hours=72)
    clock.advance(hours=60)
    submit(services, attempt.id)  # the person comes back and gives an address

    clock.advance(hours=40)  # 100 h after the start, 40 h after the last step

    assert services.journey.expire_stale() == (0, 0)
    resumed = services.journey.start(ANNA, actor=user())  # a login finds it where it was
    assert (resumed.id, resumed.state) == (attempt.id, "awaiting_verification")
    assert count(services, Attempt) == 1


def test_an_attempt_expires_72_hours_after_its_last_step(services):
    clock = Clock()
    services.journey.clock = clock
    attempt = to_email_entry(services)
    clock.advance(hours=60)
    submit(services, attempt.id)  # the last step: 60 h after the start

    clock.advance(hours=71, minutes=59)
    assert services.journey.expire_stale() == (0, 0)
    assert services.journey.get(attempt.id).state == "awaiting_verification"
    clock.advance(minutes=1)  # 72 h after the last step
    assert services.journey.expire_stale() == (1, 0)

    assert services.journey.get(attempt.id).state == "expired"
    assert log_of(services, attempt.id)[-1].actor == "system"
    again = services.journey.start(ANNA, actor=user())  # a login now starts afresh
    assert again.id != attempt.id
    assert again.state == "searching"


def test_a_click_after_the_attempt_ran_out_of_time_finds_it_expired(services):
    # The sweep has not come by yet: the click ends the attempt just as the sweep would
    # have, and is refused there. The person then sees the expired attempt, never a step
    # taken on one that was over.
    clock = Clock()
    services.journey.clock = clock
    attempt = to_email_entry(services)
    clock.advance(hours=72)

    with pytest.raises(EventRefused) as refused:
        submit(services, attempt.id)

    assert (refused.value.reason, refused.value.attempt.state) == ("not_allowed", "expired")
    assert count(services, UeozAccount) == 0
    *_, expire, refused_submit = log_of(services, attempt.id)
    assert (expire.event, expire.actor, expire.target) == ("expire", "user", "expired")
    assert (refused_submit.event, refused_submit.outcome) == ("submit", "refused")
    assert services.journey.expire_stale() == (0, 0)
    with services.sessions() as session:
        assert replay_log(session, [attempt.id]).ok


def test_a_check_refusing_an_event_while_another_tab_moves_the_attempt_replays_clean(
    services, monkeypatch
):
    # Tab 1 submits an address that does not repeat; its check turns the submit down, and
    # before the refusal is written, tab 2's Anuluj is applied. The refusal is then the
    # flow's, in `cancelled`: the log never shows a check deciding in a state it did not see.
    journey = services.journey
    attempt = to_email_entry(services)
    real_refuse, tabs = Journey._refuse, []

    def tab_2_cancels_first(self, *args, **kwargs):
        if not tabs:
            tabs.append(journey.fire(attempt.id, "cancel", actor=user("tab-2")))
        return real_refuse(self, *args, **kwargs)

    monkeypatch.setattr(Journey, "_refuse", tab_2_cancels_first)

    with pytest.raises(EventRefused) as refused:
        submit(services, attempt.id, email_repeat="other@example.pl", actor=user("tab-1"))

    assert (refused.value.reason, refused.value.attempt.state) == ("not_allowed", "cancelled")
    *_, cancel, tab_1 = log_of(services, attempt.id)
    assert (cancel.event, cancel.outcome, cancel.request_id) == ("cancel", "applied", "tab-2")
    assert (tab_1.event, tab_1.source, tab_1.outcome) == ("submit", "cancelled", "refused")
    assert tab_1.at >= cancel.at
    with services.sessions() as session:
        assert replay_log(session, [attempt.id]).ok


def test_clicks_queued_on_one_attempt_are_logged_in_time_order(services):
    attempt = to_email_entry(services)
    barrier = threading.Barrier(6)

    def click() -> None:
        barrier.wait()
        for _ in range(7):  # 42 refusals: all chained (under CHAINED_REFUSALS)
            with pytest.raises(EventRefused):
                services.journey.fire(attempt.id, "verify", actor=user(), token="x")

    threads = [threading.Thread(target=click) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    times = [row.at for row in log_of(services, attempt.id)]
    assert len(times) == 3 + 42
    assert times == sorted(times)


def test_an_attempt_keeps_the_flow_version_it_started_on(services):
    from ueoz_migration.flow import parse_flow
    from ueoz_migration.journey import Journey

    old = services.journey.start(ANNA, actor=user())
    changed = services.flow.source.replace("description: Move", "description: (a later edit) Move")
    later = Journey(
        services.sessions,
        flow=parse_flow(changed),
        policy=services.policy,
        audit_key=services.settings.audit_key,
        pesel_key=services.settings.pesel_key,
        mail=services.journey.mail,
    )

    later.fire(old.id, "cancel", actor=user())  # runs on the version it started on
    new = later.start(HERMEGILDA, actor=user())

    assert later.flow.version != services.flow.version
    assert {row.flow_version for row in log_of(services, old.id)} == {services.flow.version}
    assert {row.flow_version for row in log_of(services, new.id)} == {later.flow.version}
    with services.sessions() as session:  # both replay, each against its own version
        assert replay_log(session, [old.id, new.id]).ok


def test_the_flow_is_recorded_even_when_the_first_attempt_of_a_process_fails(services, monkeypatch):
    from ueoz_migration.db.models import FlowVersion

    journey = services.journey  # as a process starts: nothing recorded yet

    def database_gone(*_args, **_kwargs):
        raise RuntimeError("the connection dropped")

    monkeypatch.setattr(journey, "_append", database_gone)
    with pytest.raises(RuntimeError):
        journey.start(ANNA, actor=user())  # rolled back: no attempt
    monkeypatch.undo()
    attempt = journey.start(HERMEGILDA, actor=user())

    assert count(services, Attempt) == 1
    assert count(services, FlowVersion, FlowVersion.version == attempt.flow_version) == 1
    with services.sessions() as session:  # so its log replays against its definition
        assert replay_log(session, [attempt.id]).ok


def test_an_eploz_account_held_meanwhile_by_another_ueoz_account_changes_nothing(services):
    attempt = to_email_entry(services)
    with services.sessions() as session, session.begin():
        # Meanwhile the e-PLOZ account went to someone else's UEOZ account.
        session.add(
            UeozAccount(
                pesel="97040117247",
                pesel_hash="another-person",
                given_names="X",
                family_name="Y",
                email="x@example.pl",
                eploz_account_id=attempt.eploz_account_id,
                created_at=attempt.created_at,
            )
        )

    with pytest.raises(EventRefused) as refused:
        submit(services, attempt.id)

    assert refused.value.reason == "conflict"
    assert services.journey.get(attempt.id).state == "email_entry"
    assert count(services, UeozAccount) == 1
    assert count(services, OutboxMessage) == 0
    assert count(services, VerificationLink) == 0
    assert log_of(services, attempt.id)[-1].outcome == "rejected"
