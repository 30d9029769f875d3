"""Measure complete logins per second through the stand-in node, in one process.

    .venv/bin/python benchmarks/bench_login.py [--logins 200] [--rounds 5] [--clock cpu]

Each login: the service builds and signs an AuthnRequest; the stand-in verifies it and
issues an artifact (called directly: the browser's page round trips are not the
service's work); the service resolves the artifact over SOAP through an in-process WSGI
transport, verifies both signatures, decrypts the ECDH-ES assertion, has python3-saml
validate the Response, and reads the identity. Prints a Markdown table of the median
time per login of each step over the rounds, and the logins per second.

Two rates come out. *Per core for the service* counts the service's work only: the complete
login minus the stand-in's two timed parts (verifying the AuthnRequest and issuing the
artifact; answering the ArtifactResolve: its Flask app building, signing and encrypting the
answer). In production those run on the national node's machines, not on ours. The
service's HTTP client and the in-process transport stay counted against the service.
*Both sides in one process* is the complete login as timed.

`--clock cpu` counts this process's CPU time instead of elapsed time: on a shared,
loaded machine the elapsed time mostly measures the other tenants.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import structlog

from ueoz_migration.adapters.wk import MemoryReplayStore, ServiceProvider, WkSettings
from ueoz_migration.adapters.wk.keys import dev_pair
from ueoz_migration.standin import DEMO_IDENTITIES, StandinSettings, create_standin_app
from ueoz_migration.standin.node import Person

STEPS = (
    ("authn_request", "AuthnRequest build + sign (service)"),
    ("standin_artifact", "stand-in: verify AuthnRequest + issue artifact"),
    ("resolve_soap", "resolve SOAP round trip (incl. stand-in answer)"),
    ("standin_answer", "  of which the stand-in answers (web layer, build, sign, encrypt)"),
    ("verify_signatures", "verify ArtifactResponse + Response signatures"),
    ("decrypt", "decrypt ECDH-ES assertion"),
    ("saml_validation", "python3-saml validation"),
    ("identity", "identity + replay checks"),
)


def main() -> None:
    """Run the rounds and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=200, help="logins per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    # Only the table goes to standard output (make bench copies it into the docs); log lines,
    # such as the development key pairs being generated, go to standard error.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

    with tempfile.TemporaryDirectory() as instance:
        settings = WkSettings.from_env(
            {"WK_NODE_URL": "http://node.bench"},
            base_url="http://sp.bench",
            instance_dir=instance,
            production=False,
        )
        signing = dev_pair(Path(instance) / "wk", "standin-signing", "WK stand-in node")
        app = create_standin_app(
            StandinSettings.for_service(settings, base_url="http://node.bench", signing=signing)
        )
        node = app.extensions["wk_standin"]
        spent: dict[str, float] = collections.defaultdict(float)

        def timer(step: str, seconds: float) -> None:
            spent[step] += seconds

        # The stand-in's whole answer to the SOAP call, its web layer included: the node's
        # side of the round trip. httpx's WSGITransport calls the app and reads the body.
        wsgi_app = app.wsgi_app

        def timed_wsgi_app(environ, start_response):  # type: ignore[no-untyped-def]
            started = clock()
            try:
                return list(wsgi_app(environ, start_response))
            finally:
                spent["standin_answer"] += clock() - started

        app.wsgi_app = timed_wsgi_app  # type: ignore[method-assign]
        sp = ServiceProvider(
            settings,
            MemoryReplayStore(),
            httpx.Client(transport=httpx.WSGITransport(app=app)),
            step_timer=timer,
            step_clock=clock,
        )
        people = [
            Person(p.first_name, p.last_name, p.pesel, p.date_of_birth.isoformat())
            for p in DEMO_IDENTITIES
        ]

        def login(i: int) -> None:
            started = clock()
            form = sp.authn_request(f"bench-{i}")
            spent["authn_request"] += clock() - started
            started = clock()
            ticket, _ = node.accept_authn_request(form.saml_request, form.relay_state)
            artifact, _ = node.finish_login(ticket, people[i % len(people)])
            spent["standin_artifact"] += clock() - started
            sp.resolve(artifact, form.request_id)

        for i in range(20):  # warm up: schema compilation, imports, caches
            login(i)
        per_step: dict[str, list[float]] = collections.defaultdict(list)
        rates: list[float] = []
        service_rates: list[float] = []
        for _ in range(args.rounds):
            spent.clear()
            started = clock()
            for i in range(args.logins):
                login(i)
            elapsed = clock() - started
            rates.append(args.logins / elapsed)
            service = elapsed - spent["standin_artifact"] - spent["standin_answer"]
            service_rates.append(args.logins / service)
            per_step["service"].append(service / args.logins)
            per_step["total"].append(elapsed / args.logins)
            for step, _label in STEPS:
                per_step[step].append(spent[step] / args.logins)
        sp.close()

    total = statistics.median(per_step["total"])
    print(
        f"{args.rounds} rounds of {args.logins} logins, one process, {args.clock} clock, "
        "medians per login\n"
    )
    print("| step | ms per login | share |")
    print("|---|---:|---:|")
    for step, label in STEPS:
        value = statistics.median(per_step[step])
        print(f"| {label} | {value * 1000:.3f} | {value / total:.0%} |")
    print(f"| **complete login** | **{total * 1000:.3f}** | 100% |")
    service = statistics.median(per_step["service"])
    print(
        "| the service's work (complete login minus the stand-in's parts) "
        f"| {service * 1000:.3f} | {service / total:.0%} |"
    )
    print(
        f"\n**{statistics.median(service_rates):.0f} logins/s per core for the service** "
        f"(median of rounds; min {min(service_rates):.0f}, max {max(service_rates):.0f}); "
        f"{statistics.median(rates):.0f} logins/s with both sides in one process "
        f"(min {min(rates):.0f}, max {max(rates):.0f})"
    )


if __name__ == "__main__":
    main()
