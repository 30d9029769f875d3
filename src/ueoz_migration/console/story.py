"""One attempt as the helpdesk reads it in the console: ``helpdesk.py``'s view and rules,
with the attempt's path drawn on its flow.

The facts and the advice are the command line's (``helpdesk lookup``), word for word: the
rules are written once, in ``helpdesk.py`` and ``domain/codes.py``, and docs/event-codes.md
repeats them. They are in English there, as the helpdesk's manual is; the console's own words
are Polish and English.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

import structlog
from markupsafe import Markup
from statemachine.contrib.diagram.graphviz import GraphvizError

from .. import helpdesk
from ..audit.log import story
from ..db.engine import snapshot
from ..diagram import path_of, svg
from ..domain.matching import first_name_agrees, last_name_agrees
from ..flow import Flow, FlowVersionUnknown
from ..journey import FlowNotRunnable, Journey
from .actions import can_resend, cancel_steps

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class NameCheck:
    """An e-PLOZ account under the PESEL, its names beside the node's."""

    entry: helpdesk.EplozEntry
    first_agrees: bool
    last_agrees: bool


@dataclass(frozen=True)
class Story:
    """Everything the story page shows of one attempt."""

    view: helpdesk.HelpdeskView
    code: str
    what_to_do: str
    open: str
    link_mail: str
    accounts: list[NameCheck]
    path: str
    diagram: Markup | None
    can_resend: bool
    can_cancel: bool


def tell(journey: Journey, view: helpdesk.HelpdeskView) -> Story:
    """Put the attempt's story together from the helpdesk's view of it."""
    attempt = view.attempt
    flow = _flow(journey, attempt.flow_version)
    steps = path_of((row.source, row.target, row.outcome) for row in view.log)
    return Story(
        view=view,
        code=helpdesk.code_fact(attempt.event_code),
        what_to_do=helpdesk.what_to_do(view),
        open=helpdesk.openness(attempt, view.now),
        link_mail=helpdesk.link_mail_fact(view.link_mail),
        accounts=[
            NameCheck(
                entry,
                first_name_agrees(entry.first_name, attempt.given_names),
                last_name_agrees(entry.last_name, attempt.family_name),
            )
            for entry in view.eploz
        ],
        path=story(view.log),
        diagram=DRAWINGS.get(flow, tuple(steps)) if flow is not None else None,
        can_resend=flow is not None and can_resend(flow, attempt.state),
        can_cancel=flow is not None and bool(cancel_steps(flow, attempt.state)),
    )


def _flow(journey: Journey, version: str) -> Flow | None:
    try:
        with snapshot(journey.sessions) as session:
            return journey.flow_for(session, version)
    except (FlowNotRunnable, FlowVersionUnknown):
        return None  # the story still reads; no diagram and no action


_XML_PROLOGUE = re.compile(r"^.*?(?=<svg)", re.DOTALL)
_SIZE = re.compile(r'\s(width|height)="[^"]*"')


class _Drawings:
    """Each flow version's diagram with a path drawn on it, made once per process.

    Graphviz runs as a program (tens of milliseconds); the paths attempts take through one
    flow are few, so a small cache spares almost every look-up the drawing.
    """

    SIZE = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._drawn: OrderedDict[tuple[str, tuple[tuple[str, str], ...]], Markup | None] = (
            OrderedDict()
        )

    def get(self, flow: Flow, path: tuple[tuple[str, str], ...]) -> Markup | None:
        key = (flow.version, path)
        with self._lock:
            if key in self._drawn:
                self._drawn.move_to_end(key)
                return self._drawn[key]
        drawing = _draw(flow, path)
        with self._lock:
            self._drawn[key] = drawing
            while len(self._drawn) > self.SIZE:
                self._drawn.popitem(last=False)
        return drawing


def _draw(flow: Flow, path: tuple[tuple[str, str], ...]) -> Markup | None:
    """The SVG element to put in the page: no XML prologue, sized by the page's CSS."""
    try:
        drawn = svg(flow, path).decode("utf-8")
    except GraphvizError as error:
        log.warning("console.diagram_unavailable", error=str(error))
        return None
    element = _XML_PROLOGUE.sub("", drawn, count=1)
    opening, rest = element.split(">", 1)
    # Graphviz's own titles name the graph and each node; the page says what the picture
    # shows in words next to it (the path), so the picture is one image to a screen reader.
    opening = _SIZE.sub("", opening) + ' role="img" aria-labelledby="path-line"'
    return Markup(opening + ">" + rest)  # noqa: S704 - Graphviz's output of our own flow


DRAWINGS = _Drawings()
