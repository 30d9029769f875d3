"""Benchmark the staff console: the progress page and a helpdesk look-up over a big database.

Run it from the repository root (``make bench`` does):

    .venv/bin/python benchmarks/bench_console.py \\
        --database-url postgresql://postgres@127.0.0.1:55433/postgres \\
        --attempts 1000000 --rounds 20 --lookups 200

A throw-away PostgreSQL database is created and migrated (bench_core's ``prepare_database``),
then seeded by the database itself (``INSERT … SELECT`` over ``generate_series``, no rows
through Python): ``--attempts`` attempts spread evenly over the last 365 days, each with its
log along one of ten paths of the flow (verified and handed off, skipped, error with a code
then cancelled or continued, expired, cancelled), about 4.6 rows an attempt; a verification
link for every attempt that verified one; 0.1 % of people with a second attempt; a handful
waiting in the search and mail queues. The rows' hashes are stand-ins (MD5), not a chain:
these pages never check it. ``VACUUM ANALYZE`` runs once, as autovacuum would have.

Then, through the application in process (Flask's test client, so the figure has no HTTP
parsing and no network in it) with a helpdesk and auditor signed in to the console:

- *progress page*: ``GET /konsola/postep`` (30 days: ~82,000 attempts and ~380,000 log
  rows in the period), the whole page with its three charts; ``--rounds`` times after one
  unmeasured request;
- *helpdesk look-up*: ``POST /konsola/pomoc`` with an event number and the last three PESEL
  digits of ``--lookups`` different attempts in ``error``, the attempt's whole story
  rendered (its diagram drawn by Graphviz once per path and process, then kept);
- *no match*: the same with wrong digits.

Aim: each under 300 ms. Median, 95th percentile and the slowest; only the Markdown table goes
to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_core import prepare_database, progress, quiet_logs, services_for
from sqlalchemy import text
from werkzeug.wrappers import Response

from ueoz_migration.console.staff import Role, Staff
from ueoz_migration.db.engine import transaction
from ueoz_migration.db.models import FlowVersion
from ueoz_migration.journey import utcnow
from ueoz_migration.web import console, create_app

AIM_MS = 300
STAFF_PESEL = "90010112349"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

# The paths of the seeded attempts: (kind, [(event, source, target, outcome, seconds after
# the start)]). Kind k takes the attempts whose number modulo 20 falls in KINDS[k].
PATHS: dict[str, list[tuple[str, str, str, str, int]]] = {
    "handed_off": [
        ("start", "", "searching", "applied", 0),
        ("account_found", "searching", "found", "applied", 3),
        ("create_account", "found", "email_entry", "applied", 40),
        ("submit", "email_entry", "awaiting_verification", "applied", 95),
        ("verify", "awaiting_verification", "done", "applied", 700),
        ("hand_off", "done", "handed_off", "applied", 710),
    ],
    "done": [
        ("start", "", "searching", "applied", 0),
        ("account_found", "searching", "found", "applied", 2),
        ("create_account", "found", "email_entry", "applied", 30),
        ("submit", "email_entry", "awaiting_verification", "applied", 80),
        ("resend", "awaiting_verification", "awaiting_verification", "applied", 3600),
        ("verify", "awaiting_verification", "done", "applied", 5400),
    ],
    "skipped": [
        ("start", "", "searching", "applied", 0),
        ("skip", "searching", "skipped", "applied", 0),
    ],
    "error_cancelled": [
        ("start", "", "searching", "applied", 0),
        ("search_failed", "searching", "error", "applied", 4),
        ("cancel", "error", "cancelled", "applied", 60),
    ],
    "error_new": [
        ("start", "", "searching", "applied", 0),
        ("search_failed", "searching", "error", "applied", 4),
        ("continue_new", "error", "email_entry", "applied", 50),
        ("submit", "email_entry", "awaiting_verification", "applied", 120),
        ("verify", "awaiting_verification", "done", "applied", 1500),
    ],
    "error_open": [
        ("start", "", "searching", "applied", 0),
        ("search_failed", "searching", "error", "applied", 4),
    ],
    "expired_waiting": [
        ("start", "", "searching", "applied", 0),
        ("account_found", "searching", "found", "applied", 3),
        ("create_account", "found", "email_entry", "applied", 40),
        ("submit", "email_entry", "awaiting_verification", "applied", 90),
        ("expire", "awaiting_verification", "expired", "applied", 259_200),
    ],
    "cancelled_found": [
        ("start", "", "searching", "applied", 0),
        ("account_found", "searching", "found", "applied", 3),
        ("cancel", "found", "cancelled", "applied", 20),
    ],
    "expired_entry": [
        ("start", "", "searching", "applied", 0),
        ("account_found", "searching", "found", "applied", 3),
        ("create_account", "found", "email_entry", "applied", 30),
        ("refused_verify", "email_entry", "email_entry", "refused", 31),
        ("expire", "email_entry", "expired", "applied", 259_200),
    ],
}
# Of every 20 attempts: 9 handed off, 2 done, 3 skipped, 1 of each other path.
KINDS = {
    "handed_off": range(0, 9),
    "done": range(9, 11),
    "skipped": range(11, 14),
    "error_cancelled": range(14, 15),
    "error_new": range(15, 16),
    "error_open": range(16, 17),
    "expired_waiting": range(17, 18),
    "cancelled_found": range(18, 19),
    "expired_entry": range(19, 20),
}


def seed(url: str, flow_version: str, attempts: int) -> int:
    """Fill the database with ``attempts`` attempts and their logs; return the log's rows."""
    from ueoz_migration.db.engine import make_engine

    kind_of = " ".join(
        f"WHEN (n % 20) BETWEEN {span.start} AND {span.stop - 1} THEN '{kind}'"
        for kind, span in KINDS.items()
    )
    final = {kind: steps[-1][2] for kind, steps in PATHS.items()}
    state_of = " ".join(f"WHEN '{kind}' THEN '{state}'" for kind, state in final.items())
    steps = ", ".join(
        f"('{kind}', {seq}, '{event.removeprefix('refused_')}', '{source}', '{target}', "
        f"'{outcome}', {seconds})"
        for kind, path in PATHS.items()
        for seq, (event, source, target, outcome, seconds) in enumerate(path, start=1)
    )
    links = ", ".join(f"('{kind}', {sent}, {used})" for kind, (sent, used) in _link_times().items())
    engine = make_engine(url)
    statements = [
        # People: most have one attempt; one in a thousand came back for a second.
        f"""
        INSERT INTO attempts (id, state, flow_version, pesel, pesel_hash, given_names,
            family_name, date_of_birth, open_pesel_key, event_number, event_code, language,
            created_at, updated_at, expires_at, search_tries, log_seq, log_head)
        SELECT md5('attempt' || n), CASE kind {state_of} END, '{flow_version}',
            lpad((n % {attempts - attempts // 1000})::text, 11, '9'),
            md5('pesel' || (n % {attempts - attempts // 1000}))
                || md5('p' || (n % {attempts - attempts // 1000})),
            'Bench', 'Person', NULL,
            CASE WHEN kind = 'error_open' THEN md5('open' || n) || md5('o' || n) END,
            CASE WHEN kind LIKE 'error%' THEN 'MIGRATION_' || lpad(n::text, 12, '0') END,
            CASE WHEN kind LIKE 'error%' THEN 201 + (n % 8) END,
            'pl', started, started, started + interval '72 hours', 0, 0, ''
        FROM (
            SELECT n, CASE {kind_of} END AS kind,
                now() - (n % 365) * interval '1 day' - (n % 86400) * interval '1 second'
                    AS started
            FROM generate_series(1, {attempts}) AS n
        ) AS people
        """,
        f"""
        CREATE TEMPORARY TABLE steps (kind text, seq int, event text, source text,
            target text, outcome text, seconds int);
        INSERT INTO steps VALUES {steps};
        """,
        f"""
        INSERT INTO transition_log (attempt_id, seq, at, event, source, target, outcome, actor,
            request_id, flow_version, event_number, event_code, pesel_hash, detail, prev_hash,
            hash)
        SELECT a.id, s.seq, a.created_at + s.seconds * interval '1 second', s.event, s.source,
            s.target, s.outcome, 'user', md5(a.id || s.seq), a.flow_version,
            CASE WHEN s.target = 'error' AND s.outcome = 'applied' THEN a.event_number END,
            CASE WHEN s.target = 'error' AND s.outcome = 'applied' THEN a.event_code END,
            a.pesel_hash, '', md5(a.id || (s.seq - 1)) || md5('x'), md5(a.id || s.seq) || md5('y')
        FROM generate_series(1, {attempts}) AS n
        JOIN steps s ON s.kind = CASE {kind_of} END
        JOIN attempts a ON a.id = md5('attempt' || n)
        """,
        """
        UPDATE attempts a SET log_seq = counted.rows, updated_at = counted.last
        FROM (SELECT attempt_id, count(*) AS rows, max(at) AS last FROM transition_log
              GROUP BY attempt_id) AS counted
        WHERE counted.attempt_id = a.id
        """,
        # A link for each verification: written at the last submit or resend before it.
        f"""
        INSERT INTO verification_links (attempt_id, token_hash, email, created_at, expires_at,
            used_at)
        SELECT a.id, md5(a.id) || md5('link'), 'b***@example.pl',
            a.created_at + v.sent * interval '1 second',
            a.created_at + (v.sent + 86400) * interval '1 second',
            a.created_at + v.used * interval '1 second'
        FROM generate_series(1, {attempts}) AS n
        JOIN (VALUES {links}) AS v (kind, sent, used) ON v.kind = CASE {kind_of} END
        JOIN attempts a ON a.id = md5('attempt' || n)
        """,
        # A few waiting in the queues: searches and e-mails.
        f"""
        INSERT INTO attempts (id, state, flow_version, pesel, pesel_hash, given_names,
            family_name, open_pesel_key, language, created_at, updated_at, expires_at,
            search_due_at, search_tries, log_seq, log_head)
        SELECT md5('waiting' || n), 'searching', '{flow_version}', lpad(n::text, 11, '8'),
            md5('w' || n) || md5('w'), 'Bench', 'Person', md5('wo' || n) || md5('wo'), 'pl',
            now() - n * interval '1 second', now() - n * interval '1 second',
            now() + interval '72 hours', now(), 0, 0, ''
        FROM generate_series(1, 25) AS n
        """,
        """
        INSERT INTO outbox (attempt_id, kind, recipient, subject, body, created_at, due_at,
            tries, last_error)
        SELECT id, 'verification', 'bench@example.pl', 'Link', 'body',
            now() - interval '30 seconds', now(), 0, ''
        FROM attempts WHERE state = 'searching' LIMIT 10
        """,
    ]
    with engine.begin() as connection:
        for statement in statements:
            started = time.perf_counter()
            for part in statement.split(";"):
                if part.strip():
                    connection.execute(text(part))
            progress(f"seeded in {time.perf_counter() - started:.1f} s: {statement.split()[:3]}")
        rows = connection.scalar(text("SELECT count(*) FROM transition_log"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        # What autovacuum does to a table that grows (PostgreSQL 13 on: after inserts too):
        # statistics, and the visibility map that lets the pages' counts read indexes alone.
        connection.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return int(rows)


def record_flow(services) -> None:  # type: ignore[no-untyped-def]
    """Keep the flow's definition, as the first attempt of a release does."""
    flow = services.flow
    with transaction(services.sessions) as session:
        session.add(
            FlowVersion(
                version=flow.version, name=flow.name, source=flow.source, first_used_at=utcnow()
            )
        )


def _link_times() -> dict[str, tuple[int, int]]:
    """For each path that verifies: seconds from its start to the link's sending and use."""
    times = {}
    for kind, path in PATHS.items():
        sent = [seconds for event, *_, seconds in path if event in ("submit", "resend")]
        used = [seconds for event, *_, seconds in path if event == "verify"]
        if used:
            times[kind] = (sent[-1], used[0])
    return times


def signed_in_client(app):  # type: ignore[no-untyped-def]
    """A browser with a console session of a staff member holding every role."""
    services = app.extensions["ueoz.services"]
    staff = Staff(services.sessions, services.settings.pesel_key)
    for role in Role:
        staff.grant(STAFF_PESEL, role, by="bench", now=utcnow())
    response = Response()
    with app.test_request_context("/saml/acs"):
        app.session_interface.start_realm_session(
            app,
            response,
            {
                "_permanent": True,
                console.STAFF_KEY: staff.hash_of(STAFF_PESEL),
                console.LAST3_KEY: STAFF_PESEL[-3:],
                console.LOGGED_IN_KEY: utcnow().isoformat(),
            },
        )
    sid = response.headers["Set-Cookie"].split(";", 1)[0].split("=", 1)[1]
    client = app.test_client()
    client.set_cookie(console.cookie_name(production=False), sid, path=console.PATH)
    return client


def timed(call) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    answer = call()
    elapsed = time.perf_counter() - started
    if answer.status_code not in (200, 404):
        raise SystemExit(f"unexpected answer {answer.status_code}: {answer.get_data()[:300]!r}")
    return elapsed * 1000


def summary(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, -(-len(ordered) * 95 // 100) - 1)]
    return statistics.median(ordered), p95, ordered[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="a PostgreSQL server URL")
    parser.add_argument("--attempts", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=20, help="progress page requests")
    parser.add_argument(
        "--lookups", type=int, default=200, help="look-ups, each of another attempt"
    )
    args = parser.parse_args(argv)
    quiet_logs()
    with tempfile.TemporaryDirectory(prefix="ueoz-bench-") as tmp:
        folder = Path(tmp)
        db = prepare_database(args.database_url, folder)
        try:
            services = services_for(db.url, folder)
            services.settings = dataclasses.replace(
                services.settings, console_lookups_per_hour=10**9
            )
            record_flow(services)
            started = time.perf_counter()
            rows = seed(db.url, services.flow.version, args.attempts)
            seeded = time.perf_counter() - started
            progress(f"{args.attempts:,} attempts, {rows:,} log rows in {seeded:.0f} s")
            app = create_app(services=services)
            client = signed_in_client(app)
            figures = []

            timed(lambda: client.get("/konsola/postep"))  # the first: connections, templates
            page = [timed(lambda: client.get("/konsola/postep")) for _ in range(args.rounds)]
            figures.append(("progress page (30 days)", page))
            progress(f"progress page: {summary(page)}")

            with services.engine.connect() as connection:
                errors = connection.execute(
                    text(
                        "SELECT event_number, pesel FROM attempts WHERE event_number IS NOT NULL "
                        "ORDER BY md5(id) LIMIT :n"
                    ),
                    {"n": args.lookups + 1},
                ).all()
            token = CSRF.search(client.get("/konsola/pomoc").get_data(as_text=True)).group(1)

            def look_up(number: str, digits: str):  # type: ignore[no-untyped-def]
                return client.post(
                    "/konsola/pomoc",
                    data={"csrf_token": token, "event_number": number, "pesel_last3": digits},
                )

            first, *rest = errors
            timed(lambda: look_up(first.event_number, first.pesel[-3:]))
            found = [timed(lambda e=each: look_up(e.event_number, e.pesel[-3:])) for each in rest]
            figures.append((f"helpdesk look-up, found ({len(rest)} attempts)", found))
            progress(f"look-up: {summary(found)}")
            wrong = [
                timed(
                    lambda e=each: look_up(
                        e.event_number, "000" if e.pesel[-3:] != "000" else "111"
                    )
                )
                for each in rest[: max(1, len(rest) // 4)]
            ]
            figures.append((f"helpdesk look-up, no match ({len(wrong)})", wrong))
            progress(f"no match: {summary(wrong)}")
            services.engine.dispose()
        finally:
            db.drop()

    print(
        f"PostgreSQL, {args.attempts:,} attempts and {rows:,} log rows (seeded in "
        f"{seeded:.0f} s); Python {platform.python_version()}; in process (Flask's test "
        "client). Milliseconds per request.\n"
    )
    print("| request | median | 95th percentile | slowest | aim |")
    print("|---|---|---|---|---|")
    for name, values in figures:
        median, p95, slowest = summary(values)
        verdict = "met" if p95 < AIM_MS else "NOT met"
        print(f"| {name} | {median:.1f} | {p95:.1f} | {slowest:.1f} | < {AIM_MS} ms: {verdict} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
