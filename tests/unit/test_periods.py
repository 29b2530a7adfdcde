"""UTC calendar spending periods: days, weeks from Monday, months, across year ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from billing.periods import period_end, period_id, period_start


@pytest.mark.parametrize(
    ("moment", "period", "start", "end", "name"),
    [
        ("2026-11-22T23:59:59+00:00", "daily", "2026-11-22", "2026-11-23", "d20261122"),
        ("2026-11-22T23:59:59+00:00", "weekly", "2026-11-16", "2026-11-23", "w20261116"),  # a Sunday
        ("2026-11-23T00:00:00+00:00", "weekly", "2026-11-23", "2026-11-30", "w20261123"),  # Monday starts it
        ("2026-12-31T23:59:59+00:00", "monthly", "2026-12-01", "2027-01-01", "m202612"),
        ("2027-01-01T00:00:00+00:00", "monthly", "2027-01-01", "2027-02-01", "m202701"),
        ("2028-02-29T12:00:00+00:00", "monthly", "2028-02-01", "2028-03-01", "m202802"),
    ],
)
def test_periods(moment: str, period: str, start: str, end: str, name: str) -> None:
    now = datetime.fromisoformat(moment)
    assert period_start(now, period) == datetime.fromisoformat(start).replace(tzinfo=UTC)
    assert period_end(now, period) == datetime.fromisoformat(end).replace(tzinfo=UTC)
    assert period_id(now, period) == name


def test_periods_are_utc_whatever_the_local_offset() -> None:
    tokyo = datetime(2026, 12, 1, 8, 0, tzinfo=timezone(timedelta(hours=9)))  # still Nov 30 in UTC
    assert period_id(tokyo, "monthly") == "m202611" and period_id(tokyo, "daily") == "d20261130"
    with pytest.raises(ValueError, match="yearly"):
        period_start(tokyo, "yearly")
