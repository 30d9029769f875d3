"""What an auditor sees when the log is checked against its anchors, on both databases.

Each tampering is done as an insider with write access to the database would do it (plain
SQL behind the service's back, and, where said, with AUDIT_KEY to recompute the chain), after
an anchor was written out of the database's reach; `audit verify --all --anchors DIR` must
name the first anchor the log no longer extends and the size at which they part.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import stat
import threading
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.audit_log import export_now, logged_journey, tamper
from tests.conftest import make_settings, migrated_postgres_database
from tests.factories import ANNA, HERMEGILDA, submit, user
from ueoz_migration.anchors.every import AnchorWriter
from ueoz_migration.anchors.keys import key_id, public_pem, signing_key
from ueoz_migration.anchors.take import take_anchor
from ueoz_migration.audit.chain import link_hash
from ueoz_migration.bootstrap import Services
from ueoz_migration.cli import main
from ueoz_migration.journey import EventRefused, utcnow
from ueoz_migration.retention import purge


def cli(services, *args, env=None):
    return CliRunner().invoke(main, list(args), env=env or dict(services.settings.raw))


def anchor_now(services, folder: Path) -> str:
    """`audit anchor --output FOLDER`; return the name of the file it wrote."""
    result = cli(services, "audit", "anchor", "--output", str(folder))
    assert result.exit_code == 0, result.output
    # One line: what it covers, where it went, the root and key it was signed with.
    (size, path, hashed) = re.fullmatch(
        r"anchored (\d+) row\(s\) in (\S+) \(root [0-9a-f]{16}…, key [0-9a-f]{16}…; "
        r"(\d+) row\(s\) hashed anew in \d+\.\d{3} s\)\n",
        result.stdout,  # the answer; log lines (a development key made) go to stderr
    ).groups()
    assert Path(path).parent == folder and Path(path).name.endswith(f"-{size}.json")
    assert int(hashed) <= int(size)
    return Path(path).name


def taken(folder: Path, name: str) -> str:
    """When the anchor says it was taken, as verify prints it."""
    body = json.loads((folder / name).read_text())["anchor"]
    return body["taken_at"].replace("T", " ").replace("Z", " UTC")


def verify_anchored(services, folder: Path):
    return cli(services, "audit", "verify", "--all", "--anchors", str(folder))


def lines(result):
    """The command's lines, the timings cut off (they differ from run to run)."""
    return [
        re.sub(r"(; in | in )\d+\.\d{3} s( \(.*\))?$", r"\1… s", line)
        for line in result.output.splitlines()
    ]


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "anchors"
    path.mkdir()
    return path


def grow(services, attempt_id):
    """Two more rows in the attempt's log (refused events: the state stays)."""
    for request in ("req-g1", "req-g2"):
        with pytest.raises(EventRefused):
            services.journey.fire(attempt_id, "verify", actor=user(request), token="x")


def test_a_log_that_only_grew_since_its_anchors_verifies(services, folder):
    attempt = logged_journey(services)
    first = anchor_now(services, folder)
    services.journey.start(ANNA, actor=user())
    grow(services, attempt.id)
    second = anchor_now(services, folder)
    grow(services, attempt.id)  # and more since the last one

    result = verify_anchored(services, folder)

    assert result.exit_code == 0, result.output
    assert (first, second) == (
        first.replace(first.rsplit("-", 1)[1], "6.json"),
        second.replace(second.rsplit("-", 1)[1], "9.json"),
    )
    assert lines(result) == [
        "verify: OK; 2 attempt(s), 11 row(s) in … s",
        f"anchors: OK; the log extends all 2 anchor(s) in {folder}, the latest {second} "
        f"(9 of its 11 row(s), taken {taken(folder, second)}); in … s",
    ]


def test_the_anchors_still_verify_after_the_retention_purge(services, folder):
    # The leaves are the log rows' own values, which the purge of personal data never touches.
    attempt = logged_journey(services)
    services.journey.fire(attempt.id, "expire", actor=user("req-expire"))  # ended
    anchor_now(services, folder)

    purged = purge(services.sessions, older_than=timedelta(0), now=utcnow() + timedelta(seconds=1))

    assert purged.attempts == 1
    result = verify_anchored(services, folder)
    assert result.exit_code == 0, result.output
    assert lines(result)[1].startswith("anchors: OK; the log extends all 1 anchor(s)")
    replayed = cli(services, "audit", "replay", "--all")
    assert replayed.exit_code == 0, replayed.output


def hermegilda_to_row_5(services):
    """The first five rows of tests.audit_log's logged journey (applied, refused, rejected)."""
    journey = services.journey
    attempt = journey.start(HERMEGILDA, actor=user("req-1"))
    journey.fire(attempt.id, "search_failed", actor=user("req-2"), code=208)
    with pytest.raises(EventRefused):
        journey.fire(attempt.id, "verify", actor=user("req-3"), token="x")
    journey.fire(attempt.id, "continue_new", actor=user("req-4"))
    with pytest.raises(EventRefused):
        journey.fire(attempt.id, "submit", actor=user("req-5"), email="h@example.pl")
    return attempt


def two_anchored(services, folder):
    """Hermegilda's rows 1-5, anchored; her row 6 and Anna's first row, anchored again.

    Return the attempt and the two anchors' names (5 rows; 7 rows: ids 1-6 hers, 7 Anna's).
    """
    attempt = hermegilda_to_row_5(services)
    first = anchor_now(services, folder)
    submit(services, attempt.id, "h@example.pl", actor=user("req-6"))
    services.journey.start(ANNA, actor=user())
    return attempt, first, anchor_now(services, folder)


def cut_hermegildas_tail(services, attempt_id):
    """Row 6 deleted and the attempt set back to row 5, head and state: the chain verifies."""
    tamper(
        services,
        "DELETE FROM transition_log WHERE attempt_id = :a AND seq = 6",
        "UPDATE attempts SET log_seq = 5, state = 'email_entry', log_head = "
        "(SELECT hash FROM transition_log WHERE attempt_id = :a AND seq = 5) WHERE id = :a",
        a=attempt_id,
    )


def test_a_tail_cut_with_the_head_set_back_is_caught_by_the_anchor(services, folder):
    attempt, _, second = two_anchored(services, folder)
    cut_hermegildas_tail(services, attempt.id)
    assert cli(services, "audit", "verify", "--all").exit_code == 0  # the chain alone passes

    result = verify_anchored(services, folder)

    assert result.exit_code == 1
    assert lines(result) == [
        "verify: OK; 2 attempt(s), 6 row(s) in … s",
        f"FIRST ANCHOR NOT EXTENDED: {second} (7 rows, taken {taken(folder, second)}): the log "
        "no longer extends it: they part after size 5 (the log's first 5 row(s) are the ones "
        f"it covered; its row 6 was changed, removed, added or moved); the log holds 6 "
        "row(s), fewer than the 7 it covered",
        "anchors: 1 of 2 anchor file(s) with a problem (1 not extended, 0 refused); the log "
        "holds 6 row(s); in … s",
    ]


def rewrite_with_the_key(services, tmp_path, attempt_id, seq, **changes):
    """A key holder's edit: row ``seq`` changed, the chain after it and the head recomputed."""
    export = export_now(services, tmp_path / "before-the-edit.jsonl")
    records = [json.loads(line) for line in export.read_text().splitlines()]
    prev = "0" * 64
    for record in [r for r in records if r["attempt_id"] == attempt_id]:
        if record["seq"] == seq:
            record.update(changes)
        record["prev_hash"], record["hash"] = (
            prev,
            link_hash(services.settings.audit_key, prev, record),
        )
        prev = record["hash"]
        tamper(
            services,
            "UPDATE transition_log SET actor = :actor, prev_hash = :prev_hash, hash = :hash "
            "WHERE id = :id",
            **record,
        )
    tamper(services, "UPDATE attempts SET log_head = :h WHERE id = :a", h=prev, a=attempt_id)


def test_a_row_a_key_holder_rewrote_under_an_anchor_is_caught(services, folder, tmp_path):
    attempt, first, second = two_anchored(services, folder)
    rewrite_with_the_key(services, tmp_path, attempt.id, 2, actor="helpdesk")
    assert cli(services, "audit", "verify", "--all").exit_code == 0

    result = verify_anchored(services, folder)

    assert result.exit_code == 1
    # Row 2 lies in both anchors' first subtree (rows 1-4): that is as near as they place it.
    assert lines(result)[1:] == [
        f"FIRST ANCHOR NOT EXTENDED: {first} (5 rows, taken {taken(folder, first)}): the log "
        "no longer extends it: they part after size 0 (among its rows 1–4, one was changed, "
        "removed, added or moved)",
        f"  also not extended: {second} (7 rows, taken {taken(folder, second)}): the log no "
        "longer extends it: they part after size 0 (among its rows 1–4, one was changed, "
        "removed, added or moved)",
        "anchors: 2 of 2 anchor file(s) with a problem (2 not extended, 0 refused); the log "
        "holds 7 row(s); in … s",
    ]


def test_a_row_changed_without_the_key_under_an_anchor_breaks_the_chain(services, folder):
    attempt, _, _ = two_anchored(services, folder)
    tamper(services, "UPDATE transition_log SET actor = 'helpdesk' WHERE seq = 2")

    result = verify_anchored(services, folder)

    assert result.exit_code == 1
    assert lines(result)[0] == (
        f"FIRST BROKEN LINK: attempt {attempt.id}, seq 2: hash does not recompute from the "
        "row's fields (the row was changed)"
    )


def test_rows_of_two_attempts_swapped_in_the_logs_order_are_caught(services, folder):
    # Each attempt's own chain is untouched: only the order across attempts changed.
    _, _, second = two_anchored(services, folder)
    tamper(
        services,
        "UPDATE transition_log SET id = -1 WHERE id = 6",
        "UPDATE transition_log SET id = 6 WHERE id = 7",
        "UPDATE transition_log SET id = 7 WHERE id = -1",
    )
    assert cli(services, "audit", "verify", "--all").exit_code == 0

    result = verify_anchored(services, folder)

    assert result.exit_code == 1
    assert lines(result)[1] == (
        f"FIRST ANCHOR NOT EXTENDED: {second} (7 rows, taken {taken(folder, second)}): the log "
        "no longer extends it: they part after size 5 (the log's first 5 row(s) are the ones "
        "it covered; its row 6 was changed, removed, added or moved)"
    )


def forge(folder: Path, name: str, signer: Ed25519PrivateKey, as_name: str, **changes) -> None:
    """Re-sign a copy of an anchor, changed, with ``key`` (a forger's, or the real one's id)."""
    body = {**json.loads((folder / name).read_text())["anchor"], **changes}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    signature = base64.b64encode(signer.sign(canonical)).decode()
    (folder / as_name).write_text(json.dumps({"anchor": body, "signature": signature}))


def test_a_forged_anchor_is_refused(services, folder):
    logged_journey(services)
    genuine = anchor_now(services, folder)
    forger = Ed25519PrivateKey.generate()
    forge(
        folder, genuine, forger, "anchor-20260101T000000Z-6.json", key=key_id(forger.public_key())
    )
    # The file edited under the anchor key's id: its signature no longer holds.
    body = json.loads((folder / genuine).read_text())
    body["anchor"]["taken_at"] = "2026-01-01T00:00:01Z"
    (folder / "anchor-20260101T000001Z-6.json").write_text(json.dumps(body))
    (folder / "anchor-20260101T000002Z-6.json").write_text("{not json")
    ours = key_id(signing_key(services.settings).public_key())

    result = verify_anchored(services, folder)

    assert result.exit_code == 1
    assert lines(result)[1:] == [
        f"ANCHOR REFUSED: anchor-20260101T000000Z-6.json: signed with another key "
        f"({key_id(forger.public_key())[:16]}…), not the anchor key ({ours[:16]}…)",
        "ANCHOR REFUSED: anchor-20260101T000001Z-6.json: its signature does not hold: the "
        "file was altered, or forged",
        "ANCHOR REFUSED: anchor-20260101T000002Z-6.json: not an anchor file (not JSON)",
        "anchors: 3 of 4 anchor file(s) with a problem (0 not extended, 3 refused); the log "
        "holds 6 row(s); in … s",
    ]


@pytest.fixture
def other_services(request, tmp_path, services):
    """A second database of the same kind, with the same keys as ``services``."""
    with ExitStack() as stack:
        if services.engine.dialect.name == "sqlite":
            path = tmp_path / "other.sqlite3"
            shutil.copy(request.getfixturevalue("sqlite_template"), path)
            url = f"sqlite:///{path}"
        else:
            name = f"ueoz_other_{uuid.uuid4().hex[:8]}"
            url = stack.enter_context(migrated_postgres_database(name))
        signing_key(services.settings)  # made in the first instance folder, shared
        other = Services(
            make_settings(tmp_path / "other", url, ANCHOR_KEY=str(services.settings.anchor_key))
        )
        stack.callback(other.engine.dispose)
        yield other


def test_an_anchor_of_another_database_is_named_as_such(services, other_services, folder, tmp_path):
    logged_journey(services)
    ours = anchor_now(services, folder)
    logged_journey(other_services)
    elsewhere = tmp_path / "theirs"
    elsewhere.mkdir()
    theirs = anchor_now(other_services, elsewhere)
    shutil.copy(elsewhere / theirs, folder / theirs.replace(".json", "-b.json"))
    theirs = theirs.replace(".json", "-b.json")

    result = verify_anchored(services, folder)

    assert result.exit_code == 1
    assert lines(result)[1:] == [
        f"FIRST ANCHOR NOT EXTENDED: {theirs} (6 rows, taken {taken(folder, theirs)}): it "
        "begins with another first row than this log: it was taken of another database's "
        "log, or the log's first row was changed or removed since",
        "anchors: 1 of 2 anchor file(s) with a problem (1 not extended, 0 refused); the log "
        "holds 6 row(s); in … s",
    ]
    assert ours != theirs


def offline(services, *args):
    """`audit verify` with the audit key and the anchors' public key only: no database."""
    public = Path(services.settings.instance_dir) / "anchor_key.pub"
    public.write_text(public_pem(signing_key(services.settings).public_key()))
    env = {
        "AUDIT_KEY": services.settings.raw["AUDIT_KEY"],
        "ANCHOR_PUBLIC_KEY": str(public),
        "DATABASE_URL": "sqlite:////nonexistent/no-database-here.sqlite3",
    }
    return CliRunner().invoke(main, ["audit", "verify", *args], env=env)


ANCHORED_LIMITS = (
    "an export cannot show rows left out of it or of the log after its latest anchor, nor its "
    "attempts' heads: audit verify against the database can"
)


def test_an_export_is_checked_against_the_anchors_with_no_database(services, folder, tmp_path):
    attempt, _, second = two_anchored(services, folder)
    intact = export_now(services, tmp_path / "intact.jsonl")
    cut_hermegildas_tail(services, attempt.id)
    cut = export_now(services, tmp_path / "cut.jsonl")

    clean = offline(services, "--export", str(intact), "--anchors", str(folder))
    caught = offline(services, "--export", str(cut), "--anchors", str(folder))

    assert clean.exit_code == 0, clean.output
    assert lines(clean) == [
        ANCHORED_LIMITS,
        "verify: OK; 2 attempt(s), 7 row(s) in … s",
        f"anchors: OK; the log extends all 2 anchor(s) in {folder}, the latest {second} "
        f"(7 of its 7 row(s), taken {taken(folder, second)}); in … s",
    ]
    assert caught.exit_code == 1
    assert lines(caught)[2] == (
        f"FIRST ANCHOR NOT EXTENDED: {second} (7 rows, taken {taken(folder, second)}): the log "
        "no longer extends it: they part after size 5 (the log's first 5 row(s) are the ones "
        f"it covered; its row 6 was changed, removed, added or moved); the log holds 6 "
        "row(s), fewer than the 7 it covered"
    )


def test_an_export_from_before_anchors_says_it_has_no_row_ids(services, folder, tmp_path):
    logged_journey(services)
    anchor_now(services, folder)
    export = export_now(services, tmp_path / "old.jsonl")
    records = [json.loads(line) for line in export.read_text().splitlines()]
    export.write_text(
        "".join(json.dumps({k: v for k, v in r.items() if k != "id"}) + "\n" for r in records)
    )

    old = offline(services, "--export", str(export), "--anchors", str(folder))
    alone = offline(services, "--export", str(export))

    assert old.exit_code == 1
    assert old.output == (
        f"Error: {export}: its rows carry no id (written by a release before anchors): export "
        "the log again to check it against anchors\n"
    )
    assert alone.exit_code == 0, alone.output  # still readable for its chain


def test_anchoring_goes_on_from_the_last_anchor_hashing_only_new_rows(services, folder):
    attempt = logged_journey(services)
    key = signing_key(services.settings)
    now = utcnow()

    def anchor(seconds):
        return take_anchor(
            services.engine, services.sessions, key, folder, now + timedelta(seconds=seconds)
        )

    first = anchor(0)
    grow(services, attempt.id)
    second, same = anchor(1), anchor(2)

    assert (first.hashed, first.anchor.size, first.anchor.previous) == (6, 6, None)
    assert (second.hashed, second.anchor.size) == (2, 8)
    assert second.anchor.previous == (6, first.anchor.root)
    assert (same.hashed, same.anchor.size, same.anchor.root) == (0, 8, second.anchor.root)
    # The head kept in the database is trusted only with its signature: edited, the next
    # anchor hashes the whole log again, and comes to the same tree.
    tamper(services, "UPDATE log_anchors SET document = replace(document, 'size', 'sizes')")
    again = anchor(3)
    assert (again.hashed, again.anchor.root) == (8, second.anchor.root)
    assert len(list(folder.iterdir())) == 4


def test_the_anchor_command_writes_a_new_file_each_time_and_never_over_one(services, folder):
    logged_journey(services)
    name = anchor_now(services, folder)
    body = json.loads((folder / name).read_text())["anchor"]
    key_file = services.settings.anchor_key
    # The same second and size again: the name is taken.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("ueoz_migration.journey.utcnow", lambda: _at(body["taken_at"]))
        again = cli(services, "audit", "anchor", "--output", str(folder))

    assert re.fullmatch(r"anchor-\d{8}T\d{6}Z-6\.json", name)
    assert body["size"] == 6 and body["previous"] is None
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600  # the development key, owner only
    assert again.exit_code == 1
    assert again.output == (
        f"Error: {folder / name} already exists: an anchor is never written over another; "
        "run it again in a second\n"
    )
    assert sorted(path.name for path in folder.iterdir()) == [name]


def _at(iso: str):
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def test_anchor_and_verify_refuse_what_they_cannot_do(services, folder, tmp_path):
    logged_journey(services)
    production = {
        **services.settings.raw,
        "APP_ENV": "production",
        "AUDIT_KEY": "a production audit key, 32 bytes long",  # the log is read again
        "SECRET_KEY": "s" * 32,
    }

    missing = cli(services, "audit", "anchor", "--output", str(tmp_path / "nowhere"))
    unkeyed = cli(services, "audit", "anchor", "--output", str(folder), env=production)
    empty = verify_anchored(services, folder)
    named = cli(services, "audit", "verify", "x" * 32, "--anchors", str(folder))

    assert missing.exit_code == 2
    assert "Directory" in missing.output and "does not exist" in missing.output
    assert unkeyed.exit_code == 1
    assert unkeyed.output == (
        "Error: APP_ENV=production needs ANCHOR_KEY (the anchors' signing key); refusing to "
        "start.\n"
    )
    assert list(folder.iterdir()) == []
    assert empty.exit_code == 1
    assert empty.output == f"Error: {folder} holds no anchor (anchor-*.json)\n"
    assert named.exit_code == 2
    assert "--anchors checks the whole log: name no attempt" in named.output
    # An auditor without the anchors' public key is told what to set.
    anchor_now(services, folder)
    services.settings.anchor_key.unlink()
    unverifiable = verify_anchored(services, folder)
    assert unverifiable.exit_code == 1
    assert unverifiable.output == (
        "Error: set ANCHOR_PUBLIC_KEY to the anchors' public key (PEM), as the operator gave it\n"
    )


def test_the_worker_anchors_once_a_period(services, folder):
    logged_journey(services)

    first = cli(services, "worker", "--once", "--anchors", str(folder))
    second = cli(services, "worker", "--once", "--anchors", str(folder), "--anchor-every", "5")

    assert first.exit_code == second.exit_code == 0, first.output + second.output
    assert len(list(folder.iterdir())) == 1  # the second found the first one recent enough
    assert verify_anchored(services, folder).exit_code == 0


def test_a_worker_given_a_folder_anchors_in_the_background_until_it_stops(services, folder):
    logged_journey(services)
    writer = AnchorWriter(
        services.engine,
        services.sessions,
        signing_key(services.settings),
        folder,
        timedelta(minutes=15),
        utcnow,
    )
    stop = threading.Event()

    thread = writer.start(stop)
    deadline = time.monotonic() + 10
    while not list(folder.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=10)

    assert not thread.is_alive()
    (written,) = folder.iterdir()
    assert written.name.endswith("-6.json")
