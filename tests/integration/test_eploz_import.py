"""Loading e-PLOZ's export with `ueoz-migration eploz import`, as an operator runs it."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from stdnum.pl import pesel

from tests.conftest import TEST_KEY
from tests.factories import link_token, search_worker, submit, user
from ueoz_migration.cli import main
from ueoz_migration.db.engine import transaction
from ueoz_migration.db.models import EplozAccount, UeozAccount
from ueoz_migration.demo import DEMO_PEOPLE
from ueoz_migration.domain.identity import Person
from ueoz_migration.journey import Actor, EventRefused

DATA = Path(__file__).resolve().parent.parent / "data"
GOOD = DATA / "eploz_export.csv"
BAD = DATA / "eploz_export_bad.csv"


@pytest.fixture
def cli(tmp_path, database_url):
    """Run the command line against the test database, as an operator would."""

    def run(*args: str):
        environ = {
            "APP_ENV": "test",
            "DATABASE_URL": database_url,
            "INSTANCE_DIR": str(tmp_path / "instance"),
            "SECRET_KEY": "test-secret",
            "AUDIT_KEY": TEST_KEY,
            "BASE_URL": "http://ueoz.test",
        }
        return CliRunner().invoke(main, list(args), env=environ, catch_exceptions=False)

    return run


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def accounts(services):
    with services.sessions() as session:
        return {row.login: row for row in session.scalars(select(EplozAccount))}


def test_an_export_with_a_bom_and_crlf_is_imported(cli, services):
    result = cli("eploz", "import", str(GOOD))

    assert result.exit_code == 0, result.output
    assert "6 added, 0 updated, 0 unchanged (6 rows)" in result.output
    stored = accounts(services)
    assert sorted(stored) == [
        "amicsokol",
        "hgrabowska",
        "jkowalski",
        "kwisniewska",
        "tlewandowski",
        "tlewandowski2",
    ]
    anna = stored["amicsokol"]
    assert (anna.pesel, anna.first_name, anna.last_name, anna.email, anna.status, anna.roles) == (
        "87042712342",
        "Anna",
        "MICKIEWICZ - SOKOLOWSKA",
        "amicsokol@csioz.pl",
        "active",
        "P1:LEKARZ;GABINET:ADMIN",
    )
    assert stored["kwisniewska"].last_name == "Wiśniewska, dr"  # a quoted comma stays in


def test_an_empty_email_and_a_blocked_status_are_kept(cli, services):
    cli("eploz", "import", str(GOOD))

    stored = accounts(services)
    assert stored["hgrabowska"].email == ""
    assert (stored["jkowalski"].status, stored["jkowalski"].roles) == ("blocked", "")


def test_two_logins_may_share_a_pesel(cli, services):
    cli("eploz", "import", str(GOOD))

    stored = accounts(services)
    assert stored["tlewandowski"].pesel == stored["tlewandowski2"].pesel == "90010114419"


def test_a_file_of_one_account_says_one_row(cli, tmp_path):
    header, first = GOOD.read_bytes().splitlines(keepends=True)[:2]

    result = cli("eploz", "import", str(write(tmp_path / "one.csv", header + first)))

    assert result.exit_code == 0, result.output
    assert result.output.endswith("1 added, 0 updated, 0 unchanged (1 row)\n")


def test_importing_the_same_file_again_changes_nothing(cli, services):
    cli("eploz", "import", str(GOOD))
    before = {login: row.imported_at for login, row in accounts(services).items()}

    result = cli("eploz", "import", str(GOOD))

    assert result.exit_code == 0
    assert "0 added, 0 updated, 6 unchanged (6 rows)" in result.output
    assert {login: row.imported_at for login, row in accounts(services).items()} == before


def test_a_changed_row_is_updated_in_place(cli, services, tmp_path):
    cli("eploz", "import", str(GOOD))
    anna_id = accounts(services)["amicsokol"].id
    changed = tmp_path / "changed.csv"
    changed.write_text(
        GOOD.read_text(encoding="utf-8-sig").replace(
            "amicsokol@csioz.pl,active", "amicsokol@csioz.pl,blocked"
        ),
        encoding="utf-8",
    )

    result = cli("eploz", "import", str(changed))

    assert "0 added, 1 updated, 5 unchanged" in result.output
    anna = accounts(services)["amicsokol"]
    assert (anna.id, anna.status) == (anna_id, "blocked")


def test_a_bad_file_is_refused_with_every_bad_line_named_and_nothing_imported(cli, services):
    result = cli("eploz", "import", str(BAD))

    assert result.exit_code != 0
    output = result.output
    assert "nothing imported" in output
    for expected in (
        "line 3, column pesel: not a valid PESEL (wrong check digit)",
        "line 4, column email: not a valid e-mail address",
        "line 5, column status: not active or blocked",
        "line 6, column login: the same login as line 2",
        "line 7, column last_name: empty",
        "line 7, column roles: grant 1 is not SYSTEM:ROLE",
        "line 8: 3 fields, expected 7",
    ):
        assert expected in output
    assert "line 2" not in output.replace("as line 2", "")  # the good first row is not blamed
    assert accounts(services) == {}


def test_a_refusal_never_prints_a_pesel_or_an_email(cli):
    output = cli("eploz", "import", str(BAD)).output

    for secret in ("97040117248", "82091503682", "jan.kowalski@@example", "kw@example.pl"):
        assert secret not in output


def test_a_bad_file_leaves_an_earlier_import_as_it_was(cli, services):
    cli("eploz", "import", str(GOOD))
    before = {login: row.status for login, row in accounts(services).items()}

    cli("eploz", "import", str(BAD))

    assert {login: row.status for login, row in accounts(services).items()} == before


def test_a_file_that_is_not_utf8_names_its_lines(cli, services, tmp_path):
    latin2 = tmp_path / "latin2.csv"
    latin2.write_bytes(
        b"login,pesel,first_name,last_name,email,status,roles\n"
        b"kw,82091503682,Katarzyna,Wi\xb6niewska,,active,\n"
    )

    result = cli("eploz", "import", str(latin2))

    assert result.exit_code != 0
    assert "line 2: not UTF-8 text" in result.output
    assert accounts(services) == {}


def test_a_wrong_header_is_refused(cli, services, tmp_path):
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("login;pesel;first_name\nx;87042712342;Anna\n", encoding="utf-8")

    result = cli("eploz", "import", str(wrong))

    assert result.exit_code != 0
    assert "line 1: missing column" in result.output
    assert accounts(services) == {}


def test_an_export_without_its_header_row_is_refused_without_quoting_anyone(
    cli, services, tmp_path
):
    headless = b"".join(GOOD.read_bytes().splitlines(keepends=True)[1:])

    result = cli("eploz", "import", str(write(tmp_path / "headless.csv", headless)))

    assert result.exit_code != 0
    assert "line 1: missing column login, pesel" in result.output
    assert "the first line is not a header row" in result.output
    first = headless.split(b"\n", 1)[0].decode().split(",")
    assert first[1] not in result.output and "@" not in result.output  # PESEL, address
    assert accounts(services) == {}


def test_values_in_the_wrong_column_are_not_quoted(cli, services, tmp_path):
    shifted = tmp_path / "shifted.csv"
    shifted.write_text(
        "login,pesel,first_name,last_name,email,status,roles\n"
        "jk,97040117247,Jan,Kowalski,active,jan@example.pl,jan@example.pl\n"
        "ak,97040117247,Anna,Nowak,a@example.pl,Nowak,ADMIN:X;Anna Nowak 1956-03-14\n",
        encoding="utf-8",
    )

    output = cli("eploz", "import", str(shifted)).output

    assert "line 2, column status: not active or blocked" in output
    assert "line 2, column roles: grant 1 is not SYSTEM:ROLE" in output
    assert "line 3, column status: not active or blocked" in output
    assert "line 3, column roles: grant 2 is not SYSTEM:ROLE" in output
    for personal in ("jan@example.pl", "Nowak", "Anna", "1956"):
        assert personal not in output


def test_an_unknown_column_is_named_by_its_position(cli, services, tmp_path):
    odd = tmp_path / "odd.csv"
    odd.write_text(
        "login,pesel,first_name,last_name,email,status,roles,Anna Nowak 1956-03-14\n",
        encoding="utf-8",
    )

    output = cli("eploz", "import", str(odd)).output

    assert "line 1: unknown column at position 8" in output
    assert "Anna" not in output and "1956" not in output


def test_a_repeated_unknown_column_is_not_quoted_either(cli, services, tmp_path):
    odd = tmp_path / "odd.csv"
    odd.write_text(
        "login,pesel,first_name,last_name,email,status,roles,roles,Kowalski,Kowalski\n",
        encoding="utf-8",
    )

    output = cli("eploz", "import", str(odd)).output

    assert "unknown column at position 9, 10" in output
    assert "repeated column roles" in output
    assert "Kowalski" not in output


def test_a_control_character_is_a_named_bad_line_on_both_databases(cli, services, tmp_path):
    nul = tmp_path / "nul.csv"
    nul.write_bytes(
        b"login,pesel,first_name,last_name,email,status,roles\n"
        b"ok1,97040117247,Jan,Kowalski,,active,\n"
        b"ok2,97040117247,Ja\x00n,Kowalski,,active,\n"
    )

    result = cli("eploz", "import", str(nul))

    assert result.exit_code == 1
    assert "line 3, column first_name: contains a control character" in result.output
    assert "97040117247" not in result.output and "Traceback" not in result.output
    assert accounts(services) == {}


def test_an_empty_file_is_refused(cli, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")

    result = cli("eploz", "import", str(empty))

    assert result.exit_code != 0
    assert "line 1: the file is empty" in result.output


def test_a_csv_syntax_error_does_not_hide_the_bad_lines_after_it(cli, services, tmp_path):
    # Each physical line is read on its own: a stray quote costs its own line, and a quoted
    # field that would run on into the next lines is the problem of the line that opens it.
    broken = write(
        tmp_path / "broken.csv",
        b"login,pesel,first_name,last_name,email,status,roles\r\n"
        b'amicsokol,"87042712342"7,Anna,Mickiewicz,amicsokol@csioz.pl,active,P1:LEKARZ\r\n'
        b'hgrabowska,97040117247,Helena,"Grabowska,,active,P1:PIELEGNIARKA\r\n'
        b"jkowalski,75031205191,Jan,Kowalski,,blocked,\r\n"
        b"tlewandowski,90010114418,Tomasz,Lewandowski,tl@example.pl,active,P1:LEKARZ\r\n"
        b"kwisniewska,82091503682,Katarzyna,Wisniewska,,suspended,\r\n"
        b'jkowalski,75031205191,Jan,"Kowalski",,blocked,\r\n',
    )

    result = cli("eploz", "import", str(broken))

    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: {broken} refused, nothing imported (5 bad lines):",
        "  line 2: not valid CSV (',' expected after '\"')",
        "  line 3: not valid CSV (a quoted field does not end on this line)",
        "  line 5, column pesel: not a valid PESEL (wrong check digit)",
        "  line 6, column status: not active or blocked",
        "  line 7, column login: the same login as line 4",
    ]
    for secret in ("87042712342", "97040117247", "90010114418", "@"):
        assert secret not in result.output
    assert accounts(services) == {}


HEADER = b"login,pesel,first_name,last_name,email,status,roles"


def test_invisible_and_line_breaking_characters_are_named_by_code_point(cli, services, tmp_path):
    # A name holding one never agrees with the node's (code 202/203 for nothing). A no-break
    # space inside a name, Polish letters and hyphens are a name's own.
    good = (
        "amicsokol,87042712342,Anna\u00a0Maria,Mickiewicz-Sokołowska,amicsokol@csioz.pl,active,\n"
        "hgrabowska,97040117247,Helena,Grabowska-Żółć\u00a0,,active,P1:PIELEGNIARKA\n"
    )
    bad = (
        "jkowalski,75031205191,Jan,Kowal\u0085ski,,active,\n"  # NEL, a C1 control
        "tlewandowski,90010114419,Tomasz\u2029,Lewandowski\u2028\u200b,,active,\n"
        "kwisniewska,82091503682,Katarzyna,Wiś\u00adniewska,,active,P1:\x9fLEKARZ\n"
        "\ufeffnowak,82091503682,Ewa,Nowak,\u200enowak@example.pl,active,\n"
    )
    export = write(tmp_path / "invisible.csv", HEADER + b"\n" + (good + bad).encode())

    result = cli("eploz", "import", str(export))

    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: {export} refused, nothing imported (4 bad lines):",
        "  line 4, column last_name: contains a control character (U+0085)",
        "  line 5, column first_name: contains a paragraph separator (U+2029)",
        "  line 5, column last_name: contains a line separator (U+2028) and an invisible "
        "format character (U+200B)",
        "  line 6, column last_name: contains an invisible format character (U+00AD)",
        "  line 6, column roles: contains a control character (U+009F)",
        "  line 7, column login: contains an invisible format character (U+FEFF)",
        "  line 7, column email: contains an invisible format character (U+200E)",
        "  line 7, column email: not a valid e-mail address",
    ]
    assert accounts(services) == {}

    result = cli(
        "eploz", "import", str(write(tmp_path / "good.csv", HEADER + b"\n" + good.encode()))
    )

    assert result.exit_code == 0, result.output
    stored = accounts(services)
    assert stored["amicsokol"].first_name == "Anna\u00a0Maria"
    assert stored["amicsokol"].last_name == "Mickiewicz-Sokołowska"
    assert stored["hgrabowska"].last_name == "Grabowska-Żółć"  # stripped at the end, as spaces


def test_a_line_that_is_not_utf8_does_not_hide_the_other_bad_lines(cli, services, tmp_path):
    export = write(
        tmp_path / "mixed.csv",
        HEADER + b"\n"
        b"amicsokol,87042712342,Anna,Mickiewicz,amicsokol@csioz.pl,active,P1:LEKARZ\n"
        b"hgrabowska,97040117247,Helena,Grabowska,,suspended,\n"
        b"kwisniewska,82091503682,Katarzyna,Wi\xb6niewska,,active,\n"
        b"jkowalski,75031205192,Jan,Kowalski,,blocked,\n"
        b"amicsokol,90010114419,Tomasz,Lewandowski,,active,\n",
    )

    result = cli("eploz", "import", str(export))

    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: {export} refused, nothing imported (4 bad lines):",
        "  line 3, column status: not active or blocked",
        "  line 4: not UTF-8 text",
        "  line 5, column pesel: not a valid PESEL (wrong check digit)",
        "  line 6, column login: the same login as line 2",
    ]
    assert accounts(services) == {}


@pytest.mark.parametrize("end", [b"\r", b"\n", b"\r\n"], ids=["CR", "LF", "CRLF"])
def test_lines_are_numbered_as_the_parser_reads_them_whatever_the_line_ends(
    cli, services, tmp_path, end
):
    lines = [
        b"\xef\xbb\xbf" + HEADER,  # a byte order mark opens the file
        b"amicsokol,87042712342,Anna,Mickiewicz,amicsokol@csioz.pl,active,P1:LEKARZ",
        b"kwisniewska,82091503682,Katarzyna,Wi\xb6niewska,,active,",
        b"",
        b"hgrabowska,97040117247,Helena,Grabowska,,suspended,",
        b"jkowalski,75031205191,Jan,Kowal\xc2\x85ski,,blocked,",  # NEL: a character, no line end
    ]
    export = write(tmp_path / "ends.csv", end.join(lines) + end)

    result = cli("eploz", "import", str(export))

    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: {export} refused, nothing imported (3 bad lines):",
        "  line 3: not UTF-8 text",
        "  line 5, column status: not active or blocked",
        "  line 6, column last_name: contains a control character (U+0085)",
    ]
    assert accounts(services) == {}


# -- the demo data ------------------------------------------------------------------------


def test_seed_demo_loads_every_branch_once(cli, services):
    first = cli("eploz", "seed-demo")
    again = cli("eploz", "seed-demo")

    assert first.exit_code == 0, first.output
    assert "e-PLOZ accounts 10 added, 0 updated, 0 unchanged; UEOZ accounts 1 added" in first.output
    assert "e-PLOZ accounts 0 added, 0 updated, 10 unchanged; UEOZ accounts 0 added" in again.output
    assert accounts(services)["amicsokol"].last_name == "MICKIEWICZ - SOKOLOWSKA"
    with services.sessions() as session:
        (holder,) = session.scalars(select(UeozAccount)).all()
    assert holder.email_verified_at is not None
    assert holder.eploz_account_id == accounts(services)["mkaczmarek"].id
    assert holder.pesel != accounts(services)["mkaczmarek"].pesel  # another person: code 206


def test_every_demo_pesel_is_valid_and_agrees_with_the_date_of_birth():
    for demo in DEMO_PEOPLE:
        assert pesel.is_valid(demo.person.pesel), demo.label
        assert pesel.get_birth_date(demo.person.pesel) == demo.person.date_of_birth, demo.label


def test_the_demo_people_include_the_manuals_two():
    people = {demo.person.pesel: demo for demo in DEMO_PEOPLE}
    anna = next(demo for demo in DEMO_PEOPLE if demo.person.family_name == "Mickiewicz-Sokołowska")
    assert anna.person.given_names == "Anna Maria"
    assert anna.person.date_of_birth == date(1987, 4, 27)
    (row,) = anna.eploz_rows
    assert (row["login"], row["first_name"], row["last_name"], row["email"]) == (
        "amicsokol",
        "Anna",
        "MICKIEWICZ - SOKOLOWSKA",
        "amicsokol@csioz.pl",
    )
    hermegilda = people["97040117247"]
    assert (hermegilda.person.given_names, hermegilda.person.family_name) == (
        "HERMEGILDA",
        "DLIGEMREH",
    )
    assert hermegilda.person.date_of_birth == date(1997, 4, 1)
    assert hermegilda.label.startswith("208")


def test_a_database_failure_during_an_import_is_one_line_without_data(cli, monkeypatch):
    # Two imports at once can deadlock on PostgreSQL; the database can go away.
    from sqlalchemy.exc import OperationalError

    from ueoz_migration.adapters import eploz

    def deadlocked(*_args, **_kwargs):
        raise OperationalError(
            "INSERT INTO eploz_accounts …", {"pesel": "87042712342"}, Exception("deadlock")
        )

    monkeypatch.setattr(eploz, "import_accounts", deadlocked)

    result = cli("eploz", "import", str(GOOD))

    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: {GOOD}: the database did not take the import (OperationalError); "
        "nothing imported. Is it reachable and upgraded (ueoz-migration db upgrade)? "
        "Then run it again"
    )


def test_an_import_into_a_database_never_upgraded_says_to_upgrade_it(tmp_path):
    environ = {
        "APP_ENV": "test",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}",
        "INSTANCE_DIR": str(tmp_path / "instance"),
    }

    result = CliRunner().invoke(main, ["eploz", "import", str(GOOD)], env=environ)

    assert result.exit_code == 1
    assert result.output == (
        f"Error: {GOOD}: the database did not take the import (OperationalError); "
        "nothing imported. Is it reachable and upgraded (ueoz-migration db upgrade)? "
        "Then run it again\n"
    )


def test_a_file_that_cannot_be_read_is_one_line(cli, monkeypatch):
    # Found and readable when click checked it, then the read fails (an I/O error, a file
    # on a network share gone meanwhile).
    def broken(_path, *_args, **_kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(Path, "open", broken)

    result = cli("eploz", "import", str(GOOD))

    assert result.exit_code == 1
    assert result.output == f"Error: cannot read {GOOD}: Input/output error; nothing imported\n"


# -- a full export (--full) ---------------------------------------------------------------

TOMASZ = Person("Tomasz", "Lewandowski", date(1990, 1, 1), "90010114419")
HELENA = Person("Helena", "Grabowska", date(1997, 4, 1), "97040117247")
ANNA = Person("Anna Maria", "Mickiewicz-Sokołowska", date(1987, 4, 27), "87042712342")


def export_without(tmp_path: Path, *logins: str) -> Path:
    """GOOD as a later export that no longer lists ``logins``."""
    lines = GOOD.read_bytes().splitlines(keepends=True)
    kept = [line for line in lines if line.split(b",", 1)[0].decode().strip('"') not in logins]
    assert len(kept) == len(lines) - len(logins)
    return write(tmp_path / "later.csv", b"".join(kept))


def search_for(services, person: Person):
    """The person logs in and the search worker looks them up; return their attempt."""
    attempt = services.journey.start(person, actor=user())
    search_worker(services).run_once()
    return services.journey.get(attempt.id)


def test_without_full_accounts_not_in_the_file_are_kept(cli, services, tmp_path):
    cli("eploz", "import", str(GOOD))
    later = export_without(tmp_path, "tlewandowski2")

    result = cli("eploz", "import", str(later))

    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        f"imported {later}: 0 added, 0 updated, 5 unchanged (5 rows); "
        "1 account not in the file kept"
    )
    assert "tlewandowski2" in accounts(services)


def test_full_removes_an_unlisted_account_so_a_person_who_got_204_now_matches(
    cli, services, tmp_path
):
    cli("eploz", "import", str(GOOD))  # tlewandowski and tlewandowski2 share Tomasz's PESEL
    before = search_for(services, TOMASZ)
    assert (before.state, before.event_code) == ("error", 204)
    services.journey.fire(before.id, "cancel", actor=user())
    later = export_without(tmp_path, "tlewandowski2")  # e-PLOZ deleted the second account

    result = cli("eploz", "import", "--full", str(later))

    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        f"imported {later}: 0 added, 0 updated, 5 unchanged (5 rows); "
        "not in the file: 1 removed, 0 kept (held by a UEOZ account or an open attempt)"
    )
    stored = accounts(services)
    assert "tlewandowski2" not in stored and len(stored) == 5
    after = search_for(services, TOMASZ)
    assert (after.state, after.event_code) == ("found", None)
    assert after.eploz_account_id == stored["tlewandowski"].id


def test_full_keeps_unlisted_accounts_held_by_a_ueoz_account_or_an_open_attempt(
    cli, services, tmp_path
):
    cli("eploz", "import", str(GOOD))
    # Anna migrated to the end (her UEOZ account holds amicsokol); Helena's attempt has
    # found hgrabowska and waits for her to go on.
    anna = search_for(services, ANNA)
    services.journey.fire(anna.id, "create_account", actor=user())
    submit(services, anna.id)
    token = link_token(services, anna.id)
    assert services.journey.fire(anna.id, "verify", actor=user(), token=token).state == "done"
    helena = search_for(services, HELENA)
    assert helena.state == "found"
    later = export_without(tmp_path, "amicsokol", "hgrabowska", "tlewandowski2")

    result = cli("eploz", "import", "--full", str(later))

    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        f"imported {later}: 0 added, 0 updated, 3 unchanged (3 rows); "
        "not in the file: 1 removed, 2 kept (held by a UEOZ account or an open attempt)"
    )
    stored = accounts(services)
    assert sorted(stored) == ["amicsokol", "hgrabowska", "jkowalski", "kwisniewska", "tlewandowski"]
    with services.sessions() as session:
        (ueoz,) = session.scalars(select(UeozAccount)).all()
    assert ueoz.eploz_account_id == stored["amicsokol"].id
    assert services.journey.get(helena.id).eploz_account_id == stored["hgrabowska"].id


def test_full_removes_an_account_only_ended_attempts_point_at(cli, services, tmp_path):
    # Tomasz once found tlewandowski, then cancelled; later e-PLOZ gives him a second account
    # (204), then deletes the first. Its history stays; the search no longer sees it.
    first = export_without(tmp_path, "tlewandowski2")
    cli("eploz", "import", str(first))
    found = search_for(services, TOMASZ)
    assert found.state == "found"
    services.journey.fire(found.id, "cancel", actor=user())
    cli("eploz", "import", str(GOOD))
    duplicates = search_for(services, TOMASZ)
    assert duplicates.event_code == 204
    services.journey.fire(duplicates.id, "cancel", actor=user())  # Anuluj, as the desk advises
    later = tmp_path / "later-still.csv"
    later.write_bytes(export_without(tmp_path, "tlewandowski").read_bytes())

    result = cli("eploz", "import", "--full", str(later))

    assert result.output.strip() == (
        f"imported {later}: 0 added, 0 updated, 5 unchanged (5 rows); "
        "not in the file: 1 removed, 0 kept (held by a UEOZ account or an open attempt)"
    )
    stored = accounts(services)
    assert stored["tlewandowski"].status == "removed"  # the cancelled attempt still names it
    assert services.journey.get(found.id).eploz_account_id == stored["tlewandowski"].id
    after = search_for(services, TOMASZ)
    assert (after.state, after.eploz_account_id) == ("found", stored["tlewandowski2"].id)

    # An export that lists it again brings it back.
    cli("eploz", "import", str(GOOD))
    assert accounts(services)["tlewandowski"].status == "active"


def test_a_search_that_matched_an_account_removed_meanwhile_is_a_conflict(cli, services, tmp_path):
    cli("eploz", "import", str(export_without(tmp_path, "tlewandowski2")))
    attempt = services.journey.start(TOMASZ, actor=user())
    account_id = accounts(services)["tlewandowski"].id
    with transaction(services.sessions) as session:  # --full ran after the search read it
        session.get(EplozAccount, account_id).status = "removed"

    with pytest.raises(EventRefused) as refused:
        services.journey.fire(
            attempt.id, "account_found", actor=Actor("worker", "w"), eploz_account_id=account_id
        )

    assert refused.value.reason == "conflict"
    assert services.journey.get(attempt.id).state == "searching"


def test_full_with_a_bad_file_removes_nothing(cli, services):
    cli("eploz", "import", str(GOOD))
    before = {login: (row.id, row.status) for login, row in accounts(services).items()}

    result = cli("eploz", "import", "--full", str(BAD))  # lists none of GOOD's other logins

    assert result.exit_code == 1
    assert f"Error: {BAD} refused, nothing imported or removed (6 bad lines):" in result.output
    assert "line 3, column pesel: not a valid PESEL (wrong check digit)" in result.output
    assert {login: (row.id, row.status) for login, row in accounts(services).items()} == before


def test_full_refuses_a_file_with_no_accounts(cli, services, tmp_path):
    cli("eploz", "import", str(GOOD))
    before = set(accounts(services))
    empty = tmp_path / "header-only.csv"
    empty.write_bytes(GOOD.read_bytes().splitlines(keepends=True)[0])

    result = cli("eploz", "import", "--full", str(empty))

    assert result.exit_code == 1
    assert "lists no accounts; with --full that would remove every account: refused" in (
        result.output
    )
    assert set(accounts(services)) == before


def test_full_is_one_transaction_with_the_rest_of_the_import(cli, services, tmp_path, monkeypatch):
    # The removals fail after the file's new and changed lines went in: none of it stays.
    from sqlalchemy.exc import OperationalError

    from ueoz_migration.adapters import eploz

    cli("eploz", "import", str(GOOD))
    before = {login: (row.id, row.status) for login, row in accounts(services).items()}
    later = export_without(tmp_path, "tlewandowski2")
    later.write_bytes(
        later.read_bytes().replace(b"csioz.pl,active", b"csioz.pl,blocked")
        + b"nowak,97040117247,Ewa,Nowak,,active,\r\n"
    )

    def gone(*_args, **_kwargs):
        raise OperationalError("DELETE FROM eploz_accounts …", {}, Exception("server closed"))

    monkeypatch.setattr(eploz, "_remove_unlisted", gone)

    result = cli("eploz", "import", "--full", str(later))

    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: {later}: the database did not take the import (OperationalError); "
        "nothing imported or removed. Is it reachable and upgraded (ueoz-migration db "
        "upgrade)? Then run it again"
    )
    assert {login: (row.id, row.status) for login, row in accounts(services).items()} == before


# -- two imports at once ------------------------------------------------------------------


def another_import_adds_amicsokol(monkeypatch, database_url):
    """Just before the import adds its new logins, another import (another connection)
    commits one of them: the login the import found absent a moment ago is now taken."""
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from ueoz_migration.adapters import eploz
    from ueoz_migration.db.engine import make_engine

    add_accounts = eploz._add_accounts

    def racing_add(session, new):
        monkeypatch.setattr(eploz, "_add_accounts", add_accounts)  # once
        engine = make_engine(database_url)
        try:
            with engine.begin() as other:
                other.execute(
                    insert(EplozAccount).values(
                        login="amicsokol",
                        pesel="87042712342",
                        first_name="Anna",
                        last_name="Mickiewicz",
                        email="other.import@example.pl",
                        status="active",
                        roles="",
                        imported_at=datetime.now(UTC),
                    )
                )
        finally:
            engine.dispose()
        return add_accounts(session, new)

    monkeypatch.setattr(eploz, "_add_accounts", racing_add)


# SQLite cannot run into this: an import holds the write lock from its first statement.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_import_that_another_import_overtook_is_refused_whole(
    cli, services, database_url, monkeypatch
):
    another_import_adds_amicsokol(monkeypatch, database_url)

    result = cli("eploz", "import", str(GOOD))

    assert result.exit_code == 1
    message = (
        f"Error: {GOOD}: another import changed the directory at the same time; "
        "nothing imported, run it again"
    )
    # The reason, in one line (psycopg's "error ignored terminating <psycopg.Pipeline …>"
    # warning, which named the server, is no longer printed before it).
    assert result.output.splitlines() == [message]
    assert "87042712342" not in result.output and "@csioz.pl" not in result.output
    stored = accounts(services)
    assert list(stored) == ["amicsokol"]  # the other import's account, and nothing of this one
    assert stored["amicsokol"].email == "other.import@example.pl"


# -- an export of any length, read as a stream --------------------------------------------


def many_rows(count: int, start: int = 0) -> bytes:
    """``count`` valid lines, each with its own login and a valid PESEL."""
    people = [(f"user{number:06d}", pesel_for(number)) for number in range(start, start + count)]
    return b"".join(
        f"{login},{number},Jan,Kowalski,{login}@example.pl,active,P1:LEKARZ\r\n".encode()
        for login, number in people
    )


def pesel_for(number: int) -> str:
    """A valid PESEL (born 1 January 1980), the serial number being ``number``."""
    digits = f"800101{number % 10_000:04d}"
    return digits + pesel.calc_check_digit(digits)


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_lines_cut_anywhere_between_two_reads_are_numbered_and_checked_alike(
    cli, services, tmp_path, monkeypatch, end
):
    from ueoz_migration.adapters import eploz

    good = GOOD.read_bytes().replace(b"\r\n", end)
    bad = write(
        tmp_path / "bad.csv",
        good + b"nowak,97040117248,Ewa,Nowak,,active," + end + b"kw\xb6," + end,
    )
    whole = cli("eploz", "import", str(bad)).output
    monkeypatch.setattr(eploz, "_READ", 5)  # every line, and every \r\n, cut somewhere

    result = cli("eploz", "import", str(bad))

    assert result.output == whole
    assert "line 8, column pesel: not a valid PESEL (wrong check digit)" in result.output
    assert "line 9: not UTF-8 text" in result.output
    monkeypatch.setattr(eploz, "_READ", 7)
    assert cli("eploz", "import", str(write(tmp_path / "good.csv", good))).exit_code == 0
    assert len(accounts(services)) == 6


def test_a_bad_last_line_refuses_a_long_file_whole(cli, services, tmp_path):
    export = write(
        tmp_path / "long.csv",
        HEADER
        + b"\r\n"
        + many_rows(5000)
        + b"user999999,80010100003,Jan,Nowak,,active,\r\n",  # its check digit is 0
    )

    result = cli("eploz", "import", str(export))

    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: {export} refused, nothing imported (1 bad line):",
        "  line 5002, column pesel: not a valid PESEL (wrong check digit)",
    ]
    assert accounts(services) == {}


def test_a_login_repeated_far_apart_is_named_and_chance_collisions_are_not(
    cli, services, tmp_path, monkeypatch
):
    # A bit table of 8 bits: nearly every login is flagged by chance; the second look clears
    # all but the one repeated.
    from ueoz_migration.adapters import eploz

    monkeypatch.setattr(eploz._LoginsSeen, "BITS", 8)
    export = write(
        tmp_path / "repeated.csv",
        HEADER + b"\n" + many_rows(3000) + many_rows(1, start=17),
    )

    result = cli("eploz", "import", str(export))

    assert result.output.splitlines() == [
        f"Error: {export} refused, nothing imported (1 bad line):",
        "  line 3002, column login: the same login as line 19",
    ]


def test_a_line_too_long_to_be_a_line_of_an_export_is_named_not_kept(
    cli, services, tmp_path, monkeypatch
):
    from ueoz_migration.adapters import eploz

    monkeypatch.setattr(eploz, "_MAX_LINE", 100)
    monkeypatch.setattr(eploz, "_TOO_LONG", "longer than 100 bytes")
    monkeypatch.setattr(eploz, "_READ", 64)
    export = write(
        tmp_path / "run-on.csv",
        HEADER + b"\n" + many_rows(2) + b"x" * 1000 + b"\n" + b"nowak,1,Ewa,Nowak,,active,\n",
    )

    result = cli("eploz", "import", str(export))

    assert result.output.splitlines()[1:] == [
        "  line 4: longer than 100 bytes",
        "  line 5, column pesel: not a valid PESEL (not 11 digits)",
    ]


def test_a_full_import_in_many_chunks_adds_updates_and_removes_as_one(
    cli, services, tmp_path, monkeypatch
):
    from ueoz_migration.adapters import eploz

    monkeypatch.setattr(eploz, "_CHUNK", 3)
    first = write(tmp_path / "first.csv", HEADER + b"\n" + many_rows(20))
    assert cli("eploz", "import", str(first)).exit_code == 0
    # Rows 0-4 gone, 5-9 blocked, 10-19 as they were, 20-24 new.
    later = many_rows(20)[len(many_rows(5)) :].replace(b"active", b"blocked", 5)
    second = write(tmp_path / "second.csv", HEADER + b"\n" + later + many_rows(5, start=20))

    result = cli("eploz", "import", "--full", str(second))

    assert result.output.strip() == (
        f"imported {second}: 5 added, 5 updated, 10 unchanged (20 rows); "
        "not in the file: 5 removed, 0 kept (held by a UEOZ account or an open attempt)"
    )
    stored = accounts(services)
    assert sorted(stored) == [f"user{number:06d}" for number in range(5, 25)]
    assert [stored[f"user{number:06d}"].status for number in range(5, 11)] == ["blocked"] * 5 + [
        "active"
    ]
