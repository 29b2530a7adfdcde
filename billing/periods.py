"""Spending periods: UTC calendar days, weeks starting Monday, and months."""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, timedelta


def period_start(now: datetime, period: str) -> datetime:
    return _period(now.astimezone(UTC).date(), period)[0]


def period_end(now: datetime, period: str) -> datetime:
    return _period(now.astimezone(UTC).date(), period)[1]


def period_id(now: datetime, period: str) -> str:
    """A stable name for the period containing ``now``: ``d20261122``, ``w20261116``, ``m202611``."""
    return _period(now.astimezone(UTC).date(), period)[2]


@functools.lru_cache(maxsize=64)
def _period(day: date, period: str) -> tuple[datetime, datetime, str]:
    """Start, end and name of the period containing ``day``; kept, since every reservation of a
    key with a spending limit asks (the same answer all day long)."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    if period == "daily":
        return start, start + timedelta(days=1), f"d{start:%Y%m%d}"
    if period == "weekly":
        start -= timedelta(days=start.weekday())
        return start, start + timedelta(days=7), f"w{start:%Y%m%d}"
    if period == "monthly":
        start = start.replace(day=1)
        return start, (start + timedelta(days=32)).replace(day=1), f"m{start:%Y%m}"
    raise ValueError(f"unknown spending period {period!r}")
