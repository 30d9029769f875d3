"""The SOAP back channel within bounds: a whole exchange in its time, a reply of bounded size."""

from __future__ import annotations

import dataclasses
import http.server
import socketserver
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.wk.conftest import ANNA
from tests.wk.test_wrapping import Tampering, _artifact_response
from ueoz_migration.adapters.wk import FailureReason, LoginFailed
from ueoz_migration.adapters.wk import messages as m
from ueoz_migration.adapters.wk.sp import MAX_SOAP_REPLY_BYTES
from ueoz_migration.adapters.wk.xmlsig import NS

XML_ID = "{http://www.w3.org/XML/1998/namespace}id"


class Progress:
    """What a node has sent of its reply, and how its sending ended."""

    def __init__(self) -> None:
        self.sent = 0
        self.last_piece = threading.Event()  # set before the body's last piece goes out
        self.hung_up = threading.Event()  # the service provider closed the connection first


class _Node(http.server.BaseHTTPRequestHandler):
    """A resolution service that answers 200, then sends its body slowly, or far too much."""

    mode = "drip"
    progress = Progress()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        size = 1000 if self.mode == "drip" else 64 * MAX_SOAP_REPLY_BYTES
        self.send_header("Content-Length", str(size))
        self.end_headers()
        piece = b" " if self.mode == "drip" else b" " * 65536
        try:
            for _ in range(size // len(piece)):
                if self.progress.sent + len(piece) >= size:
                    self.progress.last_piece.set()
                self.wfile.write(piece)
                self.wfile.flush()
                self.progress.sent += len(piece)
                if self.mode == "drip":
                    time.sleep(0.1)  # each byte well inside the timeout
        except OSError:
            self.progress.hung_up.set()  # the service provider hung up, as it should

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def node_that(request) -> Iterator:
    servers = []

    def start(mode: str, progress: Progress | None = None) -> str:
        handler = type("Handler", (_Node,), {"mode": mode, "progress": progress or Progress()})
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/ars"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def resolve_against(make_sp, sp_settings, url: str, timeout: float):
    settings = dataclasses.replace(
        sp_settings, artifact_resolution_url=url, timeout_seconds=timeout
    )
    sp = make_sp(httpx.HTTPTransport(), settings=settings)
    artifact = m.Artifact.new(sp_settings.node_entity_id).encode()
    with pytest.raises(LoginFailed) as caught:
        sp.resolve(artifact, "ID-pending")
    return caught.value


def test_a_reply_trickling_in_is_given_up_when_the_whole_exchange_is_over_time(
    node_that, make_sp, sp_settings
):
    trickle = Progress()

    failure = resolve_against(make_sp, sp_settings, node_that("drip", trickle), timeout=0.5)
    whole_before_giving_up = trickle.last_piece.is_set()

    assert failure.reason == FailureReason.NODE_UNREACHABLE
    assert "no whole reply within 0.5 s" in failure.detail
    # Given up before the node had sent its whole reply (the trickle takes 100 s), and the
    # connection closed under the node: nothing went on reading it.
    assert not whole_before_giving_up
    assert trickle.hung_up.wait(60), f"the node sent on: {trickle.sent} of 1000 bytes"


def test_a_reply_too_big_for_any_answer_is_refused_unread(node_that, make_sp, sp_settings):
    failure = resolve_against(make_sp, sp_settings, node_that("huge"), timeout=10)

    assert failure.reason == FailureReason.MALFORMED
    assert f"over {MAX_SOAP_REPLY_BYTES} bytes" in failure.detail


def test_the_signed_id_repeated_as_an_xml_id_is_a_bad_signature_not_a_crash(
    make_sp, standin_app, browser
):
    def add_xml_id(envelope) -> None:
        header = envelope.find("soap:Header", NS)
        header.set(XML_ID, _artifact_response(envelope).get("ID"))

    sp = make_sp(Tampering(standin_app, add_xml_id))
    arrival = browser.login(sp, ANNA)

    with pytest.raises(LoginFailed) as caught:
        sp.resolve(arrival.artifact, arrival.request_id)

    assert caught.value.reason == FailureReason.BAD_SIGNATURE
