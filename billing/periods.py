"""Spending periods: UTC calendar days, weeks starting Monday, and months."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def period_start(now: datetime, period: str) -> datetime:
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return day
    if period == "weekly":
        return day - timedelta(days=day.weekday())
    if period == "monthly":
        return day.replace(day=1)
    raise ValueError(f"unknown spending period {period!r}")


def period_end(now: datetime, period: str) -> datetime:
    start = period_start(now, period)
    if period == "daily":
        return start + timedelta(days=1)
    if period == "weekly":
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)


def period_id(now: datetime, period: str) -> str:
    """A stable name for the period containing ``now``: ``d20261122``, ``w20261116``, ``m202611``."""
    start = period_start(now, period)
    if period == "monthly":
        return f"m{start:%Y%m}"
    return f"{period[0]}{start:%Y%m%d}"
