"""The embedded default's two domain systems: real relying parties signing in through UEOZ.

``make run`` registers them (:func:`register_demo_systems`) and serves them on a port of their
own (``python -m ueoz_migration.demo_systems``, at ``DEMO_SYSTEMS_URL``): **Platforma P1**
authenticates with a client secret, **gabinet.gov.pl** with its own key (``private_key_jwt``),
so both ways a domain system can sign in are shown. Never run in production.
"""

from __future__ import annotations

import os
import secrets
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from joserfc.jwk import ECKey

from ..oidc.clients import ClientError, ClientRegistry, Registration


@dataclass(frozen=True)
class DemoSystem:
    id: str
    name: str
    private_key_jwt: bool


DEMO_SYSTEMS = (
    DemoSystem("P1", "Platforma P1 (demo)", private_key_jwt=False),
    DemoSystem("GABINET", "gabinet.gov.pl (demo)", private_key_jwt=True),
)
SCOPES = ("openid", "profile", "email", "roles")


@dataclass(frozen=True)
class Credentials:
    """What a demo system proves itself with at the token endpoint."""

    secret: str | None = None
    key: ECKey | None = None


def credentials_folder(instance_dir: Path) -> Path:
    return instance_dir / "demo-systems"


def credentials(system: DemoSystem, folder: Path) -> Credentials:
    """The system's secret or key, made once into ``folder`` (readable by its owner only)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if system.private_key_jwt:
        path = folder / f"{system.id}.key.pem"
        if not path.exists():
            key = ECKey.generate_key("P-256", private=True)
            _write_private(path, key.as_pem(private=True))
        pem = path.read_bytes()
        return Credentials(key=ECKey.import_key(pem, {"kid": ECKey.import_key(pem).thumbprint()}))
    path = folder / f"{system.id}.secret"
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(32).encode())
    return Credentials(secret=path.read_text().strip())


def registration(system: DemoSystem, base_url: str, found: Credentials) -> Registration:
    """The demo system's registration, as an operator would make it (``clients add``)."""
    here = f"{base_url}/{system.id}"
    jwks = None
    if found.key is not None:
        jwks = {"keys": [{**found.key.as_dict(private=False), "use": "sig", "alg": "ES256"}]}
    return Registration(
        id=system.id,
        name=system.name,
        redirect_uris=(f"{here}/callback",),
        post_logout_redirect_uris=(f"{here}/",),
        backchannel_logout_uri=f"{here}/backchannel-logout",
        initiate_login_uri=f"{here}/login",
        jwks=jwks,
        scopes=SCOPES,
    )


def register_demo_systems(registry: ClientRegistry, instance_dir: Path, base_url: str) -> None:
    """Register the demo systems for ``base_url``, with the credentials they run with.

    Safe to run again: each registration is made anew, with the credentials kept in the
    instance folder, so the demo systems running on that folder keep signing in.
    """
    folder = credentials_folder(instance_dir)
    for system in DEMO_SYSTEMS:
        found = credentials(system, folder)
        with suppress(ClientError):  # not registered yet
            registry.remove(system.id)
        registry.add(registration(system, base_url, found), secret=found.secret)


def _write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
