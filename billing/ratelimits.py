"""A key's rate limits as the headers OpenAI answers with (``x-ratelimit-*``), so clients that
pace themselves by them (the SDKs' users, LangChain's limiters) can.

The key's windows are fixed minutes (billing.reservations), so each resets at the next minute
boundary; the counts come from the reservation's own atomic apply, never another read.
"""

from __future__ import annotations

from datetime import datetime

WINDOW_MS = 60_000
REQUESTS = "requests"
TOKENS = "tokens"


def reset_ms(now: datetime) -> int:
    """Milliseconds until the current minute window ends (1 to 60,000)."""
    return WINDOW_MS - int(now.timestamp() * 1000) % WINDOW_MS


def duration(ms: int) -> str:
    """A duration as OpenAI writes its resets: ``20ms``, ``1s``, ``8.64s``, ``6m0s``."""
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest = divmod(ms, 60_000)
    seconds = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"


def window_headers(unit: str, limit: int, used: int, now: datetime) -> dict[str, str]:
    """The limit, what is left of it in this window and when the window resets; ``unit`` is
    ``requests`` or ``tokens``."""
    return {
        f"x-ratelimit-limit-{unit}": str(limit),
        f"x-ratelimit-remaining-{unit}": str(max(0, limit - used)),
        f"x-ratelimit-reset-{unit}": duration(reset_ms(now)),
    }
