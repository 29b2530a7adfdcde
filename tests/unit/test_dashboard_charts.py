"""Server-side charts and the small helpers of the dashboard's pages (no app, no network)."""

from __future__ import annotations

import time
from datetime import date, timedelta

from billing.reports import SeriesPoint
from gateway.dashboard.charts import MAX_SERIES, Chart, stacked_chart
from gateway.dashboard.render import safe_next

FIRST = date(2026, 1, 1)


def _chart(points: list[SeriesPoint], days: int = 7) -> Chart:
    return stacked_chart(
        "t", points, first=FIRST, last=FIRST + timedelta(days=days - 1), value=lambda p: p.requests, label=str, fmt=str
    )


def test_charts_one_bar_per_day_stacked_by_group() -> None:
    points = [
        SeriesPoint(FIRST, "a", 3, 0),
        SeriesPoint(FIRST, "b", 1, 0),
        SeriesPoint(FIRST + timedelta(2), "a", 2, 0),
    ]
    chart = _chart(points)
    assert len(chart.bars) == 7
    assert [bar.total for bar in chart.bars] == [4, 0, 2, 0, 0, 0, 0]
    first = chart.bars[0].segments
    assert [s.series for s in first] == [0, 1] and first[1].y + first[1].height == first[0].y
    assert chart.series == ["a", "b"] and chart.totals == [5, 1]


def test_charts_small_groups_fold_into_other() -> None:
    points = [SeriesPoint(FIRST, f"g{i}", 100 - i, 0) for i in range(MAX_SERIES + 3)]
    chart = _chart(points)
    assert len(chart.series) == MAX_SERIES and chart.series[-1] == "other"
    assert sum(chart.totals) == sum(p.requests for p in points)


def test_charts_empty_range_and_a_year_of_days_stay_cheap() -> None:
    assert _chart([]).empty
    year = [SeriesPoint(FIRST + timedelta(d), f"m{d % 9}", d % 17 + 1, 0) for d in range(366)]
    started = time.perf_counter()
    chart = _chart(year, days=366)
    assert len(chart.bars) == 366 and not chart.empty
    assert time.perf_counter() - started < 2.0  # generous: a few ms in practice


def test_dashboard_safe_next_keeps_visitors_on_this_site() -> None:
    assert safe_next("/usage?model=x") == "/usage?model=x"
    for hostile in ("//evil.example/", "https://evil.example/", "/\\evil", "javascript:alert(1)", None, "/a\nb"):
        assert safe_next(hostile) == "/keys"
