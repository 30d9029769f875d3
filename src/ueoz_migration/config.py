"""Settings, read from the environment in one place.

Every setting is one line below: its variable, its type and its default. The embedded default
(no variables at all) is a development service on SQLite with the stand-in login node and the
Maildir mail backend. ``APP_ENV=production`` turns the defaults that are only safe on a laptop
into errors: a production configuration missing a secret refuses to start.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path


class ConfigError(RuntimeError):
    """The configuration cannot run the service; the message says what to set."""


#: The words a yes/no setting takes, in any letter case.
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def flag_word(value: str) -> bool | None:
    """``True`` or ``False`` for a yes/no word (``on``, ``no``, ``1``…), ``None`` for any other."""
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


# The typed readers below turn a bad value into a ConfigError naming the variable and the
# value, which every entry point prints as one line. An empty variable counts as unset: from_env
# drops the blank ones before any is read.


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    value = flag_word(raw)
    if value is None:
        raise ConfigError(f"{name} must be true or false (1/0, yes/no, on/off), got {raw!r}")
    return value


def _whole(
    env: Mapping[str, str], name: str, default: int, *, minimum: int = 0, maximum: int | None = None
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
        raise ConfigError(f"{name} must be a whole number {bounds}, got {raw!r}")
    return value


def _duration(env: Mapping[str, str], name: str, default: float, unit: str) -> timedelta:
    """A positive number of ``unit`` (``seconds``, ``minutes``, ``hours`` or ``days``), fractions
    allowed."""
    raw = env.get(name, "").strip()
    if not raw:
        return timedelta(**{unit: default})
    try:
        # nan and inf parse as floats but are no duration; a huge number overflows timedelta.
        value = float(raw)
        duration = timedelta(**{unit: value}) if math.isfinite(value) else None
    except (ValueError, OverflowError):
        duration = None
    if duration is None or duration <= timedelta(0):
        raise ConfigError(f"{name} must be a positive number of {unit}, got {raw!r}")
    return duration


#: The database addresses the service runs on (db/engine.py turns postgresql:// into psycopg).
DATABASE_SCHEMES = ("postgresql", "postgresql+psycopg", "sqlite", "sqlite+pysqlite")


def _database_url(value: str) -> str:
    """``value`` when it is an address of a database the service runs on.

    The message never quotes the address: it may hold the database password.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(value)
    except (ArgumentError, NoSuchModuleError):
        url = None
    except ValueError:  # the only number in an address
        raise ConfigError("DATABASE_URL's port is not a number") from None
    if url is None or url.drivername not in DATABASE_SCHEMES:
        scheme = f", not {url.drivername}://…" if url is not None else ""
        raise ConfigError(
            "DATABASE_URL must be a postgresql://user:password@host:5432/name "
            f"or sqlite:///path address{scheme}"
        )
    return value


def _ca_file(path: str) -> str:
    """``path`` when it holds certificates TLS can trust; checked now, not at the first mail."""
    if path:
        import ssl

        try:
            ssl.create_default_context(cafile=path)
        except (OSError, ssl.SSLError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else error
            raise ConfigError(
                f"SMTP_CA_FILE must be a file of PEM certificates, got {path!r}: {reason}"
            ) from None
    return path


#: ``production``; the others are the embedded default, the test suite and the benchmarks.
APP_ENVS = ("production", "development", "test", "bench")


@dataclass(frozen=True)
class Settings:
    """The service's configuration; build it with :meth:`from_env`."""

    env: str
    database_url: str
    database_connect_wait: float
    secret_key: str
    audit_key: bytes
    pesel_key: bytes
    instance_dir: Path
    base_url: str
    attempt_ttl: timedelta
    verification_link_ttl: timedelta
    resend_limit_per_hour: int
    search_max_tries: int
    search_retry_base: timedelta
    search_timeout: timedelta
    mail_backend: str
    maildir_path: Path
    mail_from: str
    smtp_host: str
    smtp_port: int
    smtp_username: str
    smtp_password: str
    smtp_starttls: bool
    smtp_ca_file: str
    smtp_timeout: timedelta
    smtp_data_timeout: timedelta
    mail_max_tries: int
    mail_retry_base: timedelta
    helpdesk_phone: str
    helpdesk_email: str
    oidc_keys_dir: Path
    oidc_subject_key: bytes
    oidc_code_ttl: timedelta
    oidc_token_ttl: timedelta
    oidc_authorization_ttl: timedelta
    sso_session_ttl: timedelta
    backchannel_timeout: timedelta
    standin_url: str
    demo_systems_url: str
    log_json: bool
    # The anchors' Ed25519 signing key (PEM), None in production when ANCHOR_KEY is unset; and
    # the public key that checks them, for auditors who hold no signing key.
    anchor_key: Path | None
    anchor_public_key: Path | None
    # How long an ended attempt's personal data is kept (retention.py).
    retention: timedelta = timedelta(days=90)
    # How many look-ups one staff member may make in the console in an hour (console/looks.py).
    console_lookups_per_hour: int = 30
    raw: Mapping[str, str] = field(repr=False, default_factory=dict)

    @property
    def production(self) -> bool:
        return self.env == "production"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, existing_audit_key: bool = False
    ) -> Settings:
        """Read the settings; raise :class:`ConfigError` when production lacks a secret.

        ``existing_audit_key``: the caller reads a log already written (the auditors' and
        helpdesk's commands), so a development audit key must already be on disk: a new
        one would make every row of that log look changed. Such a caller hashes no PESEL and
        signs no session: it needs neither ``PESEL_HASH_KEY`` (which auditors should not
        hold) nor ``SECRET_KEY``, and none is made up for it.
        """
        # Blank (empty or white space) is unset, for every setting alike: `MAIL_FROM=` in a
        # unit file must not send mail from no one, nor `INSTANCE_DIR=` put the keys here.
        env = {
            name: value
            for name, value in (os.environ if environ is None else environ).items()
            if value.strip()
        }
        app_env = env.get("APP_ENV", "development")
        if app_env not in APP_ENVS:
            # A near miss ("prod", "Production") would otherwise run with the development
            # pages and without secure cookies.
            raise ConfigError(f"APP_ENV must be one of {', '.join(APP_ENVS)}, not {app_env!r}.")
        production = app_env == "production"
        instance_dir = Path(env.get("INSTANCE_DIR", "var")).absolute()
        get = env.get

        reading = existing_audit_key
        needed = (
            ("AUDIT_KEY", "DATABASE_URL")
            if reading
            else (
                "SECRET_KEY",
                "AUDIT_KEY",
                "PESEL_HASH_KEY",
                "DATABASE_URL",
                "BASE_URL",
                "OIDC_KEYS_DIR",
                "OIDC_SUBJECT_KEY",
            )
        )
        missing = [name for name in needed if production and not get(name)]
        if missing:
            raise ConfigError(
                "APP_ENV=production needs " + ", ".join(missing) + "; refusing to start."
            )
        if get("DOMAIN_SYSTEMS"):
            # Its systems and return addresses would be silently ignored: every domain system
            # is now a registered OpenID Connect client.
            raise ConfigError(
                "DOMAIN_SYSTEMS is no longer read: register each domain system with "
                "`ueoz-migration clients add` (docs/integration.md) and unset it."
            )
        if production:
            _refuse_weak_secrets(get)
        if production and get("MAIL_BACKEND", "smtp") != "smtp":
            raise ConfigError("APP_ENV=production sends e-mail over SMTP only (MAIL_BACKEND).")
        if (
            existing_audit_key
            and not get("AUDIT_KEY")
            and not (instance_dir / "audit_key").exists()
        ):
            raise ConfigError(
                f"AUDIT_KEY is not set and {instance_dir / 'audit_key'} does not exist: "
                "set AUDIT_KEY (or INSTANCE_DIR) to the key the log was written with."
            )

        # Before any development key is written: a command refused for its address leaves none.
        database_url = _database_url(
            get("DATABASE_URL", f"sqlite:///{instance_dir / 'ueoz.sqlite3'}")
        )
        base_url = get("BASE_URL", "http://127.0.0.1:5000").rstrip("/")
        if reading:
            pesel_key, secret_key = get("PESEL_HASH_KEY") or "", get("SECRET_KEY") or ""
            subject_key = get("OIDC_SUBJECT_KEY") or ""
        else:
            # Before the audit key: a development audit key on disk without a PESEL key
            # means an instance from before the keys were split (see _dev_pesel_key).
            pesel_key = get("PESEL_HASH_KEY") or _dev_pesel_key(instance_dir, get("AUDIT_KEY"))
            secret_key = get("SECRET_KEY") or dev_secret(instance_dir, "secret_key")
            # Never to change: every domain system would see new people (oidc/claims.py).
            subject_key = get("OIDC_SUBJECT_KEY") or dev_secret(instance_dir, "oidc_subject_key")
        return cls(
            env=app_env,
            database_url=database_url,
            # Long enough to ride out a PostgreSQL restart (a few seconds) unseen.
            database_connect_wait=_whole(env, "DATABASE_CONNECT_WAIT_SECONDS", 5, maximum=60),
            secret_key=secret_key,
            audit_key=(get("AUDIT_KEY") or dev_secret(instance_dir, "audit_key")).encode(),
            pesel_key=pesel_key.encode(),
            instance_dir=instance_dir,
            base_url=base_url,
            attempt_ttl=_duration(env, "ATTEMPT_TTL_HOURS", 72, "hours"),
            verification_link_ttl=_duration(env, "VERIFICATION_LINK_TTL_HOURS", 24, "hours"),
            # At least one: the first link goes out under the same limit.
            resend_limit_per_hour=_whole(env, "RESEND_LIMIT_PER_HOUR", 3, minimum=1),
            search_max_tries=_whole(env, "SEARCH_MAX_TRIES", 5, minimum=1),
            search_retry_base=_duration(env, "SEARCH_RETRY_BASE_SECONDS", 2, "seconds"),
            search_timeout=_duration(env, "SEARCH_TIMEOUT_SECONDS", 10, "seconds"),
            mail_backend=get("MAIL_BACKEND", "smtp" if production else "maildir"),
            maildir_path=Path(get("MAILDIR_PATH", str(instance_dir / "maildir"))).absolute(),
            mail_from=get("MAIL_FROM", "UEOZ <no-reply@ueoz.example>"),
            smtp_host=get("SMTP_HOST", "127.0.0.1"),
            smtp_port=_whole(env, "SMTP_PORT", 25, minimum=1, maximum=65535),
            smtp_username=get("SMTP_USERNAME", ""),
            smtp_password=get("SMTP_PASSWORD", ""),
            smtp_starttls=_flag(env, "SMTP_STARTTLS", False),
            smtp_ca_file=_ca_file(get("SMTP_CA_FILE", "")),
            smtp_timeout=_duration(env, "SMTP_TIMEOUT_SECONDS", 10, "seconds"),
            # The server's answer to the whole message: it may be storing or scanning it, and
            # giving up before its 250 sends the person a second copy (RFC 5321 §4.5.3.2.6).
            smtp_data_timeout=_duration(env, "SMTP_DATA_TIMEOUT_SECONDS", 120, "seconds"),
            # Only for errors the sender cannot place; delivery errors are retried for as
            # long as the link works (VERIFICATION_LINK_TTL_HOURS), whatever this says.
            mail_max_tries=_whole(env, "MAIL_MAX_TRIES", 8, minimum=1),
            mail_retry_base=_duration(env, "MAIL_RETRY_BASE_SECONDS", 30, "seconds"),
            helpdesk_phone=get("HELPDESK_PHONE", "19239"),
            helpdesk_email=get("HELPDESK_EMAIL", "logowanie@cez.gov.pl"),
            # The ID token signing keys and their manifest (oidc/keys.py), outside the database.
            oidc_keys_dir=Path(get("OIDC_KEYS_DIR", str(instance_dir / "oidc-keys"))).absolute(),
            oidc_subject_key=subject_key.encode(),
            oidc_code_ttl=_duration(env, "OIDC_CODE_TTL_SECONDS", 60, "seconds"),
            oidc_token_ttl=_duration(env, "OIDC_TOKEN_TTL_SECONDS", 300, "seconds"),
            # How long a domain system's request waits for the person: the node login and
            # the migration's screens; the browser session ends sooner when left alone.
            oidc_authorization_ttl=_duration(env, "OIDC_AUTHORIZATION_TTL_MINUTES", 120, "minutes"),
            sso_session_ttl=_duration(env, "SSO_SESSION_HOURS", 10, "hours"),
            backchannel_timeout=_duration(env, "BACKCHANNEL_LOGOUT_TIMEOUT_SECONDS", 5, "seconds"),
            standin_url=get("STANDIN_URL", "http://127.0.0.1:5001").rstrip("/"),
            # The demo domain systems of the embedded default (demo_systems/), never production.
            demo_systems_url=get("DEMO_SYSTEMS_URL", "http://127.0.0.1:5002").rstrip("/"),
            log_json=_flag(env, "LOG_JSON", production),
            anchor_key=_file(
                get("ANCHOR_KEY"), None if production else instance_dir / "anchor_key.pem"
            ),
            anchor_public_key=_file(get("ANCHOR_PUBLIC_KEY"), None),
            retention=_duration(env, "RETENTION_DAYS", 90, "days"),
            console_lookups_per_hour=_whole(env, "CONSOLE_LOOKUPS_PER_HOUR", 30, minimum=1),
            raw=env,
        )


def _file(value: str | None, default: Path | None) -> Path | None:
    """A file setting as an absolute path, or ``default`` when it is unset."""
    return Path(value).absolute() if value else default


#: The fewest bytes a production secret may have: a key of SHA-256's size (HMAC, CSRF).
MIN_SECRET_BYTES = 32


def _refuse_weak_secrets(get: Callable[[str], str | None]) -> None:
    """Refuse production secrets short enough to guess, and one PESEL and audit key.

    Auditors hold ``AUDIT_KEY``; keying the PESEL hashes with it too would let them turn a
    hash back into its PESEL by trying every valid number (``pesel rekey`` splits the two).
    """
    short = [
        name
        for name in ("SECRET_KEY", "AUDIT_KEY", "PESEL_HASH_KEY", "OIDC_SUBJECT_KEY")
        if (value := get(name)) and len(value.encode()) < MIN_SECRET_BYTES
    ]
    if short:
        raise ConfigError(
            f"APP_ENV=production needs {' and '.join(short)} of at least {MIN_SECRET_BYTES} "
            "bytes; refusing to start."
        )
    if get("PESEL_HASH_KEY") and get("PESEL_HASH_KEY") == get("AUDIT_KEY"):
        raise ConfigError(
            "APP_ENV=production needs a PESEL_HASH_KEY other than AUDIT_KEY (re-key the PESEL "
            "hashes with `ueoz-migration pesel rekey`); refusing to start."
        )


def _dev_pesel_key(instance_dir: Path, audit_key: str | None) -> str:
    """The development key of the PESEL hashes, kept apart from the audit key.

    Auditors hold the audit key to check the chain; with it alone they must not be able to
    turn a ``pesel_hash`` back into a PESEL by trying every valid number (a few hundred
    million). An instance made before the two keys were split hashed PESELs with its audit
    key (``AUDIT_KEY``, or the file): it keeps doing so, or its people would no longer be
    found. A new instance without ``AUDIT_KEY`` gets a key of its own.
    """
    legacy = audit_key or None
    if legacy is None and (instance_dir / "audit_key").exists():
        legacy = (instance_dir / "audit_key").read_text().strip()
    return dev_secret(instance_dir, "pesel_key", first_value=legacy)


def dev_secret(instance_dir: Path, name: str, *, first_value: str | None = None) -> str:
    """Return a development secret, written once into the instance folder.

    Only reached outside production; kept on disk so sessions and the audit chain's keyed
    hashes survive a restart of the embedded default. The first time, it is
    ``first_value`` when one is given, else random.
    """
    path = instance_dir / name
    if path.exists():
        return path.read_text().strip()
    # The folder also gets the SQLite file, the development key pairs and the Maildir.
    instance_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    value = first_value or secrets.token_urlsafe(32)
    try:
        # Created readable by its owner only: no moment when another user could read it.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process of the embedded default won the race
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as handle:
        handle.write(value)
    return value
