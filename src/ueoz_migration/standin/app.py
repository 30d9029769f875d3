"""The stand-in login node as a small Flask app of its own (own process, own port)."""

from __future__ import annotations

import datetime as dt
import logging
import re
from urllib.parse import urlencode

from flask import Flask, Response, abort, redirect, request

from ..adapters.wk.settings import ARTIFACT_RESOLUTION_PATH, LOGOUT_PATH, SSO_PATH
from .identities import DEMO_IDENTITIES
from .node import BadRequest, Person, StandinNode
from .settings import Failure, StandinSettings, refuse_outside_development

log = logging.getLogger(__name__)

SUBMIT_PATH = "/login/standin/submit"

_PAGE = """<!doctype html>
<html lang="pl">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Węzeł Krajowy – logowanie (stand-in)</title>
<style>
 body { font-family: sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; }
 .note { background: #fff3cd; padding: .5rem 1rem; border-radius: 4px; }
 label { display: block; margin-top: .8rem; }
 input { font-size: 1rem; padding: .3rem; width: 20rem; max-width: 100%; }
 .demo button { margin: .2rem 0; text-align: left; width: 100%; }
 .actions { margin-top: 1.2rem; }
 .error { color: #b00020; }
</style>
</head>
<body>
<h1>Węzeł Krajowy – logowanie (stand-in)</h1>
<p class="note">Zastępczy węzeł do celów deweloperskich i testowych. Nie sprawdza haseł:
podaj dane osoby, za którą chcesz się zalogować.</p>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<form method="post" action="{{ submit_path }}" id="login">
 <input type="hidden" name="ticket" value="{{ ticket }}">
 {% if failure %}<input type="hidden" name="failure" value="{{ failure }}">{% endif %}
 <label for="first_name">Imię (imiona)</label>
 <input id="first_name" name="first_name" value="{{ form.first_name }}" autocomplete="off">
 <label for="last_name">Nazwisko</label>
 <input id="last_name" name="last_name" value="{{ form.last_name }}" autocomplete="off">
 <label for="pesel">PESEL</label>
 <input id="pesel" name="pesel" value="{{ form.pesel }}" inputmode="numeric" autocomplete="off">
 <label for="date_of_birth">Data urodzenia (RRRR-MM-DD)</label>
 <input id="date_of_birth" name="date_of_birth" value="{{ form.date_of_birth }}"
        placeholder="RRRR-MM-DD" autocomplete="off">
 {% if not failure %}
 <details><summary>Tryb awarii (testy)</summary>
  <label for="failure">Odpowiedź węzła</label>
  <select id="failure" name="failure">
   <option value="">poprawna</option>
   {% for f in failures %}<option value="{{ f }}">{{ f }}</option>{% endfor %}
  </select>
 </details>
 {% endif %}
 <div class="actions">
  <button type="submit" name="action" value="login">Zaloguj</button>
  <button type="submit" name="action" value="cancel">Anuluj</button>
 </div>
</form>
<h2>Osoby demonstracyjne</h2>
<p>Kliknij, aby wypełnić formularz.</p>
<ul class="demo">
{% for p in identities %}
 <li><button type="button" data-first-name="{{ p.first_name }}"
      data-last-name="{{ p.last_name }}" data-pesel="{{ p.pesel }}"
      data-date-of-birth="{{ p.date_of_birth.isoformat() }}">
   {{ p.first_name }} {{ p.last_name }}, PESEL {{ p.pesel }} – {{ p.description }}</button></li>
{% endfor %}
</ul>
<script>
document.querySelectorAll('.demo button').forEach(function (b) {
  b.addEventListener('click', function () {
    document.getElementById('first_name').value = b.dataset.firstName;
    document.getElementById('last_name').value = b.dataset.lastName;
    document.getElementById('pesel').value = b.dataset.pesel;
    document.getElementById('date_of_birth').value = b.dataset.dateOfBirth;
  });
});
</script>
</body>
</html>
"""

_POST_BACK = """<!doctype html>
<html lang="pl">
<head><meta charset="utf-8"><title>Węzeł Krajowy – przekierowanie (stand-in)</title></head>
<body onload="document.forms[0].submit()">
<form method="post" action="{{ acs }}">
 <input type="hidden" name="SAMLart" value="{{ artifact }}">
 <input type="hidden" name="RelayState" value="{{ relay_state }}">
 <noscript><button type="submit">Dalej</button></noscript>
</form>
</body>
</html>
"""

_ERROR = """<!doctype html>
<html lang="pl">
<head><meta charset="utf-8"><title>Węzeł Krajowy – błąd (stand-in)</title></head>
<body><h1>Nieprawidłowe żądanie logowania</h1><p>{{ message }}</p></body>
</html>
"""


def create_standin_app(settings: StandinSettings) -> Flask:
    """Build the stand-in node's app; refuse a production configuration."""
    refuse_outside_development(settings.app_env)
    app = Flask(__name__)
    node = StandinNode(settings)
    app.extensions["wk_standin"] = node
    # Compiled once: render_template_string would recompile on every request.
    page, post_back, error_page = (
        app.jinja_env.from_string(source) for source in (_PAGE, _POST_BACK, _ERROR)
    )

    def login_page(ticket: str, failure: str, form: dict, error: str = "", status: int = 200):
        return (
            page.render(
                ticket=ticket,
                failure=failure,
                form=form,
                error=error,
                failures=[f.value for f in Failure],
                identities=DEMO_IDENTITIES,
                submit_path=SUBMIT_PATH,
            ),
            status,
        )

    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest):
        log.info("stand-in refused a request: %s", exc)
        return error_page.render(message=str(exc)), 400

    @app.post(SSO_PATH)
    def single_sign_on():
        failure = _failure(request.args.get("failure") or request.form.get("failure"))
        ticket, _ = node.accept_authn_request(
            request.form.get("SAMLRequest", ""), request.form.get("RelayState", ""), failure
        )
        return login_page(ticket, failure.value if failure else "", {})

    @app.post(SUBMIT_PATH)
    def submit():
        ticket = request.form.get("ticket", "")
        node.pending(ticket)
        failure = _failure(request.form.get("failure"))
        if request.form.get("action") == "cancel":
            person = None
        else:
            form = {k: request.form.get(k, "").strip() for k in _FIELDS}
            error = _form_error(form)
            if error:
                return login_page(ticket, request.form.get("failure", ""), form, error, 422)
            person = Person(**form)
        artifact, login = node.finish_login(ticket, person, failure)
        if settings.artifact_binding == "redirect":
            separator = "&" if "?" in settings.sp_acs_url else "?"
            query = urlencode({"SAMLart": artifact, "RelayState": login.relay_state})
            return redirect(f"{settings.sp_acs_url}{separator}{query}", code=302)
        return post_back.render(
            acs=settings.sp_acs_url, artifact=artifact, relay_state=login.relay_state
        )

    @app.post(ARTIFACT_RESOLUTION_PATH)
    def artifact_resolution():
        status, body = node.resolve(request.get_data())
        return Response(body, status=status, content_type="text/xml; charset=utf-8")

    @app.post(LOGOUT_PATH)
    def single_logout():
        status, body = node.logout(request.get_data())
        return Response(body, status=status, content_type="text/xml; charset=utf-8")

    @app.get("/healthz")
    def healthz():
        return {"status": "ok", "entity_id": settings.entity_id}

    return app


_FIELDS = ("first_name", "last_name", "pesel", "date_of_birth")
_PERSON_IDENTIFIER = re.compile(r"([A-Z]{2}/[A-Z]{2}/)?[0-9]{11}")


def _failure(value: str | None) -> Failure | None:
    if not value:
        return None
    try:
        return Failure(value)
    except ValueError:
        abort(400)


def _form_error(form: dict[str, str]) -> str:
    if not all(form.values()):
        return "Wypełnij wszystkie pola."
    try:
        dt.date.fromisoformat(form["date_of_birth"])
    except ValueError:
        return "Data urodzenia musi mieć postać RRRR-MM-DD."
    # 11 digits, or an eIDAS identifier (PL/PL/ and 11 digits; another country's too, for
    # the tests), passed on as typed.
    if not _PERSON_IDENTIFIER.fullmatch(form["pesel"]):
        return "PESEL to 11 cyfr (albo identyfikator eIDAS: PL/PL/ i 11 cyfr)."
    # A PESEL failing its checksum is let through on purpose: a real node never sends
    # one, and the tests need to see the service refuse it cleanly.
    return ""
