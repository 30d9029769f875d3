"""Login through the stand-in node in process, for the page tests: a browser's round trip.

Real signatures and encryption both ways: the stand-in runs in process and the service's SP
reaches its SOAP endpoint through httpx's WSGI transport (``BackChannel``). The fixtures that
wire it up (``node``, ``web``, ``back_channel``) are in ``tests/web/conftest.py``.
"""

from __future__ import annotations

import html
import io

from lxml import html as lxml_html

ANNA = {
    "first_name": "Anna Maria",
    "last_name": "Mickiewicz-Sokołowska",
    "pesel": "87042712342",
    "date_of_birth": "1987-04-27",
}


class BackChannel:
    """The stand-in's WSGI app, keeping every SOAP exchange the service has with it."""

    def __init__(self, app) -> None:
        self.app = app
        self.exchanges: list[tuple[str, bytes, bytes]] = []  # (path, request, answer)

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read()
        environ["wsgi.input"] = io.BytesIO(body)
        result = self.app(environ, start_response)
        try:
            answer = b"".join(result)
        finally:
            getattr(result, "close", lambda: None)()
        self.exchanges.append((environ["PATH_INFO"], body, answer))
        return [answer]

    def at(self, path: str) -> list[tuple[bytes, bytes]]:
        """The (request, answer) pairs the node's endpoint at ``path`` received."""
        return [(sent, answer) for where, sent, answer in self.exchanges if where == path]


def fields(page: str, form_id: str | None = None) -> tuple[str, dict[str, str]]:
    document = lxml_html.fromstring(page)
    form = document.get_element_by_id(form_id) if form_id else document.forms[0]
    hidden = {
        field.name: field.value or ""
        for field in form.inputs
        if field.name and getattr(field, "type", "") == "hidden"
    }
    return form.action, hidden


def at_node(web, node, page, person=ANNA, *, action="login"):
    """From our page that posts to the node: log in there; the node's post back, unsent."""
    url, data = fields(page.get_data(as_text=True), "to-node")
    assert url == "http://127.0.0.1:5001/login/SingleSignOnService"
    node_page = node.post("/login/SingleSignOnService", data=data).get_data(as_text=True)
    _, login = fields(node_page, "login")
    login.update(person, action=action)
    back = node.post("/login/standin/submit", data=login).get_data(as_text=True)
    acs, post_back = fields(back)
    assert acs == "http://localhost/saml/acs"
    return post_back


def log_in(web, node, person=ANNA, *, action="login", start="/login"):
    """Play the browser: ``start`` (our login, or a domain system's authorization request),
    the node's form, the node's post back to the ACS."""
    post_back = at_node(web, node, web.get(start), person, action=action)
    return web.post("/saml/acs", data=post_back), post_back


def text_of(response):
    return html.unescape(response.get_data(as_text=True))
