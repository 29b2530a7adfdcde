"""The x-ratelimit-* headers' arithmetic: OpenAI's duration format and the minute windows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from billing.ratelimits import duration, reset_ms, window_headers


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0ms"), (20, "20ms"), (999, "999ms"), (1000, "1s"), (8640, "8.64s"), (59_500, "59.5s"), (60_000, "1m0s")],
)
def test_duration_as_openai_writes_it(ms: int, text: str) -> None:
    assert duration(ms) == text
    assert duration(360_000) == "6m0s"


def test_window_resets_at_the_next_minute() -> None:
    now = datetime(2026, 12, 1, 3, 4, 59, 980_000, tzinfo=UTC)
    assert reset_ms(now) == 20
    assert reset_ms(now.replace(second=0, microsecond=0)) == 60_000
    assert window_headers("requests", 10, 12, now) == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "0",  # never negative
        "x-ratelimit-reset-requests": "20ms",
    }
