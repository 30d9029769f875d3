# ruff: noqa: E501  (the variable table below reads best unwrapped)
"""Settings of the stand-in login node.

| variable | meaning | default |
|---|---|---|
| `APP_ENV` | the service's environment; `production` makes the stand-in refuse to start | `development` |
| `STANDIN_ENTITY_ID` | the stand-in's issuer (the service's `WK_NODE_ENTITY_ID`) | host and port of its base URL |
| `STANDIN_SIGNING_KEY`, `STANDIN_SIGNING_CERT` | its P-256 signing pair | a development pair in `{instance_dir}/wk/` |
| `STANDIN_ARTIFACT_BINDING` | how the browser goes back to the ACS: `post` (auto-submitting form) or `redirect` (GET) | `post` |
| `STANDIN_FAILURE` | a failure mode applied to every login (see `Failure`) | none |
| `STANDIN_SLOW_SECONDS` | how long the `slow` resolution service sleeps | `10` |
| `STANDIN_PERSON_IDENTIFIER` | how the PESEL is written in `PersonIdentifier`: `pesel` (bare) or `eidas` (`PL/PL/<PESEL>`) | `pesel` |

The service's side (entity id, ACS, signing and encryption certificates) is read from
the same `WK_*` variables the service reads, through `WkSettings`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..adapters.wk.keys import KeyPair, dev_pair, load_pair
from ..adapters.wk.settings import WkConfigError, WkSettings, positive_number
from ..config import APP_ENVS


class StandinRefused(RuntimeError):
    """The stand-in node must never run in a production configuration."""


#: Where the stand-in may run: every environment but production (an unknown one included).
STANDIN_ENVS = tuple(env for env in APP_ENVS if env != "production")


def refuse_outside_development(app_env: str) -> None:
    """Raise :class:`StandinRefused` unless ``app_env`` is one the stand-in may run in."""
    if app_env not in STANDIN_ENVS:
        raise StandinRefused(
            f"the stand-in login node runs only with APP_ENV {', '.join(STANDIN_ENVS)} "
            "(never in production)"
        )


class Failure(enum.StrEnum):
    """Ways the stand-in can be told to fail, so that tests reach every branch."""

    AUTHN_FAILED = "authn_failed"
    REQUEST_DENIED = "request_denied"
    UNKNOWN_PRINCIPAL = "unknown_principal"
    REQUESTER = "requester"
    BAD_SIGNATURE = "bad_signature"  # the assertion swapped after signing
    SLOW = "slow"  # the resolution service sleeps past the service's timeout
    DEAD = "dead"  # the resolution service answers HTTP 500 with no SOAP
    SOAP_FAULT = "soap_fault"  # the resolution service answers a SOAP fault
    KEY_128 = "key_128"  # a 128-bit content key under the aes256-gcm URI
    EXPIRED = "expired"  # every instant an hour in the past
    REPEAT_ASSERTION_ID = "repeat_assertion_id"  # the same assertion ID every time
    COMMENT_IN_NAMEID = "comment_in_nameid"  # an XML comment inside the NameID
    OTHER_AUDIENCE = "other_audience"  # the assertion is restricted to another service
    NO_AUDIENCE = "no_audience"  # the assertion has no AudienceRestriction at all
    # The artifact denied as unknown inside a signed Response (RequestDenied) that answers
    # no request of the service: the Response's status must be read before its InResponseTo.
    DENIED_IN_RESPONSE = "denied_in_response"


STATUS_FAILURES = {
    Failure.AUTHN_FAILED: "AuthnFailed",
    Failure.REQUEST_DENIED: "RequestDenied",
    Failure.UNKNOWN_PRINCIPAL: "UnknownPrincipal",
    Failure.REQUESTER: "Requester",
}


#: How the stand-in writes the PESEL in ``PersonIdentifier``: as it is, or in eIDAS form.
PERSON_IDENTIFIER_FORMS = ("pesel", "eidas")


@dataclass(frozen=True)
class StandinSettings:
    """Everything the stand-in node needs."""

    base_url: str
    entity_id: str
    signing: KeyPair
    sp_entity_id: str
    sp_acs_url: str
    sp_signing_cert_pem: bytes
    sp_encryption_cert_pem: bytes
    artifact_binding: str = "post"
    artifact_ttl_seconds: int = 60
    endpoint_index: int = 0
    failure: Failure | None = None
    slow_seconds: float = 10.0
    sign_assertion: bool = False
    person_identifier: str = "pesel"
    app_env: str = "development"

    def __post_init__(self) -> None:
        if self.artifact_binding not in ("post", "redirect"):
            raise WkConfigError("STANDIN_ARTIFACT_BINDING must be post or redirect")
        if self.person_identifier not in PERSON_IDENTIFIER_FORMS:
            raise WkConfigError("STANDIN_PERSON_IDENTIFIER must be pesel or eidas")

    @classmethod
    def for_service(
        cls, sp: WkSettings, *, base_url: str, signing: KeyPair, **options
    ) -> StandinSettings:
        """Settings for a stand-in that serves the service provider `sp`."""
        return cls(
            base_url=base_url.rstrip("/"),
            entity_id=options.pop("entity_id", sp.node_entity_id),
            signing=signing,
            sp_entity_id=sp.sp_entity_id,
            sp_acs_url=sp.acs_url,
            sp_signing_cert_pem=sp.sp_signing.cert_pem,
            sp_encryption_cert_pem=sp.sp_encryption.cert_pem,
            **options,
        )

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        *,
        base_url: str,
        service_base_url: str,
        instance_dir: str | Path,
    ) -> StandinSettings:
        """Read the stand-in's and the service's variables; refuse production."""
        app_env = environ.get("APP_ENV", "development").strip() or "development"
        refuse_outside_development(app_env)
        environ = {"WK_NODE_URL": base_url, **environ}
        sp = WkSettings.from_env(
            environ, base_url=service_base_url, instance_dir=instance_dir, production=False
        )
        key_path = environ.get("STANDIN_SIGNING_KEY", "").strip()
        cert_path = environ.get("STANDIN_SIGNING_CERT", "").strip()
        if key_path and cert_path:
            try:
                signing = load_pair(key_path, cert_path)
            except (OSError, ValueError) as exc:
                raise WkConfigError(f"STANDIN_SIGNING_KEY/STANDIN_SIGNING_CERT: {exc}") from exc
        else:
            signing = dev_pair(Path(instance_dir) / "wk", "standin-signing", "WK stand-in node")
        return cls.for_service(
            sp,
            base_url=base_url,
            signing=signing,
            entity_id=environ.get("STANDIN_ENTITY_ID", "").strip() or urlsplit(base_url).netloc,
            artifact_binding=environ.get("STANDIN_ARTIFACT_BINDING", "post").strip() or "post",
            failure=_failure(environ.get("STANDIN_FAILURE", "").strip()),
            slow_seconds=positive_number(environ, "STANDIN_SLOW_SECONDS", 10.0, float),
            person_identifier=environ.get("STANDIN_PERSON_IDENTIFIER", "").strip() or "pesel",
            app_env=app_env,
        )


def _failure(value: str) -> Failure | None:
    if not value:
        return None
    try:
        return Failure(value)
    except ValueError:
        known = ", ".join(failure.value for failure in Failure)
        raise WkConfigError(f"STANDIN_FAILURE must be one of {known}, got {value!r}") from None
