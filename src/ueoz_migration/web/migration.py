"""The pages of one attempt: ``/migracja`` shows the state it is in, buttons fire its events."""

from __future__ import annotations

import structlog
from flask import (
    Blueprint,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from werkzeug.wrappers import Response

from ..db.engine import snapshot
from ..db.models import Attempt, EplozAccount
from ..db.outbox import latest_link_mail
from ..domain.privacy import domain_forms, shown_email
from ..events import FIRED_BY, USER_EVENTS
from ..flow import Flow
from ..journey import AttemptNotFound, EventRefused, FlowNotRunnable, Journey
from .common import (
    ATTEMPT_KEY,
    AUTHORIZATION_KEY,
    attempt_in_session,
    domain_system_of,
    services,
    state_in_session,
    user,
)
from .forms import EmailForm
from .i18n import current_language

log = structlog.get_logger(__name__)
blueprint = Blueprint("migration", __name__)

# The person's events that send a verification e-mail.
MAIL_EVENTS = frozenset({"submit", "resend"})

# Why an event was refused, in the words of the notice shown above the current screen.
REFUSAL_NOTICES = {
    "not_allowed": _l(
        "Tego kroku nie można już wykonać – być może kliknięto przycisk dwa razy albo "
        "migracja jest otwarta w innej karcie. Poniżej widzisz, na jakim etapie jesteś."
    ),
    "resend_limit": _l(
        "Wysłaliśmy już kilka linków w ciągu ostatniej godziny. Sprawdź skrzynkę (także "
        "folder spam) albo spróbuj ponownie za godzinę."
    ),
    "already_migrated": _l(
        "Masz już zweryfikowane konto UEOZ. Zaloguj się ponownie przez login.gov.pl."
    ),
    "conflict": _l(
        "Konto e-PLOZ zostało w międzyczasie przeniesione w innej migracji. Skontaktuj się "
        "z infolinią CeZ."
    ),
    "eploz_changed": _l(
        "Dane Twojego konta e-PLOZ zmieniły się w trakcie migracji. Anuluj migrację i zaloguj "
        "się ponownie – sprawdzimy je jeszcze raz."
    ),
}
STATE_TEMPLATES = {
    "searching": "migration/searching.html",
    "found": "migration/found.html",
    "error": "migration/error.html",
    "email_entry": "migration/email_entry.html",
    "awaiting_verification": "migration/awaiting_verification.html",
    "done": "migration/done.html",
    # Back at the domain system; a tab left open shows the account ready, as done did.
    "handed_off": "migration/done.html",
    "expired": "migration/expired.html",
}
# States with no screen of their own: show() sends the person on from them.
SENT_ON_STATES = frozenset({"skipped", "cancelled"})


def states_without_screen(flow: Flow) -> list[str]:
    """The states of ``flow`` these pages cannot show (a version of the flow they predate)."""
    return sorted(set(flow.states) - STATE_TEMPLATES.keys() - SENT_ON_STATES)


def check_served(flow: Flow) -> None:
    """Raise :class:`FlowNotRunnable` if these pages lack a screen for a state of ``flow``."""
    states = states_without_screen(flow)
    if states:
        raise FlowNotRunnable(flow.version, "no screen for " + ", ".join(states))


def flows_not_served(journey: Journey) -> list[str]:
    """Why this release cannot serve some open attempts' flow versions, one line each.

    Only the flow file is versioned; the behaviours, events and screens it names are this
    release's code (docs/operations.md, "Changing the flow").
    """
    flows, problems = journey.open_flows()
    for flow in flows:
        try:
            check_served(flow)
        except FlowNotRunnable as problem:
            problems.append(problem)
    return [str(problem) for problem in problems]


@blueprint.get("/migracja")
def show() -> Response | str:
    """Show the screen of the state the attempt is in."""
    attempt = attempt_in_session()
    if attempt is None:
        flash(_("Zaloguj się, aby rozpocząć lub kontynuować migrację konta."), "info")
        return redirect(url_for("pages.start"))
    if attempt.state == "skipped":
        return _leave_to_domain_system()
    if attempt.state == "cancelled":
        session.pop(ATTEMPT_KEY, None)
        flash(_("Przerwano tworzenie konta w UEOZ."), "info")
        # The start page offers the way back to the domain system, and a new login for it.
        return redirect(url_for("pages.start"))
    return render_state(attempt, email_form=_kept_form(attempt))


@blueprint.get("/migracja/status")
def status() -> Response:
    """Tell the searching page's script which state the attempt is in (JSON)."""
    state = state_in_session()
    if state is None:
        return jsonify(state=None), 404
    return jsonify(state=state)


@blueprint.post("/migracja/<event>")
def fire(event: str) -> Response | tuple[str, int]:
    """Fire one of the person's events on their attempt, then show where it stands."""
    journey = services().journey
    if event not in FIRED_BY:  # not an event of this release (of any flow version it runs)
        abort(404)
    attempt_id = session.get(ATTEMPT_KEY)
    if not attempt_id:
        flash(_("Twoja sesja wygasła. Zaloguj się ponownie, aby kontynuować."), "info")
        return redirect(url_for("pages.start"), 303)
    data: dict[str, object] = {}
    form: EmailForm | None = None
    if event == "submit":
        form = EmailForm()
        data = {
            "email": form.email.data,
            "email_repeat": form.email_repeat.data,
            "terms_accepted": bool(form.terms_accepted.data),
        }
    if event in MAIL_EVENTS:
        data["language"] = current_language()  # the e-mail in the language of the pages
    try:
        if event not in USER_EVENTS:
            # The worker's and the system's events are not a person's to fire. Turned down by
            # this check, not by the flow: where the state takes the event, the log shows a
            # rejection (replay expects "refused" only where the flow itself refuses).
            raise journey.reject(attempt_id, event, actor=user(), reason="not_a_user_event")
        journey.fire(attempt_id, event, actor=user(), **data)
        if event == "resend":
            flash(
                _("Wysłaliśmy nowy link weryfikacyjny. Poprzednie linki przestały działać."), "info"
            )
    except AttemptNotFound:
        session.pop(ATTEMPT_KEY, None)
        flash(_("Nie znaleźliśmy Twojej migracji. Zaloguj się ponownie."), "info")
        return redirect(url_for("pages.start"), 303)
    except EventRefused as refused:
        if refused.reason == "invalid_submission" and form is not None:
            _keep_form(form, refused.fields)
        else:
            if refused.attempt.state != "expired":  # whose screen says it all
                notice = REFUSAL_NOTICES.get(refused.reason, REFUSAL_NOTICES["not_allowed"])
                flash(str(notice), "notice")
            if refused.reason == "resend_limit" and form is not None:
                _keep_form(form, {})  # what the person typed, not the address on record
    # Post/redirect/get, a refused form included: a reload never fires the event again, and
    # Back after the form went through never asks the browser to send it once more.
    return redirect(url_for("migration.show"), 303)


# The e-mail form the journey refused, kept for the one page that shows it again (with what
# the person typed and the reasons beside the fields).
KEPT_FORM = "email_form"


def _keep_form(form: EmailForm, errors: dict[str, str]) -> None:
    session[KEPT_FORM] = {
        "email": form.email.data or "",
        "email_repeat": form.email_repeat.data or "",
        "terms_accepted": bool(form.terms_accepted.data),
        "errors": errors,
    }


def _kept_form(attempt: Attempt) -> EmailForm | None:
    """The refused e-mail form to show again, once, if the attempt still waits for it."""
    kept = session.pop(KEPT_FORM, None)
    if kept is None:
        return None
    if attempt.state != "email_entry":  # moved on meanwhile (another tab)
        flash(str(REFUSAL_NOTICES["not_allowed"]), "notice")
        return None
    form = EmailForm(
        formdata=None,
        email=kept["email"],
        email_repeat=kept["email_repeat"],
        terms_accepted=kept["terms_accepted"],
    )
    form.add_domain_errors(kept["errors"])
    return form


def render_state(attempt: Attempt, *, email_form: EmailForm | None = None) -> str:
    """Render the screen of ``attempt``'s state."""
    template = STATE_TEMPLATES.get(attempt.state)
    if template is None:  # a state this version of the pages does not know
        abort(500)
    context: dict[str, object] = {"attempt": attempt, "domain_system": domain_system_of(attempt)}
    if attempt.state == "email_entry":
        if email_form is None:
            # Back to correct the address: the one given last, not e-PLOZ's again.
            address = attempt.email or attempt.email_prefill or ""
            email_form = EmailForm(formdata=None, email=address, email_repeat=address)
        context["form"] = email_form
        context["eploz_login"] = _eploz_login(attempt)
        context["domain_forms"] = domain_forms(email_form.email.data or "")
    if attempt.state == "awaiting_verification" and attempt.email:
        context["masked_email"] = shown_email(attempt.email)
        context["link_undeliverable"] = _link_undeliverable(attempt)
    return render_template(template, **context)


def _link_undeliverable(attempt: Attempt) -> bool:
    """Whether the latest link mail failed for good (the recipient's server refused it, say).

    The person would otherwise wait for a message that will never come; the likely cause is a
    mistyped address, which they can change from this screen.
    """
    with snapshot(services().sessions) as db:
        latest = latest_link_mail(db, attempt.id)
        return latest is not None and latest.failed_at is not None


def _eploz_login(attempt: Attempt) -> str | None:
    if attempt.eploz_account_id is None:
        return None
    with snapshot(services().sessions) as db:
        account = db.get(EplozAccount, attempt.eploz_account_id)
        return account.login if account else None


def _leave_to_domain_system() -> Response:
    """The person is already migrated: straight on to the domain system they came from."""
    if session.get(AUTHORIZATION_KEY):
        return redirect(url_for("oidc.to_domain_system"))
    session.pop(ATTEMPT_KEY, None)
    flash(
        _("Masz już konto UEOZ. Możesz logować się do systemów CeZ przez login.gov.pl."),
        "info",
    )
    return redirect(url_for("pages.start"))
