"""gunicorn's threaded worker, reading each request whole before a thread takes it.

    gunicorn --worker-class ueoz_migration.gunicorn_worker.BufferingThreadWorker …

gunicorn's ``gthread`` worker hands a connection to a thread as soon as its first byte
arrives, and the thread then reads the rest of the request, blocking. A client that sends one
byte every two seconds holds that thread for as long as it likes; as many such clients as the
instance has threads (six on the embedded default) and nobody else is served. In production
nginx reads each request whole first (deploy/nginx/ueoz-migration.conf); the embedded default
has no proxy in front, and a fresh machine may not have one to install.

This worker reads in its main loop instead, with the connections it already polls, without
blocking: the request's header, then as much of its body as its ``Content-Length`` says (a
chunked body up to its last chunk), and only a request that came whole within
:data:`REQUEST_TIMEOUT` goes to a thread; the connection of one that did not is closed. A slow
client then costs a socket and a buffer, not a thread. Written by hand because gunicorn has no
such setting and no worker that does it, and the async workers (gevent, eventlet) would need
the database drivers patched. It builds on gunicorn 27's ``gthread`` internals (``TConn``,
``enqueue_req``, the parser's ``unreader``): setup.cfg pins gunicorn to that major version,
and tests/integration/test_slow_clients.py runs it.
"""

from __future__ import annotations

import errno
import selectors
import time
from collections import deque
from functools import partial
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

#: The longest a client may take to send a whole request (header and body).
REQUEST_TIMEOUT = 10.0
#: Past this, a request is handed over as it is: gunicorn refuses an oversized header, and the
#: service a body over its MAX_CONTENT_LENGTH (64 KiB) by its Content-Length, without reading.
MAX_BUFFERED = 256 * 1024
_HEADER_END = b"\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


def request_complete(data: bytes) -> bool:
    """Say whether ``data`` holds a whole HTTP/1.x request (or enough to hand it over)."""
    end = data.find(_HEADER_END)
    if end < 0:
        return len(data) >= MAX_BUFFERED
    header = data[:end].lower()
    body = len(data) - end - len(_HEADER_END)
    for line in header.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip(), value.strip()
        if name == b"transfer-encoding" and b"chunked" in value:
            return data.endswith(_LAST_CHUNK) or len(data) >= MAX_BUFFERED
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return True  # gunicorn answers it 400
            return body >= length or len(data) >= MAX_BUFFERED
    return True


class BufferingThreadWorker(ThreadWorker):
    """``gthread``, but a thread only ever gets a request that has arrived whole."""

    def init_process(self) -> None:
        self.buffering: deque[Any] = deque()
        super().init_process()

    def enqueue_req(self, conn: Any) -> None:
        if getattr(conn, "ueoz_whole", None) is not None or self.cfg.is_ssl:
            super().enqueue_req(conn)
            return
        # A kept-alive connection's parser may have read the start of the next request.
        ahead = b""
        if conn.parser is not None and not conn.is_http2:
            ahead = conn.parser.unreader.take_buffered()
        conn.ueoz_buffer = bytearray(ahead)
        conn.ueoz_deadline = time.monotonic() + REQUEST_TIMEOUT
        conn.sock.setblocking(False)
        if not self._read(conn):
            self.buffering.append(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))

    def _readable(self, conn: Any, _sock: Any) -> None:
        if self._read(conn):
            self.poller.unregister(conn.sock)
            self.buffering.remove(conn)

    def _read(self, conn: Any) -> bool:
        """Read what has come; True once the connection is handed over or closed."""
        while True:
            try:
                piece = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                if error.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                piece = b""
            if not piece:  # the client went away before its request was whole
                self._drop(conn)
                return True
            conn.ueoz_buffer += piece
            if request_complete(bytes(conn.ueoz_buffer)):
                conn.ueoz_whole = bytes(conn.ueoz_buffer)
                conn.ueoz_buffer = bytearray()
                conn.data_ready = True
                super().enqueue_req(conn)
                return True
        return False

    def _drop(self, conn: Any) -> None:
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        for conn in [each for each in self.buffering if each.ueoz_deadline <= now]:
            self.buffering.remove(conn)
            self.poller.unregister(conn.sock)
            self._drop(conn)

    def handle(self, conn: Any) -> Any:
        whole = getattr(conn, "ueoz_whole", None)
        if whole is not None:
            conn.ueoz_whole = None
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(whole)
        return super().handle(conn)
