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


class _Node(http.server.BaseHTTPRequestHandler):
    """A resolution service that answers 200, then sends its body slowly, or far too much."""

    mode = "drip"

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
                self.wfile.write(piece)
                self.wfile.flush()
                if self.mode == "drip":
                    time.sleep(0.1)  # each byte well inside the timeout
        except OSError:
            pass  # the service provider hung up, as it should

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def node_that(request) -> Iterator:
    servers = []

    def start(mode: str) -> str:
        handler = type("Handler", (_Node,), {"mode": mode})
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
    started = time.monotonic()
    with pytest.raises(LoginFailed) as caught:
        sp.resolve(artifact, "ID-pending")
    return caught.value, time.monotonic() - started


def test_a_reply_trickling_in_is_given_up_when_the_whole_exchange_is_over_time(
    node_that, make_sp, sp_settings
):
    failure, seconds = resolve_against(make_sp, sp_settings, node_that("drip"), timeout=0.5)

    assert failure.reason == FailureReason.NODE_UNREACHABLE
    assert "no whole reply within" in failure.detail
    assert seconds < 3  # not the 100 s the trickle would take


def test_a_reply_too_big_for_any_answer_is_refused_unread(node_that, make_sp, sp_settings):
    failure, _ = resolve_against(make_sp, sp_settings, node_that("huge"), timeout=10)

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
