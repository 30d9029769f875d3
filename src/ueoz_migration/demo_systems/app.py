"""The demo domain systems' web pages: sign in through UEOZ with Authlib's client, and out.

Each system is a Flask app of its own (its own session cookie, under its own path), mounted
at ``/<ID>`` of one server; the index at ``/`` lists them. It does what a domain system's team
would do with a common relying-party library, driven by UEOZ's discovery document alone:
the code flow with PKCE and a nonce, the ID token checked against UEOZ's JWKS, the userinfo
endpoint, RP-initiated logout, and back-channel logout.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from authlib.common.urls import add_params_to_uri
from authlib.integrations.base_client import OAuthError
from authlib.integrations.flask_client import OAuth
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from flask import Flask, abort, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFProtect
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.wrappers import Response

from ..resources import templates_dir
from . import DEMO_SYSTEMS, SCOPES, Credentials, DemoSystem

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
TEMPLATES = str(templates_dir() / "demo_systems")


@dataclass
class EndedSessions:
    """The UEOZ sessions (``sid``) back-channel logouts ended; this process only."""

    sids: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def end(self, sid: str) -> None:
        with self.lock:
            self.sids.add(sid)

    def ended(self, sid: str | None) -> bool:
        with self.lock:
            return sid in self.sids


@dataclass(frozen=True)
class Person:
    display_name: str
    claims: list[tuple[str, str]]


def create_demo_system_app(
    system: DemoSystem,
    *,
    issuer: str,
    credentials: Credentials,
    secret_key: str,
    ended: EndedSessions,
) -> Flask:
    """One domain system, signing in through the UEOZ at ``issuer``."""
    app = Flask(f"demo_system_{system.id}", template_folder=TEMPLATES)
    app.config.update(
        SECRET_KEY=secret_key,
        SESSION_COOKIE_NAME=f"demo_{system.id.lower()}",
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_HTTPONLY=True,
        WTF_CSRF_TIME_LIMIT=None,  # as long as the page's session
    )
    # The logout form's token; the back-channel endpoint is UEOZ's server-to-server call.
    csrf = CSRFProtect(app)
    oauth = OAuth(app)
    client_kwargs: dict[str, Any] = {"scope": " ".join(SCOPES), "code_challenge_method": "S256"}
    auth_methods = None
    if credentials.key is not None:
        client_kwargs["token_endpoint_auth_method"] = "private_key_jwt"  # noqa: S105
        auth_methods = [PrivateKeyJWT(alg="ES256")]
    ueoz = oauth.register(
        "ueoz",
        client_id=system.id,
        client_secret=credentials.key if credentials.key is not None else credentials.secret,
        server_metadata_url=f"{issuer}/.well-known/openid-configuration",
        client_kwargs=client_kwargs,
        client_auth_methods=auth_methods,
    )

    def show(error: str | None = None, status: int = 200) -> tuple[str, int]:
        claims = session.get("claims")
        person = None
        if claims:
            first = (claims.get("given_name") or "").split()
            display = " ".join([*first[:1], claims.get("family_name", "")]).strip()
            shown = [(name, _shown(value)) for name, value in sorted(claims.items())]
            person = Person(display or claims["sub"], shown)
        return render_template("system.html", system=system, person=person, error=error), status

    @app.before_request
    def _forget_ended_session() -> None:
        if ended.ended(session.get("sid")):
            session.clear()  # UEOZ said, server to server, that the session ended

    @app.get("/")
    def home() -> tuple[str, int]:
        return show()

    @app.get("/login")
    def login() -> Response:
        # Third-party initiated login (Core 4): UEOZ sends the person here with its iss.
        if request.args.get("iss") not in (None, issuer):
            abort(400)
        return ueoz.authorize_redirect(url_for("callback", _external=True))

    @app.get("/callback")
    def callback() -> Response | tuple[str, int]:
        if request.args.get("error") == "access_denied":
            return show("Logowanie przez UEOZ zostało anulowane. Możesz spróbować ponownie.", 200)
        try:
            token = ueoz.authorize_access_token()
        except OAuthError as error:
            return show(f"Logowanie nie powiodło się ({error.error}).", 400)
        claims = dict(token["userinfo"])
        claims.update(ueoz.userinfo(token=token))
        session.clear()
        session["claims"] = {name: _plain(value) for name, value in claims.items()}
        session["sid"] = claims.get("sid")
        session["id_token"] = token["id_token"]
        return redirect(url_for("home"))

    @app.post("/logout")
    def logout() -> Response:
        id_token = session.pop("id_token", None)
        session.clear()
        metadata = ueoz.load_server_metadata()
        if not id_token:
            return redirect(url_for("home"))
        back = url_for("home", _external=True)
        return redirect(
            add_params_to_uri(
                metadata["end_session_endpoint"],
                {"id_token_hint": id_token, "post_logout_redirect_uri": back},
            )
        )

    @app.post("/backchannel-logout")
    @csrf.exempt
    def backchannel_logout() -> tuple[str, int]:
        """OpenID Connect Back-Channel Logout 2.6: check the logout token, end its session."""
        token = request.form.get("logout_token", "")
        try:
            claims = _logout_claims(token, ueoz, issuer=issuer, audience=system.id)
        except (JoseError, ValueError, KeyError) as error:
            app.logger.info("refused a logout token: %s", error)
            return "", 400
        ended.end(claims["sid"])
        return "", 200

    return app


def _logout_claims(token: str, ueoz: Any, *, issuer: str, audience: str) -> dict[str, Any]:
    keys = KeySet.import_key_set(ueoz.fetch_jwk_set())
    decoded = jwt.decode(token, keys, algorithms=["ES256"])
    registry = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": audience},
        iat={"essential": True},
        sid={"essential": True},
    )
    registry.validate(decoded.claims)
    claims = decoded.claims
    if LOGOUT_EVENT not in (claims.get("events") or {}) or "nonce" in claims:
        raise ValueError("not a logout token")
    return claims


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, list)) else str(value)


def _shown(value: Any) -> str:
    """A claim as a developer reads it: text as it is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def create_demo_systems_app(
    *, issuer: str, base_url: str, credentials: dict[str, Credentials], secret_key: str
) -> Any:
    """Every demo system under ``/<ID>``, and their index at ``/``."""
    ended = EndedSessions()
    index = Flask("demo_systems", template_folder=TEMPLATES)

    @index.get("/")
    def systems() -> str:
        return render_template("index.html", systems=DEMO_SYSTEMS, base=base_url)

    @index.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    mounts = {
        f"/{system.id}": create_demo_system_app(
            system,
            issuer=issuer,
            credentials=credentials[system.id],
            secret_key=f"{secret_key}:{system.id}",
            ended=ended,
        )
        for system in DEMO_SYSTEMS
    }
    return DispatcherMiddleware(index, mounts)
