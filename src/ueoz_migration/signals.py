"""Stop a long-running process between two units of work, not in the middle of one."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Yield an event that SIGTERM or SIGINT (Ctrl-C) sets, instead of raising mid-step.

    The worker finishes its search, the mail sender its message, the dev stack its shutdown
    order; then each sees the event and stops.

    The signal handler must not set the event itself. Python runs handlers in the main
    thread between two bytecodes, and ``Event.set`` takes the event's lock; when the
    signal lands while the main thread holds that same lock — inside ``stop.wait()``,
    which every loop here calls several times a second — the handler waits for a lock its
    own thread holds, for ever. (It happened: a mail sender that never stopped on SIGTERM.)
    So the handler only writes a byte to a pipe, which takes no Python lock, and a helper
    thread that waits on the pipe sets the event. The standard library has no lock-free
    way to set an event from a handler, hence this hand-written relay.
    """
    stop = threading.Event()
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def relay() -> None:
        while os.read(read_end, 1):  # b"" once the write end is closed
            stop.set()

    def handler(_number: int, _frame: object) -> None:
        with suppress(BlockingIOError):  # the pipe is full of earlier signals: one is enough
            os.write(write_end, b"\0")

    helper = threading.Thread(target=relay, name="stop-on-signals", daemon=True)
    helper.start()
    previous = {
        number: signal.signal(number, handler) for number in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield stop
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
        os.close(write_end)
        helper.join()
        os.close(read_end)
