"""The anchors' Ed25519 key: the private half signs them, the public half is all auditors need.

The private key lives in a file outside the database (``ANCHOR_KEY``), so that whoever can
write to the database cannot sign a head for a log they rewrote. Outside production, without
``ANCHOR_KEY``, the embedded default makes one in the instance folder, readable by its owner
only. Auditors hold the public key (``ANCHOR_PUBLIC_KEY``), taken from the operator once and
kept: ``openssl pkey -in anchor_key.pem -pubout`` prints it (docs/audit.md, "Anchors").
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import structlog
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ..config import ConfigError, Settings

log = structlog.get_logger(__name__)


def signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The key anchors are signed with; the embedded default makes it the first time.

    ConfigError when production has no ``ANCHOR_KEY``, or the file is not an Ed25519 key.
    """
    path = settings.anchor_key
    if path is None:
        raise ConfigError(
            "APP_ENV=production needs ANCHOR_KEY (the anchors' signing key); refusing to start."
        )
    if not path.exists() and "ANCHOR_KEY" not in settings.raw:
        _make_dev_key(path)
    key = _load(path, "ANCHOR_KEY", serialization.load_pem_private_key, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"ANCHOR_KEY {path} is not an Ed25519 private key")
    return key


def verifying_key(settings: Settings) -> Ed25519PublicKey:
    """The public key anchors are checked with: ``ANCHOR_PUBLIC_KEY``, else the signing key's.

    An auditor sets ``ANCHOR_PUBLIC_KEY``; an operator who holds the signing key, and the
    embedded default, need not. Nothing is made up: an anchor checked against a new key
    would only look forged.
    """
    if settings.anchor_public_key is not None:
        path = settings.anchor_public_key
        key = _load(path, "ANCHOR_PUBLIC_KEY", serialization.load_pem_public_key)
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"ANCHOR_PUBLIC_KEY {path} is not an Ed25519 public key")
        return key
    if settings.anchor_key is not None and settings.anchor_key.exists():
        return signing_key(settings).public_key()
    raise ConfigError(
        "set ANCHOR_PUBLIC_KEY to the anchors' public key (PEM), as the operator gave it"
    )


def key_id(key: Ed25519PublicKey) -> str:
    """SHA-256 of the key's SubjectPublicKeyInfo, as RFC 6962 names a log's key.

    ``openssl pkey -pubin -in anchor_key.pub -outform DER | sha256sum`` gives the same.
    """
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def _load(path: Path, setting: str, loader, **options):  # type: ignore[no-untyped-def]
    try:
        return loader(path.read_bytes(), **options)
    except OSError as error:
        raise ConfigError(f"{setting} {path}: {error.strerror or error}") from None
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(f"{setting} {path} is not a key in PEM") from None


def _make_dev_key(path: Path) -> None:
    """Write a new Ed25519 key to ``path``, readable by its owner only, unless one is there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # mkstemp makes the file 0600; link() fails if another process won the race, whose key
    # then stands.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        try:
            os.link(tmp, path)
            log.warning("anchor.development_key_generated", path=str(path))
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
