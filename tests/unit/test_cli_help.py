"""Help, a mistyped command and a bad option need no configuration, and write nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from ueoz_migration.cli import main

PRODUCTION_WITHOUT_SECRETS = {"APP_ENV": "production"}


@pytest.mark.parametrize(
    "command",
    [
        ["--help"],
        ["audit", "--help"],
        ["audit", "verify", "--help"],
        ["audit", "anchor", "--help"],
        ["helpdesk", "lookup", "--help"],
        ["db", "upgrade", "--help"],
        ["eploz", "import", "--help"],
        ["pesel", "rekey", "--help"],
        ["worker", "--help"],
        ["mail-sender", "--help"],
        ["retention", "purge", "--help"],
        ["diagram", "--help"],
        ["dev", "--help"],
    ],
)
@pytest.mark.parametrize("environ", [{}, PRODUCTION_WITHOUT_SECRETS])
def test_help_needs_no_configuration_and_writes_nothing(tmp_path, monkeypatch, command, environ):
    monkeypatch.chdir(tmp_path)

    result = CliRunner().invoke(main, command, env=environ)

    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")
    assert list(tmp_path.iterdir()) == []  # no var/ with development keys


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["nosuch"], "Error: No such command 'nosuch'."),
        (["audit", "nosuch"], "Error: No such command 'nosuch'."),
        (
            ["worker", "--interval", "-1"],
            "Error: Invalid value for '--interval': -1.0 is not in the range 0<x<=3600.",
        ),
        (
            ["mail-sender", "--interval", "0"],
            "Error: Invalid value for '--interval': 0.0 is not in the range 0<x<=3600.",
        ),
        (
            ["worker", "--interval", "nan"],
            "Error: Invalid value for '--interval': must be a number of seconds, not nan",
        ),
        (
            ["audit", "show", "\udcff87042712342"],  # a stray byte, as a terminal passes it
            "Error: Invalid value for 'MIGRATION_…|ATTEMPT': is not an event number or an "
            "attempt id (unprintable text)",
        ),
    ],
)
def test_a_wrong_invocation_is_a_usage_error_before_any_setting_is_read(
    tmp_path, monkeypatch, command, message
):
    monkeypatch.chdir(tmp_path)

    result = CliRunner().invoke(main, command, env=PRODUCTION_WITHOUT_SECRETS)

    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == message
    assert list(tmp_path.iterdir()) == []


def test_diagram_needs_no_secret(tmp_path):
    result = CliRunner().invoke(
        main, ["diagram", "--format", "dot", "--output", "-"], env=PRODUCTION_WITHOUT_SECRETS
    )

    assert result.exit_code == 0, result.output
    assert result.output.startswith("digraph")


def test_a_command_that_runs_still_needs_its_configuration(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    result = CliRunner().invoke(main, ["audit", "verify"], env={})

    assert result.exit_code == 1
    assert result.output == (
        f"Error: AUDIT_KEY is not set and {tmp_path / 'var' / 'audit_key'} does not exist: "
        "set AUDIT_KEY (or INSTANCE_DIR) to the key the log was written with.\n"
    )


def standin(tmp_path, **environ: str) -> subprocess.CompletedProcess[str]:
    """`python -m ueoz_migration.standin`; only ever refused here, so it never listens."""
    return subprocess.run(
        [sys.executable, "-m", "ueoz_migration.standin"],
        env=os.environ | {"INSTANCE_DIR": str(tmp_path)} | environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_standin_refuses_production_in_one_line(tmp_path):
    ran = standin(tmp_path, APP_ENV="production")

    assert ran.returncode == 1
    assert ran.stdout == ""
    assert ran.stderr.splitlines()[-1] == (
        "Error: the stand-in login node runs only with APP_ENV development, test, bench "
        "(never in production)"
    )
    assert "Traceback" not in ran.stderr


@pytest.mark.parametrize("port", ["abc", "0", "70000"])
def test_the_standin_names_a_port_it_cannot_listen_on(tmp_path, port):
    ran = standin(tmp_path, APP_ENV="test", STANDIN_PORT=port)

    assert ran.returncode == 1
    assert ran.stderr.splitlines()[-1] == (
        f"Error: STANDIN_PORT must be a port from 1 to 65535, got {port!r}"
    )
    assert "Traceback" not in ran.stderr


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        (
            "STANDIN_FAILURE",
            "slowly",
            "Error: STANDIN_FAILURE must be one of authn_failed, request_denied, "
            "unknown_principal, requester, bad_signature, slow, dead, soap_fault, key_128, "
            "expired, repeat_assertion_id, comment_in_nameid, other_audience, no_audience, "
            "denied_in_response, "
            "got 'slowly'",
        ),
        (
            "STANDIN_SLOW_SECONDS",
            "soon",
            "Error: STANDIN_SLOW_SECONDS must be a positive number, got 'soon'",
        ),
    ],
)
def test_the_standin_names_a_setting_it_cannot_use(tmp_path, setting, value, message):
    ran = standin(tmp_path, APP_ENV="test", **{setting: value})

    assert ran.returncode == 1
    assert ran.stderr.splitlines()[-1] == message
    assert "Traceback" not in ran.stderr


def test_the_standin_names_signing_files_it_cannot_read(tmp_path):
    missing = tmp_path / "nowhere.pem"
    ran = standin(
        tmp_path,
        APP_ENV="test",
        STANDIN_SIGNING_KEY=str(missing),
        STANDIN_SIGNING_CERT=str(missing),
    )

    assert ran.returncode == 1
    last = ran.stderr.splitlines()[-1]
    assert last.startswith("Error: STANDIN_SIGNING_KEY/STANDIN_SIGNING_CERT: ")
    assert "No such file or directory" in last
    assert "Traceback" not in ran.stderr
