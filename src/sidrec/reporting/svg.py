"""Inline SVG charts: the report must open from `file://` with no network, so no chart library.

Each chart is one `<svg class="chart">` string with `<path class="series">` / `<rect class="bar">`
elements (what the browser tests count) and a `<title>` on every mark for hover values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Sequence

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]
WIDTH, HEIGHT = 640, 300
MARGIN = dict(left=64, right=180, top=48, bottom=46)


@dataclass
class Series:
    name: str
    xs: Sequence[float]
    ys: Sequence[float]
    dashed: bool = False
    right_axis: bool = False  # plotted against the right-hand y axis (e.g. validation beside loss)
    markers: bool = True  # a dot (with its value on hover) per point, when there are few


@dataclass
class BarGroup:
    name: str
    values: Sequence[float]
    errors: Sequence[float] = field(default_factory=list)  # ± half-widths (std over seeds); empty = none


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 2.5, 5 x 10^k steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    ticks = [round(math.floor(lo / step) * step, 12)]
    while ticks[-1] < hi - step * 1e-9:  # the last tick is >= hi: every mark lies inside the axes
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.4g}"
    return f"{value:.3g}"


class _Frame:
    """Maps data coordinates to pixels for one plot area."""

    def __init__(self, x_ticks: list[float], y_ticks: list[float]):
        self.x0, self.x1 = x_ticks[0], x_ticks[-1]
        self.y0, self.y1 = y_ticks[0], y_ticks[-1]
        self.left, self.right = MARGIN["left"], WIDTH - MARGIN["right"]
        self.top, self.bottom = MARGIN["top"], HEIGHT - MARGIN["bottom"]

    def x(self, value: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return self.left + (value - self.x0) / span * (self.right - self.left)

    def y(self, value: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return self.bottom - (value - self.y0) / span * (self.bottom - self.top)


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _svg(body: list[str], title: str) -> str:
    return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
            f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}">'
            f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" class="chart-title">{escape(title)}</text>'
            + "".join(body) + "</svg>")


def _axes(frame: _Frame, x_ticks, y_ticks, x_label: str, y_label: str, x_names: Sequence[str] | None = None) -> list[str]:
    out = [f'<line x1="{frame.left}" y1="{frame.bottom}" x2="{frame.right}" y2="{frame.bottom}" class="axis"/>',
           f'<line x1="{frame.left}" y1="{frame.top}" x2="{frame.left}" y2="{frame.bottom}" class="axis"/>']
    for tick in y_ticks:
        y = frame.y(tick)
        out.append(f'<line x1="{frame.left}" y1="{y:.1f}" x2="{frame.right}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{frame.left - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(tick)}</text>')
    if x_names is None:
        for tick in x_ticks:
            x = frame.x(tick)
            out.append(f'<text x="{x:.1f}" y="{frame.bottom + 16}" text-anchor="middle">{_fmt(tick)}</text>')
    out.append(f'<text x="{(frame.left + frame.right) / 2}" y="{HEIGHT - 8}" text-anchor="middle" class="label">'
               f'{escape(x_label)}</text>'
               f'<text transform="translate(14 {(frame.top + frame.bottom) / 2}) rotate(-90)" text-anchor="middle" '
               f'class="label">{escape(y_label)}</text>')
    return out


def _legend(names: Sequence[str], colours: Sequence[str], dashed: Sequence[bool] = (), offset: float = 12) -> list[str]:
    out, x = [], WIDTH - MARGIN["right"] + offset
    for i, (name, colour) in enumerate(zip(names, colours)):
        y = MARGIN["top"] + 6 + 18 * i
        dash = ' stroke-dasharray="5 3"' if i < len(dashed) and dashed[i] else ""
        out.append(f'<line x1="{x}" y1="{y}" x2="{x + 18}" y2="{y}" stroke="{colour}" stroke-width="3"{dash}/>'
                   f'<text x="{x + 24}" y="{y + 4}" class="legend">{escape(name[:26] if offset < 60 else name[:19])}</text>')
    return out


def line_chart(series: Sequence[Series], *, title: str, x_label: str, y_label: str, right_label: str = "",
               top_axis: Sequence[tuple[float, str]] = (), top_label: str = "") -> str:
    """Lines over a shared x axis; optional right y axis and a secondary top x axis (e.g. seconds at each epoch)."""
    series = [s for s in series if _finite(s.ys)]
    if not series:
        return _svg([f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no data</text>'], title)
    xs = [x for s in series for x in _finite(s.xs)]
    x_ticks = nice_ticks(min(xs), max(xs))
    frames = {}
    for side in (False, True):
        ys = [y for s in series if s.right_axis == side for y in _finite(s.ys)]
        if ys:
            frames[side] = (_Frame(x_ticks, nice_ticks(min(ys), max(ys))), nice_ticks(min(ys), max(ys)))
    main_side = False if False in frames else True
    frame, y_ticks = frames[main_side]
    body = _axes(frame, x_ticks, y_ticks, x_label, y_label if main_side is False else right_label)
    if True in frames and False in frames:
        right, ticks = frames[True]
        body.append(f'<line x1="{right.right}" y1="{right.top}" x2="{right.right}" y2="{right.bottom}" class="axis"/>')
        for tick in ticks:
            body.append(f'<text x="{right.right + 6}" y="{right.y(tick) + 4:.1f}">{_fmt(tick)}</text>')
        body.append(f'<text transform="translate({right.right + 46} {(right.top + right.bottom) / 2}) rotate(90)" '
                    f'text-anchor="middle" class="label">{escape(right_label)}</text>')
    if top_axis:
        body.append(f'<line x1="{frame.left}" y1="{frame.top}" x2="{frame.right}" y2="{frame.top}" class="axis"/>')
        for x, label in top_axis:
            body.append(f'<text x="{frame.x(x):.1f}" y="{frame.top - 4}" text-anchor="middle" class="top-tick">'
                        f'{escape(label)}</text>')
        body.append(f'<text x="{frame.right}" y="{frame.top - 18}" text-anchor="end" class="top-tick">{escape(top_label)}</text>')
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(series))]
    for s, colour in zip(series, colours):
        f = frames[s.right_axis][0]
        points = [(f.x(x), f.y(y), x, y) for x, y in zip(s.xs, s.ys) if y is not None and math.isfinite(float(y))]
        path = " ".join(f"{'M' if i == 0 else 'L'}{px:.1f},{py:.1f}" for i, (px, py, _, _) in enumerate(points))
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        body.append(f'<path class="series" d="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}>'
                    f'<title>{escape(s.name)}</title></path>')
        if s.markers and len(points) <= 60:
            body.extend(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{colour}"><title>{escape(s.name)}: '
                        f'{_fmt(x)} → {_fmt(y)}</title></circle>' for px, py, x, y in points)
    offset = 60 if True in frames and False in frames else 12  # clear of the right axis' tick labels
    body.extend(_legend([s.name for s in series], colours, [s.dashed for s in series], offset))
    return _svg(body, title)


def bar_chart(categories: Sequence[str], groups: Sequence[BarGroup], *, title: str, y_label: str) -> str:
    """Grouped bars, one group per category, one colour per `BarGroup`, optional ± error whiskers."""
    tops = [v + (g.errors[i] if g.errors else 0) for g in groups for i, v in enumerate(g.values)
            if v is not None and math.isfinite(v)]
    if not categories or not tops:
        return _svg([f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no data</text>'], title)
    y_ticks = nice_ticks(0.0, max(tops))
    frame = _Frame([0.0, float(len(categories))], y_ticks)
    body = _axes(frame, [], y_ticks, "", y_label, x_names=categories)
    slot = (frame.right - frame.left) / len(categories)
    width = slot * 0.8 / max(1, len(groups))
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(groups))]
    for c, name in enumerate(categories):
        centre = frame.left + slot * (c + 0.5)
        body.append(f'<text x="{centre:.1f}" y="{frame.bottom + 16}" text-anchor="middle">{escape(name[:18])}</text>')
        for g, (group, colour) in enumerate(zip(groups, colours)):
            value = group.values[c]
            if value is None or not math.isfinite(value):
                continue
            x = centre - slot * 0.4 + g * width
            y = frame.y(value)
            error = group.errors[c] if group.errors else 0.0
            label = f"{group.name} · {name}: {_fmt(value)}" + (f" ± {_fmt(error)}" if error else "")
            body.append(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{width * 0.92:.1f}" '
                        f'height="{frame.bottom - y:.1f}" fill="{colour}"><title>{escape(label)}</title></rect>')
            if error:
                mid = x + width * 0.46
                body.append(f'<line class="whisker" x1="{mid:.1f}" y1="{frame.y(value + error):.1f}" x2="{mid:.1f}" '
                            f'y2="{frame.y(max(0.0, value - error)):.1f}" stroke="#222"/>')
    if len(groups) > 1 or groups[0].name:
        body.extend(_legend([g.name for g in groups], colours))
    return _svg(body, title)


def histogram_series(values: Sequence[float], name: str, bins: int = 60, lo: float | None = None,
                     hi: float | None = None, dashed: bool = False) -> Series:
    """A density outline (bin centres, fraction per bin) for overlaying two distributions on one line chart."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    lo = float(values.min()) if lo is None else lo
    hi = float(values.max()) if hi is None else hi
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi if hi > lo else lo + 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    return Series(name, centres.tolist(), (counts / max(1, counts.sum())).tolist(), dashed=dashed, markers=False)
