"""Render the migration flow as a diagram: Mermaid (the default), Graphviz DOT, or SVG.

The diagrams are drawn from the flow's transition table, the same table the journey and the
audit replay run on, so a diagram can only show what the service does. SVG goes through the
Graphviz ``dot`` program (Debian package ``graphviz``); Mermaid and DOT need nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from statemachine.contrib.diagram.graphviz import run_graphviz

from .flow import Flow

FORMATS = ("mermaid", "dot", "svg")
DOC_PATH = Path("docs") / "state-diagram.md"


def _edges(flow: Flow) -> list[tuple[str, str, str]]:
    """(source, target, events) with the events between the same two states on one label."""
    labels: dict[tuple[str, str], list[str]] = {}
    for (source, event), target in flow.transitions.items():
        labels.setdefault((source, target), []).append(event)
    return [(source, target, ", ".join(events)) for (source, target), events in labels.items()]


def mermaid(flow: Flow) -> str:
    """Return the flow as a Mermaid ``stateDiagram-v2``."""
    lines = [
        "stateDiagram-v2",
        f"    %% flow {flow.name}, version {flow.version}",
        "    direction TB",
        f"    [*] --> {flow.initial}",
    ]
    lines += [f"    {source} --> {target} : {events}" for source, target, events in _edges(flow)]
    lines += [f"    {state} --> [*]" for state in flow.states if state in flow.finals]
    return "\n".join(lines) + "\n"


#: How a path through the flow is drawn on it (``dot(flow, path)``): taken edges and the
#: states passed through bold and blue, where the attempt stands filled; enough contrast on
#: white for WCAG's 3:1 of graphics, and told apart by weight and fill, not by colour alone.
PATH_COLOUR = "#0b5cad"
HERE_FILL = "#dbe9f8"


def dot(flow: Flow, path: Sequence[tuple[str, str]] = ()) -> str:
    """Return the flow as a Graphviz DOT digraph; final states are drawn with a double border.

    ``path``: the (source, target) steps an attempt took, in order (``path_of``); drawn on
    the flow, with the last target as where it stands.
    """
    taken = set(path)
    passed = {state for step in path for state in step}
    here = path[-1][1] if path else None
    lines = [
        f'digraph "{flow.name}" {{',
        f"    // flow {flow.name}, version {flow.version}",
        "    rankdir=TB;",
        '    node [shape=box, style=rounded, fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
        '    "__initial" [shape=point, width=0.15, label=""];',
    ]
    bold = f'color="{PATH_COLOUR}", fontcolor="{PATH_COLOUR}", penwidth=2.5'
    for state in flow.states:
        extra = ", peripheries=2" if state in flow.finals else ""
        if state in passed:
            extra += f", {bold}"
        if state == here:
            extra += f', style="rounded,filled", fillcolor="{HERE_FILL}"'
        lines.append(f'    "{state}" [label="{state}"{extra}];')
    lines.append(f'    "__initial" -> "{flow.initial}";')
    lines += [
        f'    "{source}" -> "{target}" [label="{events}"'
        + (f", {bold}" if (source, target) in taken else "")
        + "];"
        for source, target, events in _edges(flow)
    ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def svg(flow: Flow, path: Sequence[tuple[str, str]] = ()) -> bytes:
    """Return the flow drawn as SVG by Graphviz; ``GraphvizError`` when ``dot`` is missing."""
    return run_graphviz(dot(flow, path), "svg")


def path_of(rows: Iterable[tuple[str, str, str]]) -> list[tuple[str, str]]:
    """The (source, target) steps of an attempt's applied log rows (source, target, outcome).

    Its first row (``start``) enters the initial state from nowhere: not an edge of the flow.
    """
    return [(source, target) for source, target, outcome in rows if outcome == "applied" and source]


def render(flow: Flow, fmt: str) -> bytes:
    if fmt == "mermaid":
        return mermaid(flow).encode()
    if fmt == "dot":
        return dot(flow).encode()
    if fmt == "svg":
        return svg(flow)
    raise ValueError(f"unknown diagram format {fmt!r}; choose one of {', '.join(FORMATS)}")


def state_diagram_page(flow: Flow) -> str:
    """Return the text of docs/state-diagram.md for this flow."""
    rows = []
    for state in flow.states:
        kind = (
            "initial"
            if state == flow.initial
            else "final"
            if state in flow.finals
            else "closes the attempt"
            if state in flow.closed
            else ""
        )
        events = ", ".join(
            f"`{event}` → `{flow.transitions[(state, event)]}`"
            for event in flow.allowed_events(state)
        )
        rows.append(f"| `{state}` | {kind} | {events or '—'} |")
    return "\n".join(
        [
            "# The migration flow",
            "",
            "One migration attempt is one run of this state machine. It is drawn from",
            "`flows/migration.yaml` by `ueoz-migration diagram` (`make diagram`); do not edit",
            "this file by hand: a test fails when it differs from what the command writes.",
            "An event that a state does not list below is refused and logged, never applied.",
            "A state that closes the attempt frees the person's PESEL for a new one, as the",
            "final ones do; it still waits for the hand-off to the domain system.",
            "",
            f"Flow `{flow.name}`, version `{flow.version}`",
            "(the SHA-256 of the flow file; every log row names the version it ran on).",
            "",
            "```mermaid",
            mermaid(flow).rstrip("\n"),
            "```",
            "",
            "| state | kind | events out (event → target) |",
            "|---|---|---|",
            *rows,
            "",
        ]
    )
