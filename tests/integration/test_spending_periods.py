"""A key's daily limit rolls over at UTC midnight (an injected clock stands in for the night).

The night is set in the future on purpose: usage records are stamped by the writer's wall clock
when they are written, and a spend counter rebuilt from them sums the records since the period
began. An injected night in the past would see every record written "today" as its new day's
spend (the test failed on the first run after the real date passed the injected one)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.fakes.gateway_fixtures import FAKE_MODEL, Backend, Gateway, gateway_settings, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


@pytest.fixture
def clocked(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[tuple[Gateway, Clock]]:
    gateway, server = start_gateway(gateway_settings(backend, fake_openai), fake_openai)
    clock = Clock(datetime(2099, 12, 31, 23, 59, 0, tzinfo=UTC))
    state: Any = server.app.state.gateway  # the app the server runs
    state.now = clock
    try:
        yield gateway, clock
    finally:
        server.stop()


def test_daily_limit_rolls_over_at_utc_midnight(clocked: tuple[Gateway, Clock]) -> None:
    gateway, clock = clocked
    headers = {"Authorization": f"Bearer {gateway.key}"}
    key = httpx.post(
        gateway.url + "/api/keys/",
        json={"name": "daily", "spending_limit": "0.035", "spending_period": "daily"},
        headers=headers,
    ).json()

    def call() -> httpx.Response:
        return httpx.post(
            gateway.v1 + "/chat/completions",
            json={"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 40},
            headers={"Authorization": f"Bearer {key['key']}"},
        )

    assert [call().status_code for _ in range(3)] == [
        200,
        200,
        402,
    ]  # 2 × 0.00615 spent of 0.035; a third may cost 0.0252 (40 output tokens)
    view = httpx.get(gateway.url + f"/api/keys/{key['id']}/", headers=headers).json()
    assert view["spending_current"] == "0.0123"
    clock.moment = datetime(2100, 1, 1, 0, 0, 5, tzinfo=UTC)  # a new UTC day
    assert call().status_code == 200
    view = httpx.get(gateway.url + f"/api/keys/{key['id']}/", headers=headers).json()
    assert view["spending_current"] == "0.00615"
