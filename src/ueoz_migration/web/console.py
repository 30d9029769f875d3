"""The staff console under ``/konsola``: routes that translate HTTP into ``console/``'s rules.

Staff sign in through the national node like everyone else (``/login/konsola``): the pending
login carries the purpose ``console``, and the ACS hands the answer to :func:`signed_in`,
which starts no attempt but a console session, a session of its own (its own cookie, read
only under ``/konsola``; 15 minutes without a request end it). What a staff member may see
comes from the roles granted to them (``staff grant``), read again on every request, so a
revocation takes effect at once. An action that changes something asks for a new node login
first when the last one is older than 15 minutes. docs/console.md describes each role's way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any, TypeVar, cast

import structlog
from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    stream_with_context,
    url_for,
)
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from .. import helpdesk
from ..adapters.wk import Identity, LoginFailed
from ..audit.log import format_detail
from ..console import actions, audits, progress
from ..console.looks import LOOKUP, Looks
from ..console.staff import Role, Staff
from ..console.story import tell
from ..domain.codes import EventCode
from ..domain.privacy import mask_email, mask_pesel
from ..journey import Actor, utcnow
from ..metrics import QueueCollector
from .common import services
from .i18n import LANGUAGES, current_language, safe_next
from .security import current_request_id

log = structlog.get_logger(__name__)
blueprint = Blueprint("console", __name__, url_prefix="/konsola")
login_blueprint = Blueprint("console_login", __name__)

#: The pending login's purpose for a staff member's node login.
PURPOSE = "console"
#: Where the console lives; only its requests open the console's session.
PATH = "/konsola"
#: A console session ends after this long without a request.
IDLE_LIFETIME = timedelta(minutes=15)
#: An action that changes something needs a node login no older than this.
FRESH_LOGIN = timedelta(minutes=15)

# What the console session holds (the person's session holds none of it).
STAFF_KEY = "staff_pesel_hash"
LAST3_KEY = "staff_pesel_last3"
LOGGED_IN_KEY = "staff_logged_in_at"
NODE_KEY = "staff_node_session"  # the node's name id and session index, for the logout
UNLOCKED_KEY = "unlocked_attempts"  # attempts this session matched by number and digits
# Where a console login goes back to, kept in the person's session between /login/konsola
# and the ACS (neither is under /konsola).
NEXT_KEY = "console_next"
UNLOCKED_KEPT = 20  # the newest attempts a session may open again

V = TypeVar("V", bound=Callable[..., Any])


def cookie_name(*, production: bool) -> str:
    # As the person's: only over HTTPS, for the whole site, from this host alone.
    return "__Host-ueoz_console" if production else "ueoz_console"


def install(app: Flask) -> None:
    app.register_blueprint(blueprint)
    app.register_blueprint(login_blueprint)


def _staff() -> Staff:
    return Staff(services().sessions, services().settings.pesel_key)


def _looks() -> Looks:
    return Looks(services().sessions)


# -- signing in and out ---------------------------------------------------------------------


@login_blueprint.get("/login/konsola")
def log_in() -> str:
    """Send a staff member to the node; back in the console once they logged in there."""
    from . import auth

    session[NEXT_KEY] = safe_next(request.args.get("next"), PATH + "/")
    if not session[NEXT_KEY].startswith(PATH + "/"):
        session[NEXT_KEY] = PATH + "/"
    return auth.send_to_node(None, purpose=PURPOSE)


def signed_in(identity: Identity) -> Response:
    """The ACS's answer to a staff member's node login: a new console session, then on.

    Called in the ACS's request, whose session is the person's: the console session is
    started beside it, with its own cookie. Whoever logs in gets one, roles or not: the
    console's pages say 403 to someone without the role they need, and log it.
    """
    target = session.pop(NEXT_KEY, None) or PATH + "/"
    key = _staff().hash_of(identity.pesel)
    response = redirect(target, 303)
    sessions = current_app.session_interface
    # The same staff member logging in again (before a change, or after 15 minutes): the
    # attempts they looked up stay open to them, and their language stays.
    before = sessions.realm_session(request) or {}  # type: ignore[attr-defined]
    same = before.get(STAFF_KEY) == key
    sessions.start_realm_session(  # type: ignore[attr-defined]
        current_app,
        response,
        {
            "_permanent": True,
            "language": before.get("language") if same else current_language(),
            STAFF_KEY: key,
            LAST3_KEY: identity.pesel[-3:],
            LOGGED_IN_KEY: utcnow().isoformat(),
            NODE_KEY: [identity.name_id, identity.session_index],
            UNLOCKED_KEY: before.get(UNLOCKED_KEY, []) if same else [],
        },
    )
    log.info("console.signed_in", staff=_staff().identify(key).staff_id)
    return response


@blueprint.post("/wyloguj")
def log_out() -> Response:
    """End the console session, and the node's session with it."""
    node = session.get(NODE_KEY)
    language = session.get("language")
    session.clear()
    if language:
        session["language"] = language
    if node:
        from .auth import _login

        try:
            _login().provider.logout_request(*node)
        except LoginFailed as failure:
            log.info("logout.node_refused", reason=str(failure.reason), detail=failure.detail)
    flash(_("Wylogowano z konsoli."), "info")
    return redirect(url_for("console.home"), 303)


@blueprint.get("/jezyk/<language>")
def language(language: str) -> Response:
    """Switch the console's pages to ``language`` (its session is not the person's)."""
    if language not in LANGUAGES:
        abort(404)
    session["language"] = language
    target = safe_next(request.args.get("next"), PATH + "/")
    return redirect(target if target.startswith(PATH) else PATH + "/")


# -- who is here, and may they ---------------------------------------------------------------


def _signed_in() -> bool:
    return bool(session.get(STAFF_KEY))


def needs(*roles: Role) -> Callable[[V], V]:
    """Let the view run for a staff member holding one of ``roles``; else 403, logged.

    Someone not signed in to the console is sent to its start, to sign in.
    """

    def decorate(view: V) -> V:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if not _signed_in():
                return redirect(url_for("console.home"), 303)
            me = _staff().identify(session[STAFF_KEY])
            held = [role for role in roles if role in me.roles]
            if not held:
                return _refused(me.staff_id, roles)
            g.staff_id, g.roles, g.role = me.staff_id, me.roles, held[0]
            return view(*args, **kwargs)

        return cast(V, guarded)

    return decorate


def _refused(staff_id: int | None, roles: tuple[Role, ...]) -> tuple[str, int]:
    # No PESEL, not even masked: the staff id, or the hash's first characters for someone
    # who is not staff at all, are enough to find who was refused.
    rule = request.url_rule.rule if request.url_rule is not None else request.path
    log.warning(
        "console.refused",
        path=rule,
        needs=",".join(roles),
        staff=staff_id,
        **({} if staff_id else {"pesel_hash": str(session.get(STAFF_KEY, ""))[:12]}),
    )
    return render_template("console/forbidden.html"), 403


def _actor() -> Actor:
    return Actor("helpdesk", current_request_id(), staff=g.staff_id)


def _fresh_login() -> bool:
    at = session.get(LOGGED_IN_KEY)
    return bool(at) and utcnow() - datetime.fromisoformat(at) <= FRESH_LOGIN


def _look(attempt_id: str | None, purpose: str, detail: str = "") -> None:
    _looks().record(
        staff_id=g.staff_id,
        role=g.role,
        attempt_id=attempt_id,
        purpose=purpose,
        request_id=current_request_id(),
        now=utcnow(),
        detail=detail,
    )


@blueprint.app_context_processor
def _layout() -> dict[str, Any]:
    if not request.path.startswith(PATH):
        return {}
    signed = _signed_in()
    me = _staff().identify(session[STAFF_KEY]) if signed else None
    return {
        "mask_pesel": mask_pesel,
        "mask_email": mask_email,
        "format_detail": format_detail,
        "console_staff": (
            {"id": me.staff_id, "pesel": mask_pesel("0" * 8 + session[LAST3_KEY])}
            if me is not None
            else None
        ),
        "console_roles": sorted(me.roles) if me is not None else [],
    }


# -- the start -----------------------------------------------------------------------------


@blueprint.get("/")
def home() -> str | tuple[str, int]:
    """Sign in, or what this staff member may do here."""
    if not _signed_in():
        return render_template("console/sign_in.html")
    me = _staff().identify(session[STAFF_KEY])
    if not me.roles:
        return _refused(me.staff_id, tuple(Role))
    return render_template("console/home.html", roles=me.roles)


# -- helpdesk --------------------------------------------------------------------------------


@blueprint.route("/pomoc", methods=["GET", "POST"])
@needs(Role.HELPDESK)
def lookup() -> str | tuple[str, int]:
    """The look-up: an event number and the last three PESEL digits, or nothing is shown."""
    if request.method == "GET":
        return render_template("console/lookup.html", number="", problem=None)
    number = request.form.get("event_number", "")
    digits = request.form.get("pesel_last3", "")
    limit = services().settings.console_lookups_per_hour
    now = utcnow()
    if _looks().lookups_in_last_hour(g.staff_id, now) >= limit:
        log.warning("console.lookup_limit", staff=g.staff_id)
        return render_template("console/lookup.html", number="", problem="limit", limit=limit), 429
    try:
        view = helpdesk.lookup(services().sessions, number, digits, clock=lambda: now)
    except helpdesk.LookupInputError:
        # Not counted: nothing was looked up. The number is not shown back (a PESEL typed
        # into the wrong field must not be echoed).
        return render_template("console/lookup.html", number="", problem="form"), 400
    if view is None:
        _look(None, LOOKUP)
        return render_template("console/lookup.html", number="", problem="no_match"), 404
    _look(view.attempt.id, LOOKUP)
    _unlock(view.attempt.id)
    return _story_page(view)


def _unlock(attempt_id: str) -> None:
    unlocked = [each for each in session.get(UNLOCKED_KEY, []) if each != attempt_id]
    session[UNLOCKED_KEY] = [*unlocked, attempt_id][-UNLOCKED_KEPT:]


def _unlocked_view(attempt_id: str) -> helpdesk.HelpdeskView:
    """The attempt, if this console session matched it by number and digits; else 404."""
    if attempt_id not in session.get(UNLOCKED_KEY, []):
        abort(404)  # as for an attempt that does not exist: nothing to learn from the answer
    view = helpdesk.view_of(services().sessions, attempt_id, utcnow())
    if view is None:
        abort(404)
    return view


@blueprint.get("/pomoc/proba/<attempt_id>")
@needs(Role.HELPDESK)
def story(attempt_id: str) -> str:
    """The attempt's story again (after an action, or from the browser's history)."""
    view = _unlocked_view(attempt_id)
    _look(attempt_id, "story")
    return _story_page(view)


def _story_page(view: helpdesk.HelpdeskView) -> str:
    systems = {client.id: client.name for client in services().clients.all()}
    return render_template(
        "console/story.html",
        story=tell(services().journey, view),
        system=systems.get(view.attempt.domain_system or ""),
        fresh=_fresh_login(),
    )


@blueprint.post("/pomoc/proba/<attempt_id>/wyslij-ponownie")
@needs(Role.HELPDESK)
def resend(attempt_id: str) -> Response | str:
    """Send the verification e-mail again, as the person's own **Wyślij ponownie** would."""
    view = _unlocked_view(attempt_id)
    if not _fresh_login():
        return _log_in_again(attempt_id)
    _look(attempt_id, "resend")
    done = actions.resend(services().journey, view.attempt, _actor())
    _say(done, _("Wysłano ponownie wiadomość z linkiem weryfikacyjnym."))
    return redirect(url_for("console.story", attempt_id=attempt_id), 303)


@blueprint.post("/pomoc/proba/<attempt_id>/anuluj")
@needs(Role.HELPDESK)
def cancel(attempt_id: str) -> Response | str:
    """Cancel the open attempt, so that the person's next login starts a new one."""
    view = _unlocked_view(attempt_id)
    if not _fresh_login():
        return _log_in_again(attempt_id)
    _look(attempt_id, "cancel")
    done = actions.cancel(services().journey, view.attempt, _actor())
    _say(done, _("Próba anulowana. Przy następnym logowaniu rozpocznie się nowa."))
    return redirect(url_for("console.story", attempt_id=attempt_id), 303)


def _say(done: actions.Done, applied: str) -> None:
    if done.refused is None:
        flash(applied, "info")
        return
    reason = done.refused.reason
    if reason == "resend_limit":
        flash(
            _("Nie wysłano: limit wiadomości na godzinę dla tego adresu został osiągnięty."),
            "notice",
        )
    else:
        flash(
            _(
                "Nie wykonano: próba jest teraz w stanie %(state)s.",
                state=done.refused.attempt.state,
            ),
            "notice",
        )


def _log_in_again(attempt_id: str) -> str:
    """Ask for a new node login before a change: the last one is older than 15 minutes."""
    back = url_for("console.story", attempt_id=attempt_id)
    return render_template("console/log_in_again.html", back=back)


# -- auditors --------------------------------------------------------------------------------


@blueprint.get("/audyt")
@needs(Role.AUDITOR)
def audit() -> str:
    today = utcnow().date()
    return render_template(
        "console/audit.html", first=today.replace(day=1).isoformat(), last=today.isoformat()
    )


@blueprint.post("/audyt/weryfikacja")
@needs(Role.AUDITOR)
def verify() -> str | tuple[str, int]:
    """Verify the chain of one attempt (id or event number) or, with none named, of all."""
    reference = request.form.get("attempt", "").strip() or None
    try:
        checked = audits.verify(services().sessions, services().settings.audit_key, reference)
    except audits.NoSuchAttempt:
        return render_template("console/audit.html", problem="no_attempt", **_period()), 404
    if checked.attempt_id is not None:
        _look(checked.attempt_id, "verify")
    return render_template("console/audit_result.html", check="verify", checked=checked)


@blueprint.post("/audyt/odtworzenie")
@needs(Role.AUDITOR)
def replay() -> str | tuple[str, int]:
    """Replay one attempt against its flow version: the first divergence, or its path."""
    reference = request.form.get("attempt", "").strip()
    try:
        checked = audits.replay(services().sessions, reference)
    except audits.NoSuchAttempt:
        return render_template("console/audit.html", problem="no_attempt", **_period()), 404
    _look(checked.attempt_id, "replay")
    return render_template("console/audit_result.html", check="replay", checked=checked)


@blueprint.post("/audyt/eksport")
@needs(Role.AUDITOR)
def export() -> Response | tuple[str, int]:
    """Download the log of the attempts started in a period, as ``audit export`` writes it."""
    try:
        first = date.fromisoformat(request.form.get("first", ""))
        last = date.fromisoformat(request.form.get("last", ""))
    except ValueError:
        return render_template("console/audit.html", problem="period", **_period()), 400
    if last < first:
        return render_template("console/audit.html", problem="period", **_period()), 400
    _look(None, "export", detail=f"attempts started {first.isoformat()}..{last.isoformat()}")
    lines = audits.export(services().sessions, audits.period(first, last))
    response = Response(stream_with_context(lines), mimetype="application/x-ndjson")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="ueoz-log-{first.isoformat()}-{last.isoformat()}.jsonl"'
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _period() -> dict[str, str]:
    return {
        "first": request.form.get("first", "") or utcnow().date().replace(day=1).isoformat(),
        "last": request.form.get("last", "") or utcnow().date().isoformat(),
    }


@blueprint.get("/audyt/kto-przegladal")
@needs(Role.AUDITOR)
def looks() -> str:
    """Who looked at whom: the console's records of every look at a person's data."""
    reference = request.args.get("proba", "").strip()
    before = request.args.get("przed", type=int)
    attempt_id = None
    if reference:
        from ..db.engine import snapshot

        with snapshot(services().sessions) as db:
            try:
                attempt_id = audits.resolve(db, reference)
            except audits.NoSuchAttempt:
                attempt_id = reference  # nothing will match; the page says so
    records = _looks().listed(attempt_id=attempt_id, before=before)
    return render_template(
        "console/looks.html",
        records=records,
        purposes=_purposes(),
        reference=reference,
        more=records[-1].id if len(records) == 100 else None,
    )


def _purposes() -> dict[str, str]:
    """Why each look was made, in the page's language (console/looks.py, PURPOSES)."""
    return {
        LOOKUP: _("pomoc: wyszukanie (numer zdarzenia i cyfry PESEL)"),
        "story": _("pomoc: historia próby ponownie"),
        "resend": _("pomoc: ponowna wysyłka wiadomości z linkiem"),
        "cancel": _("pomoc: anulowanie próby"),
        "verify": _("audyt: weryfikacja łańcucha próby"),
        "replay": _("audyt: odtworzenie próby"),
        "export": _("audyt: eksport za okres"),
    }


# -- progress --------------------------------------------------------------------------------


@blueprint.get("/postep")
@needs(Role.OPERATOR, Role.AUDITOR)
def progress_page() -> str:
    """How the migration is going: per day, the funnel, outcomes, verification time, queues."""
    days = request.args.get("dni", type=int)
    if days not in progress.PERIODS:
        days = progress.DEFAULT_PERIOD
    figures = progress.measure(
        services().sessions,
        days,
        now=utcnow(),
        queues=QueueCollector(services().engine).figures,
    )
    return render_template(
        "console/progress.html",
        figures=figures,
        periods=progress.PERIODS,
        days=days,
        charts=_charts(figures),
        codes={code.value: code.meaning for code in EventCode},
    )


def _charts(figures: progress.Progress) -> dict[str, str]:
    from ..console.charts import bars

    labels = [day.day.strftime("%m-%d") for day in figures.days]
    funnel = [
        _("Logowanie"),
        _("Konto e-PLOZ znalezione"),
        _("Adres e-mail podany"),
        _("Adres zweryfikowany"),
    ]
    return {
        "days": bars(
            _("Migracje dziennie"),
            labels,
            [
                (_("rozpoczęte"), [day.started for day in figures.days]),
                (_("zakończone (adres zweryfikowany)"), [day.completed for day in figures.days]),
            ],
            every=max(1, len(labels) // 10),
        ),
        "funnel": bars(
            _("Lejek"),
            funnel,
            [(_("próby"), [figures.funnel[event] for event in progress.FUNNEL])],
            horizontal=True,
        ),
        "codes": bars(
            _("Kody zdarzeń"),
            [str(code) for code in figures.codes],
            [(_("numery zdarzeń"), list(figures.codes.values()))],
        ),
    }
