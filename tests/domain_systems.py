"""Domain systems as the tests play them: registered clients asking UEOZ to sign people in.

A :class:`DomainSystem` builds authorization requests (PKCE S256, state, nonce), reads the
answer from the redirect, exchanges codes at the token endpoint (client_secret_basic or
private_key_jwt) and checks ID tokens against the provider's JWKS, as a relying party would.
The interoperability with other relying-party libraries is shown apart
(tests/browser/test_domain_systems.py and tests/interop/).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from ueoz_migration.oidc.clients import Registration

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class Asked:
    """One authorization request: what the domain system keeps until the answer comes."""

    url: str
    state: str
    nonce: str
    verifier: str


@dataclass
class DomainSystem:
    client_id: str
    redirect_uri: str
    secret: str | None = None
    key: ECKey | None = None
    issuer: str = "http://localhost"
    asked: list[Asked] = field(default_factory=list)

    @classmethod
    def register(
        cls,
        services,
        client_id: str = "P1",
        *,
        private_key_jwt: bool = False,
        scopes: tuple[str, ...] = ("openid", "profile", "email", "roles"),
        **options,
    ) -> DomainSystem:
        here = f"https://{client_id.lower()}.example"
        key = ECKey.generate_key("P-256", private=True) if private_key_jwt else None
        jwks = None
        if key is not None:
            jwks = {"keys": [{**key.as_dict(private=False), "kid": key.thumbprint()}]}
        registration = Registration(
            id=client_id,
            name=options.pop("name", f"System {client_id}"),
            redirect_uris=(f"{here}/callback",),
            post_logout_redirect_uris=(f"{here}/",),
            backchannel_logout_uri=options.pop("backchannel_logout_uri", f"{here}/backchannel"),
            initiate_login_uri=f"{here}/login",
            jwks=jwks,
            scopes=scopes,
            **options,
        )
        secret = services.clients.add(registration)
        if key is not None:
            key = ECKey.import_key(key.as_dict(private=True), {"kid": key.thumbprint()})
        return cls(
            client_id,
            f"{here}/callback",
            secret=secret,
            key=key,
            issuer=services.settings.base_url,
        )

    # -- the authorization request ---------------------------------------------------------

    def authorize_url(self, **params: str | None) -> str:
        """``/oidc/authorize?…`` with PKCE S256, state and nonce; ``None`` drops a parameter."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": "openid profile email roles",
            "state": secrets.token_urlsafe(16),
            "nonce": secrets.token_urlsafe(16),
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
            **params,
        }
        query = {name: value for name, value in query.items() if value is not None}
        url = "/oidc/authorize?" + urlencode(query)
        self.asked.append(Asked(url, query.get("state", ""), query.get("nonce", ""), verifier))
        return url

    @property
    def last(self) -> Asked:
        return self.asked[-1]

    def answer(self, response) -> dict[str, str]:
        """The parameters of the provider's redirect back to this system (code or error)."""
        assert response.status_code in (302, 303), response.status_code
        location = response.headers["Location"]
        assert location.startswith(self.redirect_uri + "?"), location
        return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}

    # -- the token endpoint ----------------------------------------------------------------

    def token(self, web, code: str, *, verifier: str | None = None, **overrides):
        """Exchange ``code`` as this system would; ``overrides`` replace form fields."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": verifier if verifier is not None else self.last.verifier,
        }
        headers = {}
        if self.key is not None:
            form |= {
                "client_assertion_type": CLIENT_ASSERTION_TYPE,
                "client_assertion": self.assertion(),
            }
        elif self.secret is not None:
            basic = base64.b64encode(f"{self.client_id}:{self.secret}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        form = {name: value for name, value in (form | overrides).items() if value is not None}
        return web.post("/oidc/token", data=form, headers=headers)

    def assertion(self, *, key: ECKey | None = None, jti: str | None = None, **claims) -> str:
        """A private_key_jwt client assertion (OpenID Connect Core 9)."""
        now = int(time.time())
        body = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": f"{self.issuer}/oidc/token",
            "iat": now,
            "exp": now + 60,
            "jti": jti or secrets.token_urlsafe(16),
            **claims,
        }
        signing = key or self.key
        assert signing is not None
        return jwt.encode(
            {"alg": "ES256", "kid": signing.kid or signing.thumbprint()}, body, signing
        )

    def id_token(self, web, token: str, *, algorithm: str = "ES256") -> dict:
        """The ID token's claims, its signature checked against the provider's JWKS."""
        keys = KeySet.import_key_set(web.get("/oidc/jwks").get_json())
        decoded = jwt.decode(token, keys, algorithms=[algorithm])
        claims = decoded.claims
        assert claims["iss"] == self.issuer and claims["aud"] == self.client_id
        assert claims["exp"] > time.time() >= claims["iat"] - 5
        return claims
