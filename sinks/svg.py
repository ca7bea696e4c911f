"""Inline SVG charts for the HTML report: pure functions, numbers in, SVG text out.

No JavaScript and no external resources: every chart is a self-contained ``<svg>`` element
(no ``xmlns`` needed inside HTML5) with ``<title>`` tooltips on markers, readable offline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape

#: line colours of ordinary series (colour-blind friendly, away from the marker colours)
PALETTE = ("#2563eb", "#7c3aed", "#0891b2", "#db2777", "#4b5563", "#65a30d")
#: marker kind -> (colour, legend text)
MARKERS = {
    "drift": ("#ea580c", "drift event"),
    "warning": ("#f59e0b", "detector warning"),
    "firing": ("#dc2626", "alert firing"),
    "resolved": ("#16a34a", "alert resolved"),
}
TEXT, GRID, AXIS = "#374151", "#e5e7eb", "#9ca3af"
FONT = 'font-family="system-ui,-apple-system,Segoe UI,Roboto,sans-serif"'
_TIME_STEPS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400,
               7 * 86400, 14 * 86400, 30 * 86400)  # fmt: skip


@dataclass
class Series:
    """One line: ``points`` are ``(epoch_seconds, value)`` pairs, any order."""

    name: str
    points: list[tuple[float, float]]
    color: str = ""
    dash: str = ""


@dataclass
class Marker:
    """A vertical marker at ``t``: kind is a key of :data:`MARKERS`; ``label`` is the tooltip."""

    t: float
    kind: str
    label: str = ""


@dataclass
class _Frame:
    width: int
    height: int
    left: int = 58
    right: int = 18
    top: int = 40
    bottom: int = 40
    parts: list[str] = field(default_factory=list)

    @property
    def x0(self) -> float:
        return float(self.left)

    @property
    def x1(self) -> float:
        return float(self.width - self.right)

    @property
    def y0(self) -> float:
        return float(self.height - self.bottom)

    @property
    def y1(self) -> float:
        return float(self.top)


def fmt_num(v: float) -> str:
    """Short tick/label text: ``0.85``, ``1.2k``, ``3M``."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round ticks (1, 2, 2.5, 5 x 10^k) covering ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks, t = [], first
    while t < hi + step * 0.999:
        ticks.append(round(t, 12))
        t += step
    return ticks


def time_ticks(t0: float, t1: float, n: int = 7) -> tuple[list[float], str]:
    """Round UTC times between ``t0`` and ``t1`` and the strftime format to print them."""
    span = max(t1 - t0, 1.0)
    step = next((s for s in _TIME_STEPS if span / s <= n), _TIME_STEPS[-1])
    first = math.ceil(t0 / step) * step
    ticks = [float(t) for t in range(int(first), int(t1) + 1, step)]
    fmt = (
        "%H:%M" if span <= 86400 and step < 86400 else ("%m-%d" if step >= 86400 else "%m-%d %H:%M")
    )
    return ticks, fmt


def fmt_time(t: float, fmt: str = "%Y-%m-%d %H:%M:%S UTC") -> str:
    return datetime.fromtimestamp(t, UTC).strftime(fmt)


def _text(
    x: float, y: float, s: str, anchor: str = "middle", size: int = 11, extra: str = ""
) -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
            f'fill="{TEXT}"{extra}>{escape(s)}</text>')  # fmt: skip


def _legend(f: _Frame, items: list[tuple[str, str, str]]) -> None:
    """Legend row above the plot: ``(colour, text, shape)``, shape ``line``/``box``/``mark``."""
    x, y = f.x0, 14.0
    for color, label, shape in items:
        if shape == "box":
            f.parts.append(f'<rect x="{x:.1f}" y="{y - 8:.1f}" width="14" height="10" fill="{color}" '
                           f'fill-opacity="0.45" stroke="{color}"/>')  # fmt: skip
        elif shape == "mark":
            f.parts.append(f'<line x1="{x + 7:.1f}" y1="{y - 9:.1f}" x2="{x + 7:.1f}" y2="{y + 3:.1f}" '
                           f'stroke="{color}" stroke-width="2" stroke-dasharray="3 2"/>')  # fmt: skip
        else:
            f.parts.append(f'<line x1="{x:.1f}" y1="{y - 3:.1f}" x2="{x + 16:.1f}" y2="{y - 3:.1f}" '
                           f'stroke="{color}" stroke-width="2.5"/>')  # fmt: skip
        f.parts.append(_text(x + 20, y, label, "start"))
        x += 32 + 6.3 * len(label)
        if x > f.x1 - 60:
            x, y = f.x0, y + 15


def _svg(f: _Frame, title: str) -> str:
    head = (f'<svg class="chart" viewBox="0 0 {f.width} {f.height}" width="{f.width}" '
            f'height="{f.height}" role="img" aria-label="{escape(title)}" {FONT}>')  # fmt: skip
    return head + f"<title>{escape(title)}</title>" + "".join(f.parts) + "</svg>"


def _empty(width: int, height: int, title: str, msg: str) -> str:
    f = _Frame(width, height)
    f.parts.append(f'<rect x="{f.x0}" y="{f.y1}" width="{f.x1 - f.x0}" height="{f.y0 - f.y1}" '
                   f'fill="#f9fafb" stroke="{GRID}"/>')  # fmt: skip
    f.parts.append(_text((f.x0 + f.x1) / 2, (f.y0 + f.y1) / 2, msg, size=13))
    return _svg(f, title)


def _y_axis(f: _Frame, ticks: list[float], sy: object, y_label: str, pct: bool = False) -> None:
    for v in ticks:
        y = sy(v)  # type: ignore[operator]
        f.parts.append(f'<line x1="{f.x0}" y1="{y:.1f}" x2="{f.x1}" y2="{y:.1f}" stroke="{GRID}"/>')
        f.parts.append(_text(f.x0 - 6, y + 4, f"{v * 100:.0f}%" if pct else fmt_num(v), "end"))
    ym = (f.y0 + f.y1) / 2
    f.parts.append(_text(14, ym, y_label, extra=f' transform="rotate(-90 14 {ym:.1f})"'))


def _frame_lines(f: _Frame) -> None:
    f.parts.append(f'<line x1="{f.x0}" y1="{f.y0}" x2="{f.x1}" y2="{f.y0}" stroke="{AXIS}"/>')
    f.parts.append(f'<line x1="{f.x0}" y1="{f.y1}" x2="{f.x0}" y2="{f.y0}" stroke="{AXIS}"/>')


def svg_line_chart(series: list[Series], *, title: str, y_label: str, t_range: tuple[float, float],
                   markers: list[Marker] | None = None, y_min: float | None = None,
                   y_max: float | None = None, width: int = 660, height: int = 250) -> str:  # fmt: skip
    """A time-series chart: lines, round UTC time axis, legend, vertical event markers.

    Gaps longer than three typical steps break the line. ``y_min``/``y_max`` pin the axis
    (e.g. 0..1 for accuracy); otherwise it fits the data with round ticks.
    """
    markers = markers or []
    series = [s for s in series if s.points]
    if not series:
        return _empty(width, height, title, f"no {y_label} data in this range")
    t0, t1 = t_range
    if t1 <= t0:
        t1 = t0 + 3600.0
    values = [v for s in series for _, v in s.points]
    lo = min(values) if y_min is None else y_min
    hi = max(values) if y_max is None else y_max
    if y_min is None and lo > 0 and lo < 0.35 * hi:
        lo = 0.0  # counts and latencies read best from zero
    ticks = nice_ticks(lo, hi)
    lo, hi = min(ticks[0], lo), max(ticks[-1], hi)
    f = _Frame(width, height)

    def sx(t: float) -> float:
        return f.x0 + (t - t0) / (t1 - t0) * (f.x1 - f.x0)

    def sy(v: float) -> float:
        return f.y0 - (v - lo) / ((hi - lo) or 1.0) * (f.y0 - f.y1)

    _y_axis(f, ticks, sy, y_label)
    tt, tfmt = time_ticks(t0, t1)
    for t in tt:
        x = sx(t)
        f.parts.append(
            f'<line x1="{x:.1f}" y1="{f.y0}" x2="{x:.1f}" y2="{f.y0 + 4}" stroke="{AXIS}"/>'
        )
        f.parts.append(_text(x, f.y0 + 17, fmt_time(t, tfmt)))
    f.parts.append(_text(f.x1, f.height - 4, "time (UTC)", "end", 10))
    _frame_lines(f)
    legend: list[tuple[str, str, str]] = []
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        legend.append((color, s.name, "line"))
        pts = sorted(s.points)
        steps = sorted(b[0] - a[0] for a, b in zip(pts, pts[1:], strict=False))
        gap = 3 * steps[len(steps) // 2] if steps else math.inf
        d, prev = [], None
        for t, v in pts:
            cmd = "M" if prev is None or t - prev > gap else "L"
            d.append(f"{cmd}{sx(t):.1f},{sy(v):.1f}")
            prev = t
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        f.parts.append(f'<path class="series" d="{" ".join(d)}" fill="none" stroke="{color}" '
                       f'stroke-width="2" stroke-linejoin="round"{dash}><title>{escape(s.name)}</title></path>')  # fmt: skip
        if len(pts) <= 60:
            f.parts.extend(f'<circle cx="{sx(t):.1f}" cy="{sy(v):.1f}" r="2.2" fill="{color}"/>'
                           for t, v in pts)  # fmt: skip
    seen = _markers(f, markers, sx, t0, t1)
    legend.extend((MARKERS[k][0], MARKERS[k][1], "mark") for k in MARKERS if k in seen)
    _legend(f, legend)
    return _svg(f, title)


def _markers(f: _Frame, markers: list[Marker], sx: object, t0: float, t1: float) -> set[str]:
    """Vertical dashed lines with a symbol on the time axis; returns the kinds drawn."""
    seen: set[str] = set()
    for m in sorted(markers, key=lambda m: m.t)[:300]:
        if not (t0 <= m.t <= t1) or m.kind not in MARKERS:
            continue
        seen.add(m.kind)
        color = MARKERS[m.kind][0]
        x = sx(m.t)  # type: ignore[operator]
        y = f.y0
        tip = f"<title>{escape(m.label or MARKERS[m.kind][1])}</title>"
        width = "1.2" if m.kind == "warning" else "1.6"
        f.parts.append(f'<g class="marker marker-{m.kind}">{tip}<line x1="{x:.1f}" y1="{f.y1}" '
                       f'x2="{x:.1f}" y2="{y:.1f}" stroke="{color}" stroke-width="{width}" '
                       f'stroke-dasharray="4 3" opacity="0.85"/>')  # fmt: skip
        if m.kind in ("drift", "warning"):
            shape = f'<path d="M{x:.1f},{y - 10:.1f} L{x + 5:.1f},{y - 5:.1f} L{x:.1f},{y:.1f} L{x - 5:.1f},{y - 5:.1f} Z"'
        elif m.kind == "firing":
            shape = f'<path d="M{x - 5:.1f},{f.y1:.1f} L{x + 5:.1f},{f.y1:.1f} L{x:.1f},{f.y1 + 8:.1f} Z"'
        else:
            shape = f'<circle cx="{x:.1f}" cy="{f.y1 + 4:.1f}" r="4"'
        f.parts.append(f'{shape} fill="{color}" stroke="white" stroke-width="0.8"/></g>')
    return seen


def svg_histogram(edges: list[float], before: list[int], after: list[int], *, title: str,
                  x_label: str, labels: tuple[str, str] = ("before", "after"),
                  width: int = 660, height: int = 250) -> str:  # fmt: skip
    """Two overlaid histograms on shared bins (``len(edges) == len(before) + 1``), as shares.

    Each side is normalised to its own total so that distributions of different sizes compare.
    """
    nb, na = sum(before), sum(after)
    if len(edges) < 2 or nb + na == 0:
        return _empty(width, height, title, "no scored outcomes in this range")
    share_b = [c / nb if nb else 0.0 for c in before]
    share_a = [c / na if na else 0.0 for c in after]
    ticks = nice_ticks(0.0, max(share_b + share_a) or 1.0, 4)
    lo, hi = edges[0], edges[-1]
    f = _Frame(width, height)

    def sx(v: float) -> float:
        return f.x0 + (v - lo) / ((hi - lo) or 1.0) * (f.x1 - f.x0)

    def sy(v: float) -> float:
        return f.y0 - v / (ticks[-1] or 1.0) * (f.y0 - f.y1)

    _y_axis(f, ticks, sy, "share of predictions", pct=True)
    for v in nice_ticks(lo, hi, 6):
        if lo - 1e-9 <= v <= hi + 1e-9:
            x = sx(v)
            f.parts.append(
                f'<line x1="{x:.1f}" y1="{f.y0}" x2="{x:.1f}" y2="{f.y0 + 4}" stroke="{AXIS}"/>'
            )
            f.parts.append(_text(x, f.y0 + 17, fmt_num(v)))
    f.parts.append(_text(f.x1, f.height - 4, x_label, "end", 10))
    colors = (PALETTE[0], MARKERS["drift"][0])
    for side, shares, n, color in (
        ("before", share_b, nb, colors[0]),
        ("after", share_a, na, colors[1]),
    ):
        if not n:
            continue
        for i, s in enumerate(shares):
            if s <= 0:
                continue
            x, w = sx(edges[i]), sx(edges[i + 1]) - sx(edges[i])
            y = sy(s)
            f.parts.append(f'<rect class="bar-{side}" x="{x + 0.5:.1f}" y="{y:.1f}" width="{max(w - 1, 0.5):.1f}" '
                           f'height="{f.y0 - y:.1f}" fill="{color}" fill-opacity="0.42" stroke="{color}" '
                           f'stroke-width="1"><title>{side}: {edges[i]:.4g} to {edges[i + 1]:.4g}: '
                           f'{s * 100:.1f}%</title></rect>')  # fmt: skip
    _frame_lines(f)
    _legend(f, [(colors[0], f"{labels[0]} (n={nb:,})", "box"),
                (colors[1], f"{labels[1]} (n={na:,})", "box")])  # fmt: skip
    return _svg(f, title)


def svg_reliability(bins: list[tuple[float, float, float, int]], *, title: str,
                    width: int = 660, height: int = 320) -> str:  # fmt: skip
    """A reliability diagram: per score bin ``(lo, expected, observed, n)`` (``expected`` = mean
    score, ``observed`` = share of positives, ``n`` events), the observed share against the mean
    score, the diagonal of a perfectly calibrated model, and grey bars of each bin's share of events.
    """
    bins = [b for b in bins if b[3] > 0]
    if not bins:
        return _empty(width, height, title, "no scored outcomes in this range")
    total = sum(n for *_, n in bins)
    f = _Frame(width, height)
    side = min(f.x1 - f.x0, f.y0 - f.y1)  # a square plot: the diagonal at 45 degrees
    f.right = int(width - f.left - side)

    def sx(v: float) -> float:
        return f.x0 + v * (f.x1 - f.x0)

    def sy(v: float) -> float:
        return f.y0 - v * (f.y0 - f.y1)

    ticks = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    _y_axis(f, ticks, sy, "observed share positive")
    for v in ticks:
        x = sx(v)
        f.parts.append(f'<line x1="{x:.1f}" y1="{f.y0}" x2="{x:.1f}" y2="{f.y0 + 4}" stroke="{AXIS}"/>')
        f.parts.append(_text(x, f.y0 + 17, fmt_num(v)))
    f.parts.append(_text(f.x1, f.height - 4, "mean score (expected)", "end", 10))
    for lo, _, _, n in bins:  # where the events are: bars up to a quarter of the height
        share = n / total
        y = sy(0.25 * share / max(s / total for *_, s in bins))
        f.parts.append(f'<rect class="bin-share" x="{sx(lo) + 0.5:.1f}" y="{y:.1f}" width="{sx(0.1) - sx(0) - 1:.1f}" '
                       f'height="{f.y0 - y:.1f}" fill="{AXIS}" fill-opacity="0.3">'
                       f"<title>{lo:.1f} to {lo + 0.1:.1f}: {share * 100:.1f}% of scored events</title></rect>")  # fmt: skip
    f.parts.append(f'<line x1="{sx(0):.1f}" y1="{sy(0):.1f}" x2="{sx(1):.1f}" y2="{sy(1):.1f}" stroke="{AXIS}" '
                   'stroke-width="1.5" stroke-dasharray="5 4"/>')  # fmt: skip
    color = PALETTE[0]
    pts = sorted(bins)
    d = " ".join(f"{'M' if i == 0 else 'L'}{sx(e):.1f},{sy(o):.1f}" for i, (_, e, o, _) in enumerate(pts))
    f.parts.append(f'<path class="reliability" d="{d}" fill="none" stroke="{color}" stroke-width="2"/>')
    for lo, e, o, n in pts:
        r = 2.5 + 5.0 * math.sqrt(n / total)
        f.parts.append(f'<circle class="bin" cx="{sx(e):.1f}" cy="{sy(o):.1f}" r="{r:.1f}" fill="{color}" '
                       f'fill-opacity="0.8"><title>scores {lo:.1f} to {lo + 0.1:.1f}: expected {e:.3f}, '
                       f"observed {o:.3f}, n={n:,}</title></circle>")  # fmt: skip
    _frame_lines(f)
    # The legend stands right of the square plot, one entry per row.
    x, y = f.x1 + 24, f.y1 + 12
    f.parts.append(f'<line x1="{x:.1f}" y1="{y - 4:.1f}" x2="{x + 16:.1f}" y2="{y - 4:.1f}" stroke="{color}" stroke-width="2.5"/>')
    f.parts.append(_text(x + 22, y, "observed share of positives per score bin", "start"))
    f.parts.append(f'<line x1="{x:.1f}" y1="{y + 14:.1f}" x2="{x + 16:.1f}" y2="{y + 14:.1f}" stroke="{AXIS}" '
                   'stroke-width="1.5" stroke-dasharray="5 4"/>')  # fmt: skip
    f.parts.append(_text(x + 22, y + 18, "perfect calibration (observed = expected)", "start"))
    f.parts.append(f'<rect x="{x:.1f}" y="{y + 28:.1f}" width="16" height="10" fill="{AXIS}" fill-opacity="0.3"/>')
    f.parts.append(_text(x + 22, y + 36, "share of scored events per bin", "start"))
    f.parts.append(_text(x, y + 58, f"{total:,} scored events; circle area ~ events", "start", 10))
    return _svg(f, title)
