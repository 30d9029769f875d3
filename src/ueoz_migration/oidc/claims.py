"""What a domain system learns of a person: ``sub`` and the claims its scopes allow.

The table of claims, by scope, is in docs/integration.md ("Claims").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

from authlib.oidc.core import UserInfo

from .clients import PUBLIC, Client

#: The node's levels of assurance, weakest first; ``acr`` and ``acr_values`` speak them.
LOA_PREFIX = "http://eidas.europa.eu/LoA/"
LEVELS = tuple(f"{LOA_PREFIX}{level}" for level in ("low", "substantial", "high"))


def rank(acr: str | None) -> int:
    """The level's place among :data:`LEVELS`; -1 for anything else."""
    return LEVELS.index(acr) if acr in LEVELS else -1


def asked_level(acr_values: str | None) -> str | None:
    """The first level the domain system asks for that the node knows (Core 3.1.2.1).

    ``acr_values`` is voluntary: values the node has no level for are passed over.
    """
    return next((value for value in (acr_values or "").split() if value in LEVELS), None)


@dataclass(frozen=True)
class SignedIn:
    """A migrated person signed in at UEOZ: the verified account and how they logged in."""

    account_id: int
    given_names: str
    family_name: str
    email: str
    pesel: str
    roles: str  # the e-PLOZ grants carried over: SYSTEM:ROLE;SYSTEM:ROLE
    sso_session_id: str
    sid: str
    acr: str
    auth_time: datetime


def subject(key: bytes, client: Client, account_id: int) -> str:
    """The person's ``sub`` for ``client``: pairwise (OpenID Connect Core 8.1) unless public.

    A keyed hash of the account's id: stable for as long as ``OIDC_SUBJECT_KEY`` is, and
    without it two clients cannot tell whether their pairwise subjects are one person.
    """
    sector = "public" if client.subject_type == PUBLIC else f"pairwise:{client.id}"
    digest = hmac.new(key, f"{sector}:{account_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def roles_for(grants: str, client: Client) -> list[str]:
    """The roles of the person's e-PLOZ grants (``SYSTEM:ROLE``) for this domain system.

    A client's id is the system code its e-PLOZ grants are written under.
    """
    roles = []
    for grant in filter(None, (part.strip() for part in grants.split(";"))):
        system, _, role = grant.partition(":")
        if system == client.id and role:
            roles.append(role)
    return roles


def user_info(key: bytes, person: SignedIn, client: Client, scope: str) -> UserInfo:
    """The claims ``scope`` allows ``client``, in the ID token and at the userinfo endpoint."""
    scopes = set(scope.split())
    claims = UserInfo(sub=subject(key, client, person.account_id))
    if "profile" in scopes:
        claims["given_name"] = person.given_names
        claims["family_name"] = person.family_name
        claims["name"] = f"{person.given_names} {person.family_name}"
    if "email" in scopes:
        claims["email"] = person.email
        claims["email_verified"] = True  # only verified accounts sign in (oidc/provider.py)
    if "roles" in scopes:
        claims["roles"] = roles_for(person.roles, client)
    if "pesel" in scopes:
        claims["pesel"] = person.pesel
    return claims
