"""SIGTERM and Ctrl-C stop the worker, the mail sender and the dev stack, whenever they land.

Each case runs in a child process: signal handlers belong to a process's main thread, and a
regression here would hang, which the child's timeout turns into a failure.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(script: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_signal_landing_while_the_loop_holds_the_event_still_stops_it():
    # The moment that once hung a mail sender for ever: the main thread is inside
    # stop.wait(), holding the event's own lock, when the handler runs.
    output = run(
        """
        import signal
        from ueoz_migration.signals import stop_on_signals

        with stop_on_signals() as stop:
            with stop._cond:
                signal.raise_signal(signal.SIGTERM)
            print("stopped" if stop.wait(10) else "still running")
        """
    )
    assert output == "stopped"


def test_sigterm_and_ctrl_c_stop_a_waiting_loop_and_the_old_handlers_come_back():
    output = run(
        """
        import os, signal, threading
        from ueoz_migration.signals import stop_on_signals

        before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        for number in (signal.SIGTERM, signal.SIGINT):
            with stop_on_signals() as stop:
                threading.Timer(0.2, os.kill, (os.getpid(), number)).start()
                rounds = 0
                while not stop.wait(0.05):
                    rounds += 1
                print(number.name, "stopped after waiting" if rounds else "stopped at once")
        after = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        print("handlers restored" if after == before else "handlers left behind")
        """
    )
    assert output.splitlines() == [
        "SIGTERM stopped after waiting",
        "SIGINT stopped after waiting",
        "handlers restored",
    ]
