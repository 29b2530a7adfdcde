"""Stacked bar charts drawn on the server as SVG: no script, no library, readable with JavaScript
off, and as cheap with a year of data as with a week (one bar per day, the database has already
summed the requests).

Colours come from CSS classes (``series-0`` …) so both themes restyle them, and each chart ships
its numbers as a table too (in a ``<details>`` under it) for screen readers and copying.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from billing.reports import SeriesPoint

__all__ = ["Bar", "Chart", "Segment", "stacked_chart"]

MAX_SERIES = 6  # the largest groups get a colour each; the rest are summed as "other"
WIDTH, HEIGHT = 720, 220
LEFT, BOTTOM, TOP = 56, 24, 8


@dataclass(frozen=True, slots=True)
class Segment:
    series: int
    x: float
    y: float
    height: float
    label: str


@dataclass(frozen=True, slots=True)
class Bar:
    day: date
    total: int
    segments: list[Segment]


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    series: list[str]  # legend labels, in colour order
    bars: list[Bar]
    bar_width: float
    ticks: list[tuple[float, str]]  # y gridlines: (y, label)
    x_labels: list[tuple[float, str]]
    totals: list[int]  # per series, over the range
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM

    @property
    def empty(self) -> bool:
        return not any(bar.total for bar in self.bars)


def _nice_max(value: int) -> int:
    if value <= 0:
        return 1
    magnitude: int = 10 ** (len(str(value)) - 1)
    for tenths in (10, 20, 25, 50, 100):  # 1, 2, 2.5, 5, 10 times the magnitude
        top = tenths * magnitude // 10 or 1
        if top >= value:
            return top
    return 10 * magnitude


def stacked_chart(
    title: str,
    points: Sequence[SeriesPoint],
    *,
    first: date,
    last: date,
    value: Callable[[SeriesPoint], int],
    label: Callable[[str], str],
    fmt: Callable[[int], str],
) -> Chart:
    """One bar per day from ``first`` to ``last``; each bar stacks the groups' ``value``."""
    totals: dict[str, int] = {}
    for point in points:
        totals[point.group] = totals.get(point.group, 0) + value(point)
    ranked = sorted(totals, key=lambda group: (-totals[group], group))
    shown = ranked[:MAX_SERIES] if len(ranked) <= MAX_SERIES else ranked[: MAX_SERIES - 1]
    index = {group: i for i, group in enumerate(shown)}
    other = len(shown) if len(ranked) > len(shown) else None
    names = [label(group) for group in shown] + (["other"] if other is not None else [])
    days = (last - first).days + 1
    per_day: dict[date, list[int]] = {}
    for point in points:
        if not first <= point.day <= last:
            continue
        slot = index.get(point.group, other)
        if slot is None:
            continue
        values = per_day.setdefault(point.day, [0] * len(names))
        values[slot] += value(point)
    top_value = _nice_max(max((sum(v) for v in per_day.values()), default=0))
    plot_height = HEIGHT - BOTTOM - TOP
    slot_width = (WIDTH - LEFT) / max(days, 1)
    bar_width = max(slot_width * 0.8, 0.6)
    bars: list[Bar] = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        values = per_day.get(day, [0] * len(names))
        x = LEFT + offset * slot_width + (slot_width - bar_width) / 2
        base = float(HEIGHT - BOTTOM)
        segments: list[Segment] = []
        for series, amount in enumerate(values):
            if amount <= 0:
                continue
            height = amount / top_value * plot_height
            base -= height
            segments.append(
                Segment(series, round(x, 2), round(base, 2), round(height, 2), f"{names[series]}: {fmt(amount)}")
            )
        bars.append(Bar(day, sum(values), segments))
    ticks = [(round(HEIGHT - BOTTOM - plot_height * i / 4, 2), fmt(top_value * i // 4)) for i in range(5)]
    label_every = max(1, days // 6)
    x_labels = [
        (round(LEFT + offset * slot_width + slot_width / 2, 2), (first + timedelta(days=offset)).strftime("%b %d"))
        for offset in range(0, days, label_every)
    ]
    series_totals = [totals[group] for group in shown]
    if other is not None:
        series_totals.append(sum(totals[group] for group in ranked[len(shown) :]))
    return Chart(title, names, bars, round(bar_width, 2), ticks, x_labels, series_totals)
