"""The runtime's limits and secrets through the real HTTP app: the per-minute limit (429 with
``Retry-After``, shared by two gateway instances on one Postgres and Redis), failing closed when
Redis is gone, a regenerated token dying in another instance within the cache TTL, and no
secret in any answer or log line."""

# ruff: noqa: F811 (the fixtures are imported by name)
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from gateway.app import create_app
from tests.fakes.clock import SkippingClock
from tests.fakes.function_calls import Served, make_function, served, third_party  # noqa: F401
from tests.fakes.gateway_fixtures import Gateway
from tests.fakes.servers import ThreadedServer

SECRET = "sk_live_" + "9" * 24


def minute_start() -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0)


def second_instance(served: Served) -> Iterator[tuple[Gateway, SkippingClock]]:
    """Another gateway process on the same database and Redis (its own caches and clocks)."""
    server = ThreadedServer(create_app(served.gateway.settings, env={})).start()
    clock = SkippingClock().install(server.app)
    other = Gateway(
        server.url, served.gateway.key, served.gateway.account_id, served.gateway.settings, served.gateway.fake, clock
    )
    try:
        yield other, clock
    finally:
        server.stop()


@pytest.fixture
def other(served: Served) -> Iterator[tuple[Gateway, SkippingClock]]:
    yield from second_instance(served)


def test_function_runtime_rate_limit_per_calendar_minute(served: Served) -> None:
    served.gateway.clock.set_now(minute_start())
    fn = served.function("/json", rate_limit_per_minute=2)
    first, second, third = (fn.call("POST") for _ in range(3))
    assert [first.status_code, second.status_code, third.status_code] == [200, 200, 429]
    window_end = int(minute_start().timestamp()) + 60
    assert first.headers["x-ratelimit-limit"] == "2"
    assert [r.headers["x-ratelimit-remaining"] for r in (first, second, third)] == ["1", "0", "0"]
    assert third.headers["x-ratelimit-reset"] == str(window_end)
    retry_after = int(third.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert third.json() == {"error": "Rate limit exceeded", "retry_after": retry_after}
    exposed = third.headers["access-control-expose-headers"]
    assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After"} <= {
        name.strip() for name in exposed.split(",")
    }
    assert len(served.third_party.received) == 2  # the refused call never left
    # A refused call used no slot, and the next minute starts afresh.
    served.gateway.clock.advance(60)
    assert fn.call("POST").status_code == 200
    unlimited = served.function("/json")
    assert all(unlimited.call("POST").status_code == 200 for _ in range(5))
    assert "x-ratelimit-limit" not in unlimited.call("POST").headers


def test_function_runtime_rate_limit_is_shared_by_two_gateways(
    served: Served, other: tuple[Gateway, SkippingClock]
) -> None:
    if not served.gateway.settings.redis_url:
        pytest.skip("one process's embedded counters are its own: sharing needs Redis")
    second, second_clock = other
    for clock in (served.gateway.clock, second_clock):
        clock.set_now(minute_start())
    fn = served.function("/json", rate_limit_per_minute=3)
    there = httpx.URL(second.url + f"/fn/{fn.id}")
    headers = {"x-proxy-token": fn.token}
    statuses = [
        fn.call("POST").status_code,
        httpx.post(there, headers=headers).status_code,
        fn.call("POST").status_code,
    ]
    assert statuses == [200, 200, 200]
    refused_there = httpx.post(there, headers=headers)
    refused_here = fn.call("POST")
    assert (refused_there.status_code, refused_here.status_code) == (429, 429)
    assert abs(int(refused_there.headers["retry-after"]) - int(refused_here.headers["retry-after"])) <= 1
    assert len(served.third_party.received) == 3


def test_function_runtime_rate_limit_fails_closed_without_redis(served: Served) -> None:
    if not served.gateway.settings.redis_url:
        pytest.skip("the embedded counters cannot be unavailable")
    from billing.counters import RedisCounterStore
    from functions.ratelimit import RateLimiter

    state = served.state
    dead = RedisCounterStore.from_url("redis://127.0.0.1:1/0")
    state.function_runtime._limiter = RateLimiter(dead, prefix="x:", clock=lambda: state.now().timestamp())
    limited = served.function("/json", rate_limit_per_minute=10)
    response = limited.call("POST")
    assert (response.status_code, response.json()) == (503, {"error": "Rate limiter unavailable"})
    assert served.third_party.received == []
    assert served.function("/json").call("POST").status_code == 200  # no limit: Redis not needed


def test_function_runtime_regenerated_token_dies_in_another_instance_within_the_ttl(
    served: Served, other: tuple[Gateway, SkippingClock]
) -> None:
    second, second_clock = other
    fn = served.function("/json")
    there = second.url + f"/fn/{fn.id}"
    assert httpx.post(there, headers={"x-proxy-token": fn.token}).status_code == 200  # now cached there
    regenerated = httpx.post(
        f"{served.gateway.url}/api/functions/{fn.id}/regenerate-token/",
        headers={"Authorization": f"Bearer {served.gateway.key}"},
    )
    assert regenerated.status_code == 200, regenerated.text
    new_token = regenerated.json()["token"]
    assert fn.call("POST").status_code == 401  # at once in the process that changed it
    assert fn.call("POST", token=new_token).status_code == 200
    second_clock.advance(served.gateway.settings.function_cache_ttl_s + 0.1)
    old = httpx.post(there, headers={"x-proxy-token": fn.token})
    assert (old.status_code, old.json()) == (401, {"error": "Invalid proxy token"})
    assert httpx.post(there, headers={"x-proxy-token": new_token}).status_code == 200


def test_function_runtime_no_secret_in_answers_or_logs(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    served.gateway.clock.set_now(minute_start())  # the rate-limited function's two calls share a minute
    secrets = {"API_KEY": SECRET, "QUERY_KEY": "qk_" + "3" * 20, "BODY_KEY": "bk_" + "4" * 20}
    mappings = [
        {"variable": "API_KEY", "inject_as": "header", "key": "Authorization", "template": "Bearer ${value}"},
        {"variable": "QUERY_KEY", "inject_as": "query", "key": "key"},
        {"variable": "BODY_KEY", "inject_as": "body", "key": "auth.key"},
    ]
    target = served.third_party.url
    functions = [
        served.function("/json", secrets_by_key=secrets, mappings=mappings),
        served.function("/status/500", secrets_by_key=secrets, mappings=mappings),
        served.function("/sleep?s=2", secrets_by_key=secrets, mappings=mappings, timeout_ms=200),
        make_function(served.gateway, "http://127.0.0.1:1/", secrets_by_key=secrets, mappings=mappings),
        make_function(served.gateway, "https://10.0.0.1/private", secrets_by_key=secrets, mappings=mappings),
        served.function("/json", secrets_by_key=secrets, mappings=mappings, rate_limit_per_minute=1),
    ]
    answers: list[httpx.Response] = []
    for fn in functions:
        answers += [fn.call("POST", json={"x": 1}), fn.call("POST", token="wrong"), fn.call("GET")]
    answers.append(functions[-1].call("POST"))  # past its limit of 1
    answers.append(
        httpx.post(
            f"{served.gateway.url}/api/functions/{functions[0].id}/test/",
            json={"body": "{}"},
            headers={"Authorization": f"Bearer {served.gateway.key}"},
        )
    )
    statuses = {answer.status_code for answer in answers}
    assert {200, 401, 405, 429, 500, 502, 504} <= statuses
    assert "target refused by the SSRF guard" in caplog.text  # the gateway's log lines are here
    assert served.third_party.url == target
    everything_sent = [*secrets.values(), *(fn.token for fn in functions)]
    for answer in answers:
        shown = answer.text + repr(answer.headers.multi_items())
        for value in everything_sent:
            assert value not in shown, (answer.status_code, answer.url)
    for value in everything_sent:
        assert value not in caplog.text
    assert served.third_party.last.headers["authorization"] == f"Bearer {SECRET}"  # they did go upstream


def test_function_runtime_calls_reach_the_invocation_log(served: Served) -> None:
    """With the real ledger (functions/ledger.py, as the app wires it): one log row per counted
    call, written behind the request, with the runtime's status and error type."""
    from sqlalchemy import select

    from functions.models import FunctionInvocation
    from tests.fakes.gateway_fixtures import _with_session

    served.gateway.clock.set_now(minute_start())
    fn = served.function("/json", rate_limit_per_minute=1)
    answers = [fn.call("POST", headers={"Origin": "https://site.example"}), fn.call("POST"), fn.call("POST", token="x")]
    unreachable = make_function(served.gateway, "http://127.0.0.1:1/").call("POST")
    assert [a.status_code for a in answers] + [unreachable.status_code] == [200, 429, 401, 502]
    wanted = {a.headers["x-request-id"] for a in (*answers[:2], unreachable)}

    async def rows(session: object) -> list[FunctionInvocation]:
        query = select(FunctionInvocation).where(FunctionInvocation.request_id.in_(wanted))
        return list(await session.scalars(query))  # type: ignore[attr-defined]

    deadline = time.monotonic() + 60
    while True:
        served.gateway.settled()
        found: list[FunctionInvocation] = served.gateway.run(_with_session(served.gateway.settings, rows))
        if len(found) == len(wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    by_id = {row.request_id: (row.status, row.error_type, row.origin) for row in found}
    assert by_id == {
        answers[0].headers["x-request-id"]: (200, "", "https://site.example"),
        answers[1].headers["x-request-id"]: (429, "rate_limited", ""),
        unreachable.headers["x-request-id"]: (502, "unreachable", ""),
    }
