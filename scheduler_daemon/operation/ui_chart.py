"""A job's durations and start drifts as an inline SVG chart, drawn on the server (no script).

Two panels over the same fires, oldest on the left: duration above, drift below, each on its own
scale (durations are seconds to hours, drifts milliseconds). Every point has a <title>: the same
words as the strip's cell.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from scheduler_daemon.operation.ui_view import duration
from scheduler_daemon.storage.store import Row

WIDTH, PANEL, GAP, LEFT, TOP = 960, 110, 34, 64, 18


def chart(rows: Sequence[Row]) -> Markup:
    """``rows``: a job's attempts with their labels, oldest first (ui_queries.recent)."""
    done = [r for r in rows if r["duration_ms"] is not None or r["drift_ms"] is not None]
    height = TOP + 2 * PANEL + GAP + 20
    parts = [
        f'<svg class="chart" id="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="Duration and start drift of the last {len(done)} attempts">'
    ]
    if not done:
        parts.append(f'<text x="{LEFT}" y="{TOP + 20}">No finished attempts yet.</text></svg>')
        return Markup("".join(parts))
    step = (WIDTH - LEFT - 10) / max(len(done) - 1, 1)
    for index, (field, name) in enumerate((("duration_ms", "duration"), ("drift_ms", "drift"))):
        top = TOP + index * (PANEL + GAP)
        parts.append(_panel(done, field, name, top, step))
    parts.append("</svg>")
    return Markup("".join(parts))


def _panel(rows: Sequence[Row], field: str, name: str, top: int, step: float) -> str:
    values = [r[field] for r in rows]
    highest = max((v for v in values if v is not None), default=0.0) or 1.0
    bottom = top + PANEL
    out = [
        f'<text x="4" y="{top - 4}">{name}</text>',
        f'<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{WIDTH - 10}" y2="{bottom}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{top}" x2="{WIDTH - 10}" y2="{top}"/>',
        f'<text x="4" y="{top + 10}">{escape(duration(highest))}</text>',
        f'<text x="4" y="{bottom}">0</text>',
    ]
    points: list[str] = []
    dots: list[str] = []
    for i, (row, value) in enumerate(zip(rows, values, strict=True)):
        if value is None:
            continue
        x = LEFT + i * step
        y = bottom - (max(value, 0.0) / highest) * PANEL
        points.append(f"{x:.1f},{y:.1f}")
        dots.append(
            f'<circle class="{name}" cx="{x:.1f}" cy="{y:.1f}" r="2.5" '
            f'data-status="{escape(row["status"])}"><title>{escape(row["label"])}</title></circle>'
        )
    if len(points) > 1:
        out.append(f'<polyline class="{name}" points="{" ".join(points)}"/>')
    out += dots
    return "".join(out)
