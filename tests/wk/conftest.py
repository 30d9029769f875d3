"""Fixtures for login through the node: real keys both ways, the stand-in in process."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from lxml import html
from werkzeug.serving import make_server

from ueoz_migration.adapters.wk import MemoryReplayStore, ServiceProvider, WkSettings
from ueoz_migration.adapters.wk.keys import dev_pair
from ueoz_migration.standin import DEMO_IDENTITIES, StandinSettings, create_standin_app
from ueoz_migration.standin.node import StandinNode

NODE_URL = "http://node.test"
SP_URL = "http://sp.test"
ANNA = DEMO_IDENTITIES[0]
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def instance_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("instance")


@pytest.fixture(scope="session")
def sp_settings(instance_dir: Path) -> WkSettings:
    return WkSettings.from_env(
        {"WK_NODE_URL": NODE_URL, "WK_TIMEOUT_SECONDS": "0.5"},
        base_url=SP_URL,
        instance_dir=instance_dir,
        production=False,
    )


@pytest.fixture
def make_standin(sp_settings: WkSettings, instance_dir: Path):
    """Build a stand-in app for `sp_settings`, with settings overridden as asked."""

    def make(**options):
        settings = StandinSettings.for_service(
            sp_settings,
            base_url=options.pop("base_url", NODE_URL),
            signing=dev_pair(instance_dir / "wk", "standin-signing", "WK stand-in node"),
            **options,
        )
        return create_standin_app(settings)

    return make


@pytest.fixture
def standin_app(make_standin):
    return make_standin()


@pytest.fixture
def node(standin_app) -> StandinNode:
    return standin_app.extensions["wk_standin"]


@pytest.fixture
def make_sp(sp_settings: WkSettings) -> Iterator[Callable[..., ServiceProvider]]:
    """Build service providers whose back channel reaches a given app or transport."""
    made: list[ServiceProvider] = []

    def make(
        target,
        *,
        replay_store=None,
        settings: WkSettings | None = None,
    ) -> ServiceProvider:
        transport = (
            target if isinstance(target, httpx.BaseTransport) else httpx.WSGITransport(app=target)
        )
        sp = ServiceProvider(
            settings or sp_settings,
            replay_store or MemoryReplayStore(),
            httpx.Client(transport=transport),
        )
        made.append(sp)
        return sp

    yield make
    for sp in made:
        sp.close()


@pytest.fixture
def sp(make_sp, standin_app) -> ServiceProvider:
    return make_sp(standin_app)


@dataclasses.dataclass
class Arrival:
    """What the browser brings back to the ACS."""

    artifact: str
    relay_state: str
    request_id: str


class Browser:
    """Plays the person's browser between the service and the stand-in's pages."""

    def __init__(self, app) -> None:
        self.client = app.test_client()

    def login_page(self, sp: ServiceProvider, query: str = "", relay_state: str = "rs-1"):
        form = sp.authn_request(relay_state)
        page = self.client.post(
            "/login/SingleSignOnService" + query,
            data={"SAMLRequest": form.saml_request, "RelayState": form.relay_state},
        )
        return form, page

    def login(
        self,
        sp: ServiceProvider,
        person=ANNA,
        *,
        action: str = "login",
        query: str = "",
        failure: str = "",
    ) -> Arrival:
        form, page = self.login_page(sp, query)
        assert page.status_code == 200, page.text
        fields = _form_fields(page.text, "login")
        fields.update(
            first_name=person.first_name,
            last_name=person.last_name,
            pesel=person.pesel,
            date_of_birth=person.date_of_birth.isoformat(),
            action=action,
        )
        if failure:
            fields["failure"] = failure
        answer = self.client.post("/login/standin/submit", data=fields)
        if answer.status_code == 302:
            query_string = httpx.URL(answer.headers["Location"]).params
            return Arrival(query_string["SAMLart"], query_string["RelayState"], form.request_id)
        assert answer.status_code == 200, answer.text
        back = _form_fields(answer.text, None)
        return Arrival(back["SAMLart"], back["RelayState"], form.request_id)


def _form_fields(page: str, form_id: str | None) -> dict[str, str]:
    document = html.fromstring(page)
    form = document.get_element_by_id(form_id) if form_id else document.forms[0]
    return {
        field.name: field.value or ""
        for field in form.inputs
        if field.name and getattr(field, "type", "") == "hidden"
    }


class Recording(httpx.BaseTransport):
    """The back channel to the stand-in, keeping every SOAP exchange it carries."""

    def __init__(self, app) -> None:
        self._inner = httpx.WSGITransport(app=app)
        self.exchanges: list[tuple[str, bytes, bytes]] = []  # (path, request, answer)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sent = request.read()
        response = self._inner.handle_request(request)
        answer = response.read()
        self.exchanges.append((request.url.path, sent, answer))
        return httpx.Response(response.status_code, headers=response.headers, content=answer)

    def at(self, path: str) -> list[tuple[bytes, bytes]]:
        """The (request, answer) pairs the node's endpoint at ``path`` received."""
        return [(sent, answer) for where, sent, answer in self.exchanges if where == path]


@pytest.fixture
def browser(standin_app) -> Browser:
    return Browser(standin_app)


@pytest.fixture
def loopback_standin(make_standin):
    """Run a stand-in on a loopback port (real sockets, so timeouts are real)."""
    servers = []

    def start(**options):
        server = make_server("127.0.0.1", 0, None, threaded=True)
        base_url = f"http://127.0.0.1:{server.server_port}"
        server.app = make_standin(base_url=base_url, **options)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append(server)
        return server.app, base_url

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
