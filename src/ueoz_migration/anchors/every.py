"""Anchor the log every few minutes beside the search worker (``worker --anchors DIR``).

Each worker that is given a folder looks once a minute whether the last anchor is older than
the period, and takes one when it is; so several workers write about one anchor a period
between them, not one each.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from .leaves import LogBusy
from .take import Taken, take_anchor

log = structlog.get_logger(__name__)

# How often a worker looks whether an anchor is due.
LOOK_EVERY = 60.0


class AnchorWriter:
    """Takes an anchor into ``directory`` whenever the last one is ``period`` old."""

    def __init__(
        self,
        engine: Engine,
        sessions: sessionmaker[Session],
        key: Ed25519PrivateKey,
        directory: Path,
        period: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self.engine, self.sessions, self.key = engine, sessions, key
        self.directory, self.period, self.clock = directory, period, clock

    def anchor_if_due(self) -> Taken | None:
        """Take an anchor if none is younger than the period; log what happened."""
        try:
            taken = take_anchor(
                self.engine,
                self.sessions,
                self.key,
                self.directory,
                self.clock(),
                unless_within=self.period,
            )
        except (LogBusy, OSError, SQLAlchemyError) as error:
            # The next look tries again; the search goes on meanwhile.
            log.error("anchor.failed", error=type(error).__name__, reason=str(error)[:200])
            return None
        if taken is not None:
            log.info(
                "anchor.written",
                path=str(taken.path),
                size=taken.anchor.size,
                hashed=taken.hashed,
                seconds=round(taken.seconds, 3),
            )
        return taken

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.anchor_if_due()
            stop.wait(min(LOOK_EVERY, self.period.total_seconds()))

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="anchors", daemon=True)
        thread.start()
        return thread
