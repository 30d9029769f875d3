"""The provider's signing keys: ES256 (and RS256), in a folder outside the database, rotated.

docs/integration.md ("Signing keys") and docs/operations.md ("Rotating the signing keys") say
how an operator rotates them. The folder (``OIDC_KEYS_DIR``) holds one PEM file per key and a
manifest, ``keys.json``, that says from when each key signs and until when it is published.
Every instance reads the same folder and looks at the manifest again every few seconds, so a
rotation reaches them all without a restart: a new key is published first and signs only
``publish_ahead`` later, when every instance (and every domain system that fetched the JWKS
since) knows it; the key it replaces stays published for ``overlap`` more, while the ID tokens
it signed may still be shown (an ``id_token_hint`` at logout).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from joserfc.jwk import ECKey, KeySet, RSAKey

from ..config import ConfigError

Key = ECKey | RSAKey

ALGORITHM = "ES256"
#: Every algorithm a key is kept for. ES256 signs everything by default; RS256 only the ID
#: tokens of a client registered for it (OpenID Connect Core 15.1: every provider must be
#: able to), so both are made at each rotation.
ALGORITHMS = ("ES256", "RS256")
MANIFEST = "keys.json"
#: How long a new key is published before it signs (longer than RELOAD_EVERY, and than the
#: JWKS answer may be cached: web/oidc.py's JWKS_MAX_AGE).
PUBLISH_AHEAD = timedelta(minutes=10)
#: How long a replaced key stays published: the longest an ID token it signed is still shown
#: (as an ``id_token_hint``, which may be older than the token's own expiry).
OVERLAP = timedelta(hours=24)
#: How often an instance looks whether the manifest changed.
RELOAD_EVERY = 10.0


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class KeyEntry:
    """One key of the manifest: its id and algorithm, and when it signs and is published."""

    kid: str
    alg: str
    created_at: datetime
    signs_from: datetime
    # None while no newer key has replaced it.
    published_until: datetime | None = None

    def published(self, now: datetime) -> bool:
        return self.published_until is None or now < self.published_until

    def to_json(self) -> dict[str, str | None]:
        return {
            name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in asdict(self).items()
        }

    @classmethod
    def from_json(cls, data: dict[str, str | None]) -> KeyEntry:
        def when(name: str) -> datetime | None:
            value = data.get(name)
            return datetime.fromisoformat(value) if value else None

        created_at, signs_from = when("created_at"), when("signs_from")
        assert created_at is not None and signs_from is not None
        alg = str(data["alg"])
        return cls(str(data["kid"]), alg, created_at, signs_from, when("published_until"))


class SigningKeys:
    """The keys of ``folder``: the one that signs now, and the ones published."""

    def __init__(self, folder: Path, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.folder = folder
        self.clock = clock
        self._lock = threading.Lock()
        self._mtime: int | None = None
        self._checked = -RELOAD_EVERY
        self._entries: list[KeyEntry] = []
        self._keys: dict[str, Key] = {}
        self._public: dict[str, dict[str, str]] = {}  # each key's public JWK, made once

    @classmethod
    def open(cls, folder: Path, *, create: bool, **options: object) -> SigningKeys:
        """Read the folder's keys; with ``create`` (the embedded default), make a first key.

        Raise :class:`ConfigError` when there is none to sign with.
        """
        keys = cls(folder, **options)  # type: ignore[arg-type]
        if create and not (folder / MANIFEST).exists():
            with keys._manifest_lock():  # several processes of the stack start at once
                if not (folder / MANIFEST).exists():
                    keys._add_keys(publish_ahead=timedelta(0), overlap=OVERLAP)
        keys.signing_key()  # fails now, not at the first sign-in
        return keys

    # -- reading ---------------------------------------------------------------------------

    def entries(self) -> list[KeyEntry]:
        self._reload_if_changed()
        return list(self._entries)

    def signing_key(self, alg: str = ALGORITHM) -> Key:
        """The newest key for ``alg`` whose time to sign has come."""
        now = self.clock()
        ready = [entry for entry in self.entries() if entry.alg == alg and entry.signs_from <= now]
        if not ready:
            raise ConfigError(
                f"{self.folder} holds no {alg} key to sign with: "
                "run `ueoz-migration keys rotate` (docs/operations.md)"
            )
        return self._keys[max(ready, key=lambda entry: entry.signs_from).kid]

    def public_jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWKS to publish: every key that signs, will sign, or signed tokens still shown."""
        now = self.clock()
        published = [entry.kid for entry in self.entries() if entry.published(now)]
        return {"keys": [self._public[kid] for kid in published]}

    def public_key_set(self) -> KeySet:
        return KeySet.import_key_set(self.public_jwks())

    def _reload_if_changed(self) -> None:
        with self._lock:
            if time.monotonic() - self._checked < RELOAD_EVERY and self._entries:
                return
            self._checked = time.monotonic()
            try:
                mtime = (self.folder / MANIFEST).stat().st_mtime_ns
            except FileNotFoundError:
                mtime = None
            if mtime == self._mtime:
                return
            entries = self._read_manifest()
            self._keys = {entry.kid: self._read_key(entry) for entry in entries}
            self._public = {kid: key.as_dict(private=False) for kid, key in self._keys.items()}
            self._entries, self._mtime = entries, mtime

    def _read_manifest(self) -> list[KeyEntry]:
        try:
            data = json.loads((self.folder / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as error:
            raise ConfigError(f"{self.folder / MANIFEST} cannot be read: {error}") from None
        return [KeyEntry.from_json(entry) for entry in data["keys"]]

    def _read_key(self, entry: KeyEntry) -> Key:
        path = self.folder / f"{entry.kid}.pem"
        kind = ECKey if entry.alg.startswith("ES") else RSAKey
        try:
            return kind.import_key(
                path.read_bytes(), {"kid": entry.kid, "use": "sig", "alg": entry.alg}
            )
        except (OSError, ValueError) as error:
            raise ConfigError(f"signing key {path} cannot be read: {error}") from None

    # -- rotating --------------------------------------------------------------------------

    def rotate(
        self, *, publish_ahead: timedelta = PUBLISH_AHEAD, overlap: timedelta = OVERLAP
    ) -> list[KeyEntry]:
        """Make new keys, one per algorithm: published now, signing ``publish_ahead`` from now.

        The keys they replace stay published until ``overlap`` after that; keys no longer
        published leave the manifest, and their files are deleted.
        """
        with self._manifest_lock():
            return self._add_keys(publish_ahead=publish_ahead, overlap=overlap)

    def _add_keys(self, *, publish_ahead: timedelta, overlap: timedelta) -> list[KeyEntry]:
        """:meth:`rotate`, under the manifest's lock."""
        now = self.clock()
        signs_from = now + publish_ahead
        # Every key still unreplaced is replaced once the new ones sign.
        entries = [
            entry
            if entry.published_until is not None
            else replace(entry, published_until=signs_from + overlap)
            for entry in self._read_manifest()
            if entry.published(now)
        ]
        new = []
        for alg in ALGORITHMS:
            key: Key = (
                ECKey.generate_key("P-256", private=True)
                if alg == "ES256"
                else RSAKey.generate_key(2048, private=True)
            )
            kid = key.thumbprint()
            _write_private(self.folder / f"{kid}.pem", key.as_pem(private=True))
            new.append(KeyEntry(kid, alg, now, signs_from))
        self._write_manifest([*entries, *new])
        kept = {f"{entry.kid}.pem" for entry in [*entries, *new]}
        for path in self.folder.glob("*.pem"):
            if path.name not in kept:
                path.unlink()
        self._checked = -RELOAD_EVERY  # this process sees it at once
        return new

    def _write_manifest(self, entries: list[KeyEntry]) -> None:
        text = json.dumps({"keys": [entry.to_json() for entry in entries]}, indent=2) + "\n"
        temporary = self.folder / f".{MANIFEST}.{os.getpid()}"
        _write_private(temporary, text.encode())
        os.replace(temporary, self.folder / MANIFEST)  # readers see the old or the new, whole

    @contextmanager
    def _manifest_lock(self) -> Iterator[None]:
        """Serialise rotations, from any process on this machine (another would lose a key)."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with (self.folder / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner may read: it holds a private key, or names them."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
