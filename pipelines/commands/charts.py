"""Hand-written inline SVG charts for the run report: horizontal bars, histograms with thresholds, loss curves.

Plain SVG strings, so the report is one self-contained file that opens offline, prints, and stays small. Series are
told apart by lightness and by pattern (solid, hatched, cross-hatched), not by hue alone, so they survive greyscale
printing; every bar carries its number with its unit.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

SVG_NS = "http://www.w3.org/2000/svg"  # so that a chart saved on its own is a valid SVG file too
# One definition of each fill, referenced by every chart of the page (the report puts PATTERNS once at its top).
PATTERNS = (
    '<svg class="defs" width="0" height="0" aria-hidden="true"><defs>'
    '<pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
    '<rect width="6" height="6" fill="#f7c98b"/><line x1="0" y1="0" x2="0" y2="6" stroke="#7a4306" '
    'stroke-width="2.2"/></pattern>'
    '<pattern id="cross" width="6" height="6" patternUnits="userSpaceOnUse">'
    '<rect width="6" height="6" fill="#c9c0e0"/><path d="M0,0 L6,6 M6,0 L0,6" stroke="#3d2f6b" stroke-width="1"/>'
    "</pattern></defs></svg>"
)
CSS = """
svg.chart { font: 11px system-ui, sans-serif; overflow: visible; }
svg.chart text { fill: #222; }
svg.chart .axis { stroke: #555; stroke-width: 1; }
svg.chart .grid { stroke: #ddd; stroke-width: 1; }
.s-kept { fill: #1f4a75; } .s-removed { fill: url(#hatch); stroke: #7a4306; stroke-width: .5; }
.s-quarantined { fill: url(#cross); stroke: #3d2f6b; stroke-width: .5; } .s-other { fill: #8a8a8a; }
.s-split1 { fill: #1f4a75; } .s-split2 { fill: url(#hatch); stroke: #7a4306; stroke-width: .5; }
svg.chart .threshold, svg.chart .l-threshold { stroke: #000; stroke-width: 1.6; stroke-dasharray: 5 3; }
svg.chart .l-train { stroke: #1f4a75; stroke-width: 1.4; fill: none; }
svg.chart .l-val { stroke: #b3401a; stroke-width: 2; fill: none; stroke-dasharray: 6 2; }
svg.chart .p-val { fill: #fff; stroke: #b3401a; stroke-width: 1.6; }
svg.chart .l-base { stroke: #777; stroke-width: 1.4; stroke-dasharray: 2 3; }
span.swatch svg { vertical-align: -2px; margin: 0 4px 0 10px; }
"""


def fmt_bytes(n: float) -> str:
    """1,234 → '1.23 KB' (decimal units, as `task_size` reads them)."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} bytes" if unit == "bytes" else f"{n:,.3g} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def fmt_num(x: float) -> str:
    """A tick or a signal value: integers with separators, fractions with 3 significant digits."""
    if x == int(x) and abs(x) < 1e15:
        return f"{int(x):,}"
    if abs(x) >= 1e4:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if step * m >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _text(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{html.escape(text)}</text>'


def _svg(width: float, height: float, body: list[str], label: str) -> str:
    return (f'<svg xmlns="{SVG_NS}" class="chart" viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" '
            f'height="{height:.0f}" '
            f'role="img" aria-label="{html.escape(label)}">{"".join(body)}</svg>')


@dataclass
class Bar:
    label: str
    segments: list[tuple[float, str]]  # (value, style: kept | removed | quarantined | other | split1 | split2)
    note: str  # the numbers, written after the bar


def bars(rows: Sequence[Bar], label: str, width: int = 760) -> str:
    """Horizontal stacked bars, one row each, scaled to the largest total."""
    label_w = min(220, 12 + 6.4 * max((len(r.label) for r in rows), default=4))
    note_w = min(300, 12 + 6.1 * max((len(r.note) for r in rows), default=4))
    plot_w = max(120.0, width - label_w - note_w)
    top = max((sum(v for v, _ in r.segments) for r in rows), default=0) or 1
    body, row_h = [], 20
    for i, row in enumerate(rows):
        y = 4 + i * row_h
        body.append(_text(label_w - 6, y + 13, row.label, "end"))
        x = label_w
        for value, style in row.segments:
            w = plot_w * value / top
            if w > 0:
                body.append(f'<rect class="s-{style}" x="{x:.1f}" y="{y + 2}" width="{max(w, 0.8):.1f}" '
                            f'height="{row_h - 5}"/>')
            x += w
        body.append(_text(x + 5, y + 13, row.note))
    body.append(f'<line class="axis" x1="{label_w}" y1="2" x2="{label_w}" y2="{6 + len(rows) * row_h}"/>')
    return _svg(width, 8 + len(rows) * row_h, body, label)


def histogram(edges: Sequence[float], series: Sequence[tuple[str, Sequence[int]]], x_label: str,
              thresholds: Sequence[tuple[float, str]] = (), width: int = 340, height: int = 190,
              clipped: tuple[bool, bool] = (False, False)) -> str:
    """Stacked counts per bin (series drawn bottom to top) and dashed threshold lines; `clipped` says the first or
    last bin also holds the values beyond it (written ≤ / ≥ under the axis)."""
    left, right, top, bottom = 44, 12, 22, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    lo, hi = edges[0], edges[-1]
    span = (hi - lo) or 1.0
    totals = [sum(counts[i] for _, counts in series) for i in range(len(edges) - 1)]
    peak = max(totals, default=0) or 1
    y_ticks = nice_ticks(0, peak, 4)
    y_max = max(peak, y_ticks[-1])

    def sx(v: float) -> float:
        return left + plot_w * (v - lo) / span

    def sy(v: float) -> float:
        return top + plot_h * (1 - v / y_max)

    body = []
    for t in y_ticks:
        body.append(f'<line class="grid" x1="{left}" y1="{sy(t):.1f}" x2="{left + plot_w}" y2="{sy(t):.1f}"/>')
        body.append(_text(left - 4, sy(t) + 4, fmt_num(t), "end"))
    for i in range(len(edges) - 1):
        x0, x1 = sx(edges[i]), sx(edges[i + 1])
        base = 0
        for style, counts in series:
            if counts[i]:
                y0, y1 = sy(base), sy(base + counts[i])
                body.append(f'<rect class="s-{style}" x="{x0 + 0.5:.1f}" y="{y1:.1f}" '
                            f'width="{max(x1 - x0 - 1, 0.8):.1f}" height="{max(y0 - y1, 0.8):.1f}"/>')
                base += counts[i]
    body.append(f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}"/>')
    for t in nice_ticks(lo, hi, 4):
        body.append(_text(sx(t), top + plot_h + 13, fmt_num(t), "middle"))
    marks = [("≤", lo, "start"), ("≥", hi, "end")]
    for (sign, value, anchor), on in zip(marks, clipped):
        if on:
            body.append(_text(sx(value), top + plot_h + 25, f"{sign}{fmt_num(value)}", anchor))
    body.append(_text(left + plot_w / 2, height - 2, x_label, "middle"))
    for n, (value, text) in enumerate(thresholds):
        inside = lo <= value <= hi
        x = sx(min(max(value, lo), hi))
        body.append(f'<line class="threshold" x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{top + plot_h}"/>')
        caption = text if inside else f"{text} (off the axis)"
        anchor = "end" if x > left + plot_w / 2 else "start"
        body.append(_text(x + (-3 if anchor == "end" else 3), top - 8 + 11 * n, caption, anchor,
                          ' font-weight="bold"'))
    return _svg(width, height, body, x_label)


def lines(series: Sequence[tuple[str, Sequence[tuple[float, float]], str]], x_label: str, y_label: str,
          hlines: Sequence[tuple[float, str]] = (), width: int = 560, height: int = 260) -> str:
    """Line series (label, points, style: train | val) and dashed horizontal reference lines."""
    left, right, top, bottom = 52, 16, 14, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [x for _, points, _ in series for x, _ in points] or [0.0]
    ys = [y for _, points, _ in series for _, y in points] + [v for v, _ in hlines] or [0.0]
    x_lo, x_hi = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    pad = (max(ys) - min(ys)) * 0.05 or 0.5
    y_lo, y_hi = min(ys) - pad, max(ys) + pad

    def sx(v: float) -> float:
        return left + plot_w * (v - x_lo) / (x_hi - x_lo)

    def sy(v: float) -> float:
        return top + plot_h * (1 - (v - y_lo) / (y_hi - y_lo))

    body = []
    for t in nice_ticks(y_lo, y_hi, 5):
        body.append(f'<line class="grid" x1="{left}" y1="{sy(t):.1f}" x2="{left + plot_w}" y2="{sy(t):.1f}"/>')
        body.append(_text(left - 4, sy(t) + 4, fmt_num(t), "end"))
    for t in nice_ticks(x_lo, x_hi, 6):
        body.append(_text(sx(t), top + plot_h + 14, fmt_num(t), "middle"))
    body.append(f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}"/>')
    body.append(f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}"/>')
    for value, text in hlines:
        body.append(f'<line class="l-base" x1="{left}" y1="{sy(value):.1f}" x2="{left + plot_w}" '
                    f'y2="{sy(value):.1f}"/>')
        body.append(_text(left + 4, sy(value) - 4, text))  # at the left, where a loss curve is still high
    for _label, points, style in series:
        path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(points))
        body.append(f'<path class="l-{style}" d="{path}"/>')
        if style == "val":
            body += [f'<circle class="p-val" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3"/>' for x, y in points]
    body.append(_text(left + plot_w / 2, height - 4, x_label, "middle"))
    body.append(_text(12, top + plot_h / 2, y_label, "middle", f' transform="rotate(-90 12 {top + plot_h / 2:.0f})"'))
    return _svg(width, height, body, y_label)


def legend(items: Sequence[tuple[str, str]]) -> str:
    """HTML swatches: (style, label); a style starting with 'l-' is a line style."""
    out = []
    for style, text in items:
        mark = (f'<line class="{style}" x1="0" y1="6" x2="22" y2="6"/>' if style.startswith("l-")
                else f'<rect class="s-{style}" x="1" y="1" width="20" height="11"/>')
        out.append(f'<span class="swatch"><svg class="chart" width="22" height="12">{mark}</svg>'
                   f"{html.escape(text)}</span>")
    return f'<p class="legend">{"".join(out)}</p>'
