"""Tiny inline-SVG plots, generated in Python: no JavaScript, fonts or network needed to view them.

Each function returns one ``<svg>`` element as a string, sized in CSS pixels,
with a ``<title>`` on marks so hovering shows the exact numbers.
"""

from __future__ import annotations

import math
from html import escape

import numpy as np

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
BUDGET = "#d62728"
FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1-2-5 steps)."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(math.ceil((hi - start) / step) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 10 else f"{v:.0f}"


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(label)}" {FONT}>' + "".join(body) + "</svg>"
    )


def _x_axis(body: list[str], lo: float, hi: float, x0: float, x1: float, y: float, unit: str) -> None:
    body.append(f'<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="#888"/>')
    for t in _ticks(lo, hi):
        if t < lo or t > hi:
            continue
        x = x0 + (t - lo) / (hi - lo) * (x1 - x0)
        body.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 4}" stroke="#888"/>')
        body.append(f'<text x="{x:.1f}" y="{y + 15}" text-anchor="middle" fill="#444">{_fmt(t)}</text>')
    body.append(f'<text x="{x1}" y="{y + 28}" text-anchor="end" fill="#444">{escape(unit)}</text>')


def latency_strips(rows: list[tuple[str, list[float], float | None]], *, unit: str = "ms", width: int = 900) -> str:
    """One row per (label, raw samples, budget): a box (p25-p75, median), whiskers (p5-p95) and every sample.

    The budget is a red tick across its row, so "is it under?" is one glance.
    """
    label_w, row_h, top = 260, 34, 10
    height = top + row_h * max(len(rows), 1) + 40
    vals = [v for _, s, b in rows for v in [*s, *([b] if b else [])]]
    lo = min(vals) if vals else 0.0
    hi = max(vals) if vals else 1.0
    pad = (hi - lo) * 0.05 or 1.0
    lo, hi = max(0.0, lo - pad), hi + pad
    x0, x1 = label_w, width - 20

    def sx(v: float) -> float:
        return x0 + (v - lo) / (hi - lo) * (x1 - x0)

    body: list[str] = []
    rng = np.random.default_rng(0)  # fixed jitter: the same data draws the same picture
    for i, (label, samples, budget) in enumerate(rows):
        yc = top + row_h * i + row_h / 2
        color = PALETTE[i % len(PALETTE)]
        body.append(f'<text x="{label_w - 8}" y="{yc + 4:.1f}" text-anchor="end" fill="#222">{escape(label)}</text>')
        if samples:
            a = np.asarray(samples, dtype=float)
            p5, p25, p50, p75, p95 = np.quantile(a, [0.05, 0.25, 0.5, 0.75, 0.95])
            jit = rng.uniform(-row_h * 0.3, row_h * 0.3, size=a.size)
            for v, j in zip(a, jit, strict=True):
                body.append(f'<circle cx="{sx(v):.1f}" cy="{yc + j:.1f}" r="1.6" fill="{color}" fill-opacity="0.35"/>')
            body.append(f'<line x1="{sx(p5):.1f}" y1="{yc}" x2="{sx(p95):.1f}" y2="{yc}" stroke="#333"/>')
            body.append(
                f'<rect x="{sx(p25):.1f}" y="{yc - 8}" width="{max(sx(p75) - sx(p25), 1):.1f}" height="16" '
                f'fill="none" stroke="#333"><title>{escape(label)}: p25 {p25:.3f}, p50 {p50:.3f}, '
                f"p75 {p75:.3f} {unit} (n={a.size})</title></rect>"
            )
            body.append(
                f'<line x1="{sx(p50):.1f}" y1="{yc - 8}" x2="{sx(p50):.1f}" y2="{yc + 8}" '
                'stroke="#000" stroke-width="2"/>'
            )
        if budget:
            bx = sx(budget)
            body.append(
                f'<line x1="{bx:.1f}" y1="{yc - row_h / 2 + 2}" x2="{bx:.1f}" y2="{yc + row_h / 2 - 2}" '
                f'stroke="{BUDGET}" stroke-width="2" stroke-dasharray="4 2">'
                f"<title>budget {budget:g} {unit}</title></line>"
            )
    _x_axis(body, lo, hi, x0, x1, top + row_h * max(len(rows), 1) + 4, unit)
    return _svg(width, height, body, "latency distribution per device and artifact")


def bars(rows: list[tuple[str, float | None, float | None]], *, unit: str = "MB", width: int = 900,
         fmt: str = ".1f") -> str:  # fmt: skip
    """Horizontal bars (label, value, budget); the budget is a red tick on the bar's row."""
    label_w, row_h, top = 260, 24, 10
    height = top + row_h * max(len(rows), 1) + 40
    vals = [v for _, a, b in rows for v in (a, b) if v]
    hi = max(vals) * 1.1 if vals else 1.0
    x0, x1 = label_w, width - 60
    body: list[str] = []
    for i, (label, value, budget) in enumerate(rows):
        y = top + row_h * i
        body.append(f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end" fill="#222">{escape(label)}</text>')
        if value is not None:
            w = value / hi * (x1 - x0)
            body.append(
                f'<rect x="{x0}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" fill="{PALETTE[i % len(PALETTE)]}">'
                f"<title>{escape(label)}: {value:{fmt}} {unit}</title></rect>"
            )
            body.append(f'<text x="{x0 + w + 4:.1f}" y="{y + 16}" fill="#222">{value:{fmt}}</text>')
        if budget:
            bx = x0 + budget / hi * (x1 - x0)
            body.append(
                f'<line x1="{bx:.1f}" y1="{y + 1}" x2="{bx:.1f}" y2="{y + row_h - 1}" '
                f'stroke="{BUDGET}" stroke-width="2"/>'
            )
    _x_axis(body, 0.0, hi, x0, x1, top + row_h * max(len(rows), 1) + 4, unit)
    return _svg(width, height, body, "peak memory per device and artifact")


def scatter(
    points: list[tuple[str, float, float]], *, xlabel: str, ylabel: str, width: int = 600, height: int = 360
) -> str:
    """Labelled points (label, x, y): accuracy vs latency, one point per variant."""
    left, right, top, bottom = 60, 20, 15, 45
    if points:
        xs = [p[1] for p in points]
        ys = [p[2] for p in points]
        xlo, xhi = min(xs), max(xs)
        ylo, yhi = min(ys), max(ys)
    else:
        xlo, xhi, ylo, yhi = 0.0, 1.0, 0.0, 1.0
    xpad, ypad = (xhi - xlo) * 0.1 or max(abs(xhi) * 0.1, 1e-3), (yhi - ylo) * 0.1 or max(abs(yhi) * 0.01, 1e-3)
    xlo, xhi, ylo, yhi = xlo - xpad, xhi + xpad, ylo - ypad, yhi + ypad

    def sx(v: float) -> float:
        return left + (v - xlo) / (xhi - xlo) * (width - left - right)

    def sy(v: float) -> float:
        return height - bottom - (v - ylo) / (yhi - ylo) * (height - top - bottom)

    body: list[str] = []
    _x_axis(body, xlo, xhi, left, width - right, height - bottom, xlabel)
    body.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#888"/>')
    for t in _ticks(ylo, yhi, 4):
        if ylo <= t <= yhi:
            body.append(f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end" fill="#444">{_fmt(t)}</text>')
    body.append(f'<text x="{left}" y="{top - 3}" fill="#444">{escape(ylabel)}</text>')
    # every point is an obstacle too, so no label covers another point
    placed = [(sx(x) - 5, sy(y) - 5, sx(x) + 5, sy(y) + 5) for _, x, y in points]
    for i, (label, x, y) in enumerate(points):
        c = PALETTE[i % len(PALETTE)]
        px, py = sx(x), sy(y)
        body.append(
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="5" fill="{c}"><title>{escape(label)}: '
            f"{x:.3f}, {y:.5f}</title></circle>"
        )
        # labels on the right half grow leftwards so they stay inside the plot
        right_half = px > left + (width - left - right) / 2
        tx, anchor = (px - 7, "end") if right_half else (px + 7, "start")
        box = _free_label_box(placed, tx, py - 8, len(label) * _CHAR_W, right_half, top, height - bottom)
        placed.append(box)
        ty = box[3] - _LABEL_DESCENT
        if abs(ty - (py - 8)) > 0.5:  # moved off its point: a leader line says whose label it is
            body.append(f'<line x1="{px:.1f}" y1="{py:.1f}" x2="{tx:.1f}" y2="{ty - 4:.1f}" stroke="{c}"/>')
        body.append(f'<text x="{tx:.1f}" y="{ty:.1f}" text-anchor="{anchor}" fill="#222">{escape(label)}</text>')
    return _svg(width, height, body, f"{ylabel} vs {xlabel}")


#: 11 px system-ui: ~6.2 px per character is wide enough for the labels mpk writes (ids, device names)
_CHAR_W, _LABEL_H, _LABEL_DESCENT = 6.2, 13.0, 3.0


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    """Boxes are (x0, y0, x1, y1), y growing down."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _free_label_box(
    placed: list[tuple[float, float, float, float]],
    tx: float,
    baseline: float,
    w: float,
    grows_left: bool,
    y_min: float,
    y_max: float,
) -> tuple[float, float, float, float]:
    """The box nearest ``baseline`` (trying above and below in turn) that overlaps no placed label.

    Points with close latency and accuracy (an int8 and an fp32 of one backend, say) otherwise print their
    labels on top of each other.
    """
    x0, x1 = (tx - w, tx) if grows_left else (tx, tx + w)

    def box(b: float) -> tuple[float, float, float, float]:
        return (x0, b - _LABEL_H + _LABEL_DESCENT, x1, b + _LABEL_DESCENT)

    for step in range(60):
        for sign in (-1, 1) if step else (1,):
            b = baseline + sign * step * _LABEL_H
            candidate = box(b)
            inside = y_min <= candidate[1] and candidate[3] <= y_max
            if inside and not any(_overlap(candidate, p) for p in placed):
                return candidate
    return box(baseline)  # a crowd too big to separate: overlap rather than vanish


def trend_lines(series: dict[str, list[float]], *, unit: str = "ms", width: int = 900, height: int = 260) -> str:
    """One line per series of values over successive runs (oldest left)."""
    left, right, top, bottom = 60, 220, 15, 35
    vals = [v for s in series.values() for v in s]
    ylo, yhi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    pad = (yhi - ylo) * 0.1 or max(yhi * 0.05, 1e-3)
    ylo, yhi = max(0.0, ylo - pad), yhi + pad
    n = max((len(s) for s in series.values()), default=1)

    def sx(i: int) -> float:
        return left + (i / max(n - 1, 1)) * (width - left - right)

    def sy(v: float) -> float:
        return height - bottom - (v - ylo) / (yhi - ylo) * (height - top - bottom)

    body = [f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#888"/>']
    body.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#888"/>')
    for t in _ticks(ylo, yhi, 4):
        if ylo <= t <= yhi:
            body.append(f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end" fill="#444">{_fmt(t)}</text>')
    body.append(f'<text x="{left}" y="{height - 10}" fill="#444">runs, oldest to newest ({escape(unit)})</text>')
    for k, (label, s) in enumerate(series.items()):
        c = PALETTE[k % len(PALETTE)]
        pts = " ".join(f"{sx(i + n - len(s)):.1f},{sy(v):.1f}" for i, v in enumerate(s))
        body.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="2"/>')
        for i, v in enumerate(s):
            body.append(
                f'<circle cx="{sx(i + n - len(s)):.1f}" cy="{sy(v):.1f}" r="3" fill="{c}">'
                f"<title>{escape(label)}: {v:.3f} {unit}</title></circle>"
            )
        body.append(f'<text x="{width - right + 8}" y="{top + 14 * k + 10}" fill="{c}">{escape(label)}</text>')
    return _svg(width, height, body, "history trend")


def grouped_bars(groups: list[tuple[str, list[tuple[str, float | None, bool]]]], *, unit: str = "ms",
                 width: int = 900) -> str:  # fmt: skip
    """One group of horizontal bars per label (a module), one bar per series (a runtime or device) in the same
    colour across groups; an estimated value is drawn hatched-light with "(est.)" in its tooltip.

    ``groups``: ``[(group label, [(series, value or None, estimated), ...]), ...]``; a None value draws nothing.
    """
    label_w, bar_h, gap, top = 200, 12, 10, 10
    series = list(dict.fromkeys(s for _, bars in groups for s, _, _ in bars))
    rows_h = sum(len(bars) * bar_h + gap for _, bars in groups)
    legend_h = 16 * len(series) + 8
    height = top + rows_h + 40 + legend_h
    vals = [v for _, bars in groups for _, v, _ in bars if v is not None]
    hi = max(vals) * 1.1 if vals else 1.0
    x0, x1 = label_w, width - 80
    body: list[str] = []
    y = float(top)
    for label, bars in groups:
        body.append(f'<text x="{label_w - 8}" y="{y + len(bars) * bar_h / 2 + 4:.1f}" text-anchor="end" '
                    f'fill="#222">{escape(label)}</text>')  # fmt: skip
        for s, v, est in bars:
            if v is not None:
                c = PALETTE[series.index(s) % len(PALETTE)]
                w = v / hi * (x1 - x0)
                style = f'fill="{c}" fill-opacity="0.45" stroke="{c}" stroke-dasharray="3 2"' if est else f'fill="{c}"'
                tip = f"{label} on {s}: {v:.3f} {unit}" + (" (est.)" if est else "")
                body.append(f'<rect x="{x0}" y="{y:.1f}" width="{max(w, 0.5):.1f}" height="{bar_h - 2}" {style}>'
                            f"<title>{escape(tip)}</title></rect>")  # fmt: skip
                body.append(f'<text x="{x0 + w + 4:.1f}" y="{y + bar_h - 3:.1f}" fill="#222">{v:.2f}'
                            f"{' est.' if est else ''}</text>")  # fmt: skip
            y += bar_h
        y += gap
    _x_axis(body, 0.0, hi, x0, x1, y + 2, unit)
    ly = y + 40
    for i, s in enumerate(series):
        c = PALETTE[i % len(PALETTE)]
        body.append(f'<rect x="{x0}" y="{ly + 16 * i - 9:.1f}" width="10" height="10" fill="{c}"/>')
        body.append(f'<text x="{x0 + 16}" y="{ly + 16 * i:.1f}" fill="#222">{escape(s)}</text>')
    return _svg(width, int(height), body, "time per module, side by side across runtimes and devices")
