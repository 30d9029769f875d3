"""Free loopback ports for the servers the tests start (SMTP, gunicorn, the dev stack).

A port the kernel hands out for port 0 is released again before the server binds it, and two
test processes (pytest -n 2) asking the same way may be handed the same one: a test once found
another test's SMTP server where its web service should have been. Ports are therefore taken
below Linux's ephemeral range (32768–60999), where nothing that binds port 0 ever lands, from
a block of their own for each test process (up to ten; more share blocks).
"""

from __future__ import annotations

import os
import random
import socket

_FIRST, _BLOCK, _BLOCKS = 20000, 1200, 10  # gw0: 20000–21199, gw1: 21200–22399, … gw9


def free_port() -> int:
    """A loopback port nothing listens on now, in this test process's own block."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    low = _FIRST + _BLOCK * (int(worker) % _BLOCKS if worker.isdigit() else 0)
    for port in random.sample(range(low, low + _BLOCK), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}–{low + _BLOCK - 1}")
