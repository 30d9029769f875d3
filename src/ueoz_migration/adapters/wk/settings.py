# ruff: noqa: E501  (the variable table below reads best unwrapped)
"""Settings of the service provider side of login through Węzeł Krajowy.

Every setting comes from one environment variable:

| variable | meaning | default (development) |
|---|---|---|
| `WK_SP_ENTITY_ID` | the service's entity id, registered with the node's operator | `{base_url}/saml/metadata` |
| `WK_ACS_URL` | assertion consumer service (artifact binding) | `{base_url}/saml/acs` |
| `WK_SLO_URL` | a logout endpoint to publish in metadata, for logouts the node starts; the service does not serve one, so it stays empty unless something at that address answers the node's SOAP LogoutRequest (the service's own logout goes to the node over SOAP either way) | empty: none published |
| `WK_NODE_URL` | base address of the node (`https://login.gov.pl`, `https://int.login.gov.pl`) | `http://127.0.0.1:5001` (the stand-in); required in production, and `https://` there, as are the endpoints below |
| `WK_SSO_URL` | where the browser posts the AuthnRequest | `{WK_NODE_URL}/login/SingleSignOnService` |
| `WK_ARTIFACT_RESOLUTION_URL` | SOAP ArtifactResolve endpoint | `{WK_NODE_URL}/login-services/idpArtifactResolutionService` |
| `WK_LOGOUT_URL` | SOAP LogoutRequest endpoint | `{WK_NODE_URL}/login-services/singleLogoutService` |
| `WK_NODE_ENTITY_ID` | the node's issuer | host (and port) of `WK_NODE_URL` |
| `WK_NODE_CERT` | path of the node's signing certificate (PEM); the only one trusted | the stand-in's development certificate |
| `WK_SP_SIGNING_KEY`, `WK_SP_SIGNING_CERT` | paths of the service's P-256 signing key and certificate | a development pair |
| `WK_SP_ENCRYPTION_KEY`, `WK_SP_ENCRYPTION_CERT` | paths of the service's P-256 key the assertion is encrypted to, and its certificate | a development pair |
| `WK_LOA` | level of assurance asked for: `low`, `substantial`, `high` | `substantial` |
| `WK_TIMEOUT_SECONDS` | back-channel (SOAP) timeout | `5` |
| `WK_CLOCK_SKEW_SECONDS` | clock difference tolerated with the node | `120` |
| `WK_MESSAGE_LIFETIME_SECONDS` | how old a node message may be | `300` |
| `WK_TLS_VERIFY` | verify the node's TLS certificate (`true`/`false`, and the other yes/no words of `config.py`: `1`/`0`, `yes`/`no`, `on`/`off`), or a CA bundle path | `true`; `false` refused in production |

Development key pairs are generated once into `{instance_dir}/wk/` and reused; in
production every key and certificate must be configured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ...config import ConfigError, flag_word
from .keys import KeyPair, dev_pair, load_cert, load_pair

DEV_NODE_URL = "http://127.0.0.1:5001"
SSO_PATH = "/login/SingleSignOnService"
ARTIFACT_RESOLUTION_PATH = "/login-services/idpArtifactResolutionService"
LOGOUT_PATH = "/login-services/singleLogoutService"
LOA_LEVELS = ("low", "substantial", "high")


class WkConfigError(ConfigError):
    """A setting of the login through the node is missing or wrong."""


@dataclass(frozen=True)
class WkSettings:
    """Everything the service provider needs to talk to the node."""

    sp_entity_id: str
    acs_url: str
    slo_url: str
    sso_url: str
    artifact_resolution_url: str
    logout_url: str
    node_entity_id: str
    node_cert_pem: bytes
    sp_signing: KeyPair
    sp_encryption: KeyPair
    loa: str = "substantial"
    timeout_seconds: float = 5.0
    clock_skew_seconds: int = 120
    message_lifetime_seconds: int = 300
    tls_verify: bool | str = True
    #: False when ``node_entity_id`` is the default taken from ``WK_NODE_URL``.
    node_entity_id_set: bool = True

    def __post_init__(self) -> None:
        if self.loa not in LOA_LEVELS:
            raise WkConfigError(f"WK_LOA must be one of {', '.join(LOA_LEVELS)}, not {self.loa!r}")

    @property
    def node_entity_id_said(self) -> str:
        """Which issuer the service expects and where it comes from, for a login failing on it.

        A node whose issuer is not the host of its address fails every login while
        ``WK_NODE_ENTITY_ID`` is not set; the log line of each says so.
        """
        if self.node_entity_id_set:
            return f"WK_NODE_ENTITY_ID is {self.node_entity_id!r}"
        return (
            f"WK_NODE_ENTITY_ID is not set, so the host of WK_NODE_URL, {self.node_entity_id!r}, "
            "is expected: set WK_NODE_ENTITY_ID to the node's issuer"
        )

    @property
    def loa_uri(self) -> str:
        return f"http://eidas.europa.eu/LoA/{self.loa}"

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        *,
        base_url: str,
        instance_dir: str | Path,
        production: bool,
    ) -> WkSettings:
        """Read the `WK_*` variables; make development keys where allowed."""
        base_url = base_url.rstrip("/")
        dev_dir = Path(instance_dir) / "wk"

        def get(name: str, default: str | None = None) -> str | None:
            value = environ.get(name, "").strip()
            return value or default

        def required_in_production(name: str, default: str) -> str:
            value = get(name)
            if value is None:
                if production:
                    raise WkConfigError(f"{name} must be set in production")
                return default
            return value

        def in_production_https(name: str, url: str) -> str:
            # The person's browser is sent to the node to type their credentials, and the
            # artifact travels to it: never in clear outside development.
            if production and urlsplit(url).scheme != "https":
                raise WkConfigError(f"{name} must be an https:// address in production")
            return url

        node_url = in_production_https(
            "WK_NODE_URL", required_in_production("WK_NODE_URL", DEV_NODE_URL).rstrip("/")
        )

        def node_endpoint(name: str, path: str) -> str:
            return in_production_https(name, get(name) or node_url + path)

        sso_url = node_endpoint("WK_SSO_URL", SSO_PATH)
        artifact_resolution_url = node_endpoint(
            "WK_ARTIFACT_RESOLUTION_URL", ARTIFACT_RESOLUTION_PATH
        )
        logout_url = node_endpoint("WK_LOGOUT_URL", LOGOUT_PATH)
        # The service's yes/no words (config.flag_word); anything else is a CA bundle path.
        tls_raw = get("WK_TLS_VERIFY", "true") or "true"
        tls_word = flag_word(tls_raw)
        if tls_word is False and production:
            raise WkConfigError(f"WK_TLS_VERIFY={tls_raw} is not allowed in production")
        if tls_word is None and not Path(tls_raw).is_file():
            # Taken as a path, a misspelt word would only fail at the first login, in
            # httpx, with an error that does not name the setting.
            raise WkConfigError(
                "WK_TLS_VERIFY must be true or false (1/0, yes/no, on/off) or the path of "
                f"a CA bundle file, got {tls_raw!r}, which is no file"
            )
        tls_verify: bool | str = tls_raw if tls_word is None else tls_word

        node_cert_path = get("WK_NODE_CERT")
        if node_cert_path:
            try:
                node_cert = load_cert(node_cert_path)
            except (OSError, ValueError) as exc:
                raise WkConfigError(f"WK_NODE_CERT: {exc}") from exc
        elif production:
            raise WkConfigError("WK_NODE_CERT must be set in production")
        else:
            # The stand-in node uses the same file, whichever process starts first.
            node_cert = dev_pair(dev_dir, "standin-signing", "WK stand-in node").cert_pem

        return cls(
            sp_entity_id=get("WK_SP_ENTITY_ID", f"{base_url}/saml/metadata") or "",
            acs_url=get("WK_ACS_URL", f"{base_url}/saml/acs") or "",
            slo_url=get("WK_SLO_URL", "") or "",
            sso_url=sso_url,
            artifact_resolution_url=artifact_resolution_url,
            logout_url=logout_url,
            node_entity_id=get("WK_NODE_ENTITY_ID", urlsplit(node_url).netloc) or "",
            node_entity_id_set=get("WK_NODE_ENTITY_ID") is not None,
            node_cert_pem=node_cert,
            sp_signing=_sp_pair(environ, "WK_SP_SIGNING", dev_dir, "sp-signing", production),
            sp_encryption=_sp_pair(
                environ, "WK_SP_ENCRYPTION", dev_dir, "sp-encryption", production
            ),
            loa=(get("WK_LOA", "substantial") or "").lower(),
            timeout_seconds=positive_number(environ, "WK_TIMEOUT_SECONDS", 5.0, float),
            clock_skew_seconds=positive_number(environ, "WK_CLOCK_SKEW_SECONDS", 120, int),
            message_lifetime_seconds=positive_number(
                environ, "WK_MESSAGE_LIFETIME_SECONDS", 300, int
            ),
            tls_verify=tls_verify,
        )


def _sp_pair(
    environ: Mapping[str, str], prefix: str, dev_dir: Path, name: str, production: bool
) -> KeyPair:
    key_path = environ.get(f"{prefix}_KEY", "").strip()
    cert_path = environ.get(f"{prefix}_CERT", "").strip()
    if key_path and cert_path:
        try:
            return load_pair(key_path, cert_path)
        except (OSError, ValueError) as exc:
            raise WkConfigError(f"{prefix}_KEY/{prefix}_CERT: {exc}") from exc
    missing = f"{prefix}_KEY" if not key_path else f"{prefix}_CERT"
    if production or key_path or cert_path:
        raise WkConfigError(f"{missing} must be set" + (" in production" if production else ""))
    return dev_pair(dev_dir, name, f"UEOZ development {name}")


def positive_number(environ: Mapping[str, str], name: str, default, kind):
    """The setting ``name`` as a positive finite ``kind`` (int or float), else ``default``."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    number = "whole number" if kind is int else "number"
    try:
        value = kind(raw)
    except ValueError as exc:
        raise WkConfigError(f"{name} must be a positive {number}, got {raw!r}") from exc
    # nan and inf parse as floats: a nan timeout compares false with everything.
    if not math.isfinite(value) or value <= 0:
        raise WkConfigError(f"{name} must be a positive {number}, got {raw!r}")
    return value
