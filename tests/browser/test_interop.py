"""Interoperability: a relying party built with another OIDC library signs in through UEOZ.

UEOZ's provider is built on Authlib (as are the demo domain systems); ``tests/interop/rp.mjs``
is built on openid-client for Node.js (OpenID-certified, pinned in tests/interop's
package-lock.json; ``make test`` runs ``npm ci`` there). It is given the issuer URL and its
registration alone, and finds the rest by discovery.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from joserfc.jwk import ECKey
from playwright.sync_api import expect

from tests.browser.conftest import ROOT, Stack, log_in_at_node
from tests.ports import free_port

RP_FOLDER = ROOT / "tests" / "interop"
LIBRARY = RP_FOLDER / "node_modules" / "openid-client" / "package.json"
NODE_AT_LEAST = 20  # openid-client 6's baseline


@pytest.fixture(scope="session")
def node() -> str:
    """Node.js, with the RP's packages installed; a clear failure without them (no skip)."""
    found = shutil.which("node")
    if found is None:
        pytest.fail(
            "Node.js is not installed, and the interoperability test needs it: install "
            "Debian's nodejs and npm (scripts/system-deps.sh does), then run `make test`."
        )
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=True)
    if int(version.stdout.strip().lstrip("v").split(".")[0]) < NODE_AT_LEAST:
        pytest.fail(
            f"Node.js {version.stdout.strip()} is too old: openid-client needs "
            f"{NODE_AT_LEAST} or later (Debian 13's nodejs, or NodeSource's)."
        )
    if not LIBRARY.exists():
        pytest.fail(f"openid-client is not installed in {RP_FOLDER}: run `make test` (npm ci).")
    return found


def ueoz_migration(stack: Stack, *args: str) -> str:
    """Run the operator's CLI against the stack's instance; return what it printed."""
    env = {**os.environ, "INSTANCE_DIR": str(stack.instance_dir), "BASE_URL": stack.base_url}
    env.pop("DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "ueoz_migration.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextmanager
def node_rp(node: str, stack: Stack, folder: Path, port: int, **env: str) -> Iterator[str]:
    """Run rp.mjs for client P1 on ``port`` until the block ends; yield its address."""
    log = folder / "rp.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [node, "rp.mjs", "--issuer", stack.base_url, "--client-id", "P1", "--port", str(port)],
            cwd=RP_FOLDER,
            env={**os.environ, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while '"listening"' not in log.read_text():
                assert process.poll() is None, f"the RP stopped:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"the RP did not start:\n{log.read_text()}"
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.mark.parametrize("authentication", ["client_secret_basic", "private_key_jwt"])
def test_a_relying_party_built_with_openid_client_signs_in_by_discovery_alone(
    node, page, demo, tmp_path, authentication
):
    port = free_port()
    # The roles claim carries the e-PLOZ grants written under the client's id, so the RP is
    # registered as Platforma P1 would register a sign-in rewritten with openid-client.
    ueoz_migration(demo, "clients", "remove", "P1")
    registration = [
        "clients", "add", "P1", "--name", "Platforma P1 (openid-client)",
        "--redirect-uri", f"http://127.0.0.1:{port}/callback",
        "--scope", "openid", "--scope", "profile", "--scope", "email", "--scope", "roles",
    ]  # fmt: skip
    if authentication == "private_key_jwt":
        key = ECKey.generate_key("P-256", private=True)
        kid = key.thumbprint()
        public = {**key.as_dict(private=False), "kid": kid, "use": "sig", "alg": "ES256"}
        (tmp_path / "jwks.json").write_text(json.dumps({"keys": [public]}))
        (tmp_path / "private.jwk").write_text(json.dumps({**key.as_dict(private=True), "kid": kid}))
        ueoz_migration(demo, *registration, "--jwks-file", str(tmp_path / "jwks.json"))
        credentials = {"RP_PRIVATE_JWK": str(tmp_path / "private.jwk")}
    else:
        printed = ueoz_migration(demo, *registration)
        secret = next(line for line in printed.splitlines() if line.startswith("client_secret: "))
        credentials = {"RP_CLIENT_SECRET": secret.removeprefix("client_secret: ")}

    with node_rp(node, demo, tmp_path, port, **credentials) as rp:
        page.goto(f"{rp}/login")
        log_in_at_node(page, "Zofia")  # migrated already: straight back with a code
        expect(page.get_by_role("heading", level=1)).to_have_text("Zalogowano przez UEOZ")
        received = json.loads(page.locator("#result").inner_text())

    id_token, userinfo = received["id_token"], received["userinfo"]
    assert id_token["iss"] == demo.base_url
    assert id_token["aud"] == "P1"
    assert id_token["sub"] and userinfo["sub"] == id_token["sub"]
    assert id_token["acr"] == "http://eidas.europa.eu/LoA/substantial"
    assert userinfo["given_name"] == "Zofia"
    assert userinfo["family_name"] == "Dąbrowska"
    assert userinfo["email"] == "mkaczmarek@demo.ueoz.example"
    assert userinfo["email_verified"] is True
    assert userinfo["roles"] == ["LEKARZ"]
    # openid-client checked the ID token's signature with a key it fetched from the
    # discovered jwks_uri: the key UEOZ publishes there.
    header = received["id_token_header"]
    assert header["alg"] == "ES256"
    assert header["kid"] in received["jwks_kids"]
    with urllib.request.urlopen(f"{demo.base_url}/oidc/jwks", timeout=10) as answer:
        assert header["kid"] in [key["kid"] for key in json.load(answer)["keys"]]
