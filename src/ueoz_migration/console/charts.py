"""The progress page's charts, drawn on the server as SVG with pygal.

Why pygal: it is kept (releases into 2026), pure Python on lxml (already a dependency), and
draws SVG itself, so nothing runs in the browser and nothing else is installed; Altair would
need Vega-Lite and a JavaScript or headless renderer on the server to make the same SVG, and
matplotlib a much larger install for plain bars.

Each chart goes into the page as an image (``data:image/svg+xml``): pygal puts a ``<style>``
and a ``<script>`` inside every SVG it draws, which the page's Content-Security-Policy would
refuse inline, while an image's own styles apply inside it and an image never runs scripts
(the script, pygal's tooltips' configuration, is taken out all the same). Every chart comes
with its data as a table on the page, for screen readers and for reading the exact numbers.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Sequence

import pygal
from lxml import etree
from pygal.style import Style

# pygal puts a finder for its map plugins (unused here) on sys.meta_path that has only the
# find_module Python deprecated: after it, every import that fails anywhere in the process
# (an optional dependency tried) raises ImportWarning, which Python 3.12 no longer falls back
# from. Take it out again.
sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, pygal.PluginImportFixer)]

# Dark enough on white for WCAG's 3:1 of graphics; the two series also differ in lightness.
STYLE = Style(
    background="#ffffff",
    plot_background="#ffffff",
    foreground="#1a1a1a",
    foreground_strong="#1a1a1a",
    foreground_subtle="#555555",
    colors=("#0b5cad", "#b35a00", "#2e7d32", "#6a1b9a"),
    font_family="Arial, Helvetica, sans-serif",
    opacity="1",
    opacity_hover="1",
    transition="0ms",
)
CONFIG = {
    "style": STYLE,
    "js": [],  # no tooltips from elsewhere: the table beside the chart has the numbers
    "disable_xml_declaration": True,
    "width": 800,
    "height": 360,
    "show_legend": True,
    "legend_at_bottom": True,
    "print_values": False,
    "x_label_rotation": 0,
    "truncate_label": -1,
}
SVG = "{http://www.w3.org/2000/svg}"


def bars(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[int | float | None]]],
    *,
    horizontal: bool = False,
    every: int = 1,
) -> str:
    """A bar chart of ``series`` (name, values) over ``labels``, as a ``data:`` URI.

    ``every``: label only one bar in so many (a month of days would not fit otherwise).
    """
    kind = pygal.HorizontalBar if horizontal else pygal.Bar
    chart = kind(title=title, **CONFIG)
    chart.x_labels = list(labels)
    if every > 1:
        chart.x_labels_major = list(labels)[::every]
        chart.show_minor_x_labels = False
    for name, values in series:
        chart.add(name, list(values))
    # Counts: whole numbers on the value axis, about ten steps (pygal would show 0.1 steps
    # for a handful).
    top = max((value for _, values in series for value in values if value), default=0)
    step = max(1, -(-int(top) // 10))
    chart.y_labels = list(range(0, int(top) + step + 1, step))
    return _data_uri(chart)


def _data_uri(chart: pygal.graph.graph.Graph) -> str:
    tree = chart.render_tree()
    for script in list(tree.iter("script", f"{SVG}script")):
        script.getparent().remove(script)
    svg = etree.tostring(tree, encoding="utf-8")
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")
