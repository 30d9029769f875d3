"""The web entry layer: pages of the migration journey, login through the node, dev pages.

Routes only translate: they read the request, fire one event on the attempt through
:class:`~ueoz_migration.journey.Journey`, and render the state the attempt is in.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from flask import Flask
from flask_babel import Babel
from flask_wtf.csrf import CSRFProtect

from ..bootstrap import Services
from ..config import Settings
from ..domain.privacy import mask_pesel
from ..logs import configure_logging
from ..resources import templates_dir
from . import metrics, security
from .i18n import DEFAULT_LANGUAGE, PageCatalogs, current_language
from .sessions import DatabaseSessionInterface, Realm

SESSION_IDLE_LIFETIME = timedelta(minutes=30)
PACKAGE_DIR = Path(__file__).resolve().parent.parent


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> Flask:
    """Build the web application for ``settings`` (default: from the environment)."""
    if services is None:
        services = Services(settings or Settings.from_env())
        if settings is None:  # the process's entry point (gunicorn): its logs are ours
            configure_logging(services.settings)
    settings = services.settings
    app = Flask(
        __name__,
        template_folder=str(templates_dir()),
        static_folder=str(PACKAGE_DIR / "static"),
        static_url_path="/static",
    )
    app.config.update(
        SECRET_KEY=settings.secret_key,
        # __Host-: the browser takes it only Secure, for the whole site, from this host alone,
        # so a sibling subdomain cannot plant a session id of its choosing. Needs HTTPS.
        SESSION_COOKIE_NAME="__Host-ueoz_session" if settings.production else "ueoz_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=settings.production,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=SESSION_IDLE_LIFETIME,
        SESSION_REFRESH_EACH_REQUEST=True,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session does
        # Every message a form shows is ours (forms.py) and translated by flask-babel; WTForms'
        # own catalog would only be looked up, per field, on every form built.
        WTF_I18N_ENABLED=False,
        BABEL_DEFAULT_LOCALE=DEFAULT_LANGUAGE,
        BABEL_TRANSLATION_DIRECTORIES=str(PACKAGE_DIR / "translations"),
        MAX_CONTENT_LENGTH=64 * 1024,
        PREFERRED_URL_SCHEME="https" if settings.production else "http",
    )
    app.extensions["ueoz.services"] = services
    services.signing_keys  # noqa: B018 - a missing key fails the start, not a sign-in
    from . import console

    # The staff console's pages keep a session of their own (web/console.py).
    console_sessions = Realm(
        console.PATH, console.cookie_name(production=settings.production), console.IDLE_LIFETIME
    )
    app.session_interface = DatabaseSessionInterface(app, services.engine, console_sessions)
    Babel(app, locale_selector=current_language)
    PageCatalogs(PACKAGE_DIR / "translations").install(app)

    from . import auth, errors, migration, oidc, pages, verification

    login = auth.LoginThroughNode.build(services)
    app.extensions["ueoz.login"] = login
    security.install(app, production=settings.production, node_sso_url=login.sso_url)
    app.register_blueprint(pages.blueprint)
    app.register_blueprint(migration.blueprint)
    app.register_blueprint(verification.blueprint)
    app.register_blueprint(auth.blueprint)
    console.install(app)
    if not settings.production:
        app.register_blueprint(pages.development)
    errors.install(app)
    # Its check runs before each view, after the hooks above: the request has its id, and a
    # session the database did not give fails as the outage it is, not as a stale form.
    CSRFProtect(app)
    login.register(app)  # the ACS, exempt from CSRF (the node posts it)
    oidc.install(app)  # the domain systems' endpoints, exempt from CSRF (they post them)
    metrics.install(app)
    app.context_processor(pages.layout_context)
    app.jinja_env.filters["mask_pesel"] = mask_pesel
    return app
