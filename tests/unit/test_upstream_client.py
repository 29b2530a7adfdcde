"""providers.http.UpstreamClient: its short path sends what httpx's own path would (URL, body,
headers, timeouts), keeps no upstream cookie, and anything unusual takes httpx's path."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from providers.http import FORWARDED, build_client


class Recorder:
    def __init__(self, reply: httpx.Response | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.reply = reply or httpx.Response(200, json={"ok": True}, headers={"set-cookie": "sid=tenant-a; Path=/"})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.reply


def client_for(
    recorder: Recorder | Callable[[httpx.Request], httpx.Response], base_url: str = "http://127.0.0.1:9/v1"
) -> httpx.AsyncClient:
    return build_client(
        base_url,
        headers={"authorization": "Bearer sk-upstream", "x-extra": "configured"},
        connect_timeout_s=3.0,
        read_timeout_s=7.0,
        max_connections=4,
        transport=httpx.MockTransport(recorder),
    )


def reference_for(base_url: str = "http://127.0.0.1:9/v1") -> httpx.AsyncClient:
    """What httpx itself builds for the same client settings."""
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"authorization": "Bearer sk-upstream", "x-extra": "configured"},
        timeout=httpx.Timeout(connect=3.0, read=7.0, write=7.0, pool=5.0),
    )


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    yield Recorder()


def _headers(request: httpx.Request) -> dict[str, str]:
    return {name.lower(): value for name, value in request.headers.multi_items()}


@pytest.mark.parametrize(
    ("base_url", "path", "params"),
    [
        ("http://127.0.0.1:9/v1", "/chat/completions", None),
        ("http://127.0.0.1:9/v1/", "/chat/completions", None),
        ("https://example.invalid/openai/deployments/d", "/chat/completions?api-version=2024-06-01", None),
        ("http://127.0.0.1:9/v1beta", "/models/gemini-2.0-flash:streamGenerateContent", {"alt": "sse"}),
    ],
)
async def test_a_plain_request_matches_what_httpx_builds(
    recorder: Recorder, base_url: str, path: str, params: dict[str, str] | None
) -> None:
    client = client_for(recorder, base_url)
    body = b'{"model":"m","messages":[]}'
    ours = client.build_request("POST", path, content=body, headers={"content-type": "application/json"}, params=params)
    async with reference_for(base_url.rstrip("/")) as reference:
        theirs = reference.build_request(
            "POST", path, content=body, headers={"content-type": "application/json"}, params=params
        )
    assert ours.url == theirs.url
    assert ours.method == theirs.method == "POST"
    assert ours.content == theirs.content == body
    assert _headers(ours) == _headers(theirs)
    assert ours.extensions["timeout"] == theirs.extensions["timeout"]
    await client.aclose()


async def test_a_bodiless_get_has_no_content_length_and_a_post_without_body_has_zero(recorder: Recorder) -> None:
    client = client_for(recorder)
    async with reference_for() as reference:
        for method in ("GET", "POST"):
            ours, theirs = client.build_request(method, "/models"), reference.build_request(method, "/models")
            assert _headers(ours) == _headers(theirs), method
            assert ours.content == theirs.content == b""
    await client.aclose()


async def test_a_request_header_replaces_the_clients_own_whatever_its_case(recorder: Recorder) -> None:
    client = client_for(recorder)
    request = client.build_request(
        "POST", "/x", content=b"{}", headers={"X-Extra": "per-call", "Accept": "text/event-stream"}
    )
    headers = request.headers
    assert headers.get_list("x-extra") == ["per-call"] and headers.get_list("accept") == ["text/event-stream"]
    assert headers["authorization"] == "Bearer sk-upstream" and headers["content-length"] == "2"
    await client.aclose()


async def test_the_served_requests_headers_are_forwarded_on_both_paths(recorder: Recorder) -> None:
    client = client_for(recorder)
    token = FORWARDED.set([("x-request-id", "req_abc"), ("traceparent", "00-" + "a" * 32 + "-" + "b" * 16 + "-01")])
    try:
        await client.post("/chat/completions", content=b"{}", headers={"x-request-id": "not-this"})
        await client.post("/chat/completions", json={"a": 1})  # httpx's own path
    finally:
        FORWARDED.reset(token)
    await client.post("/chat/completions", content=b"{}")  # outside a request: nothing forwarded
    first, second, third = recorder.requests
    for sent in (first, second):
        assert sent.headers.get_list("x-request-id") == ["req_abc"]
        assert sent.headers["traceparent"].startswith("00-aaaa")
    assert "x-request-id" not in third.headers and "traceparent" not in third.headers
    await client.aclose()


async def test_the_answer_is_read_and_no_upstream_cookie_rides_on_the_next_call(recorder: Recorder) -> None:
    client = client_for(recorder)
    response = await client.post("/chat/completions", content=b"{}")
    assert response.status_code == 200 and response.json() == {"ok": True}
    assert response.request.url == httpx.URL("http://127.0.0.1:9/v1/chat/completions")
    await client.post("/chat/completions", content=b"{}")
    assert "cookie" not in recorder.requests[1].headers
    assert not client.cookies
    await client.aclose()


async def test_a_streamed_answer_is_left_unread_for_the_caller(recorder: Recorder) -> None:
    recorder.reply = httpx.Response(200, stream=httpx.ByteStream(b"data: 1\n\n"))
    client = client_for(recorder)
    response = await client.send(client.build_request("POST", "/chat/completions", content=b"{}"), stream=True)
    assert not response.is_stream_consumed
    assert [chunk async for chunk in response.aiter_raw()] == [b"data: 1\n\n"]
    await response.aclose()
    await client.aclose()


async def test_a_transport_failure_names_its_request() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    client = client_for(refuse)
    with pytest.raises(httpx.ConnectError) as caught:
        await client.post("/chat/completions", content=b"{}")
    assert caught.value.request.url.path == "/v1/chat/completions"
    await client.aclose()


async def test_event_hooks_added_later_take_httpxs_own_path(recorder: Recorder) -> None:
    client = client_for(recorder)
    seen: list[str] = []

    async def hook(request: httpx.Request) -> None:
        seen.append(str(request.url))

    client.event_hooks = {"request": [hook], "response": []}
    await client.post("/chat/completions", content=b"{}")
    assert seen == ["http://127.0.0.1:9/v1/chat/completions"]
    await client.aclose()


async def test_a_closed_client_refuses_like_httpx(recorder: Recorder) -> None:
    client = client_for(recorder)
    await client.aclose()
    with pytest.raises(RuntimeError):
        await client.post("/chat/completions", content=b"{}")


async def test_query_parameters_other_than_text_take_httpxs_own_path(recorder: Recorder) -> None:
    client = client_for(recorder)
    request = client.build_request("GET", "/models", params={"tag": ["a", "b"], "limit": 5})
    assert request.url.params.get_list("tag") == ["a", "b"] and request.url.params["limit"] == "5"
    await client.aclose()


async def test_build_client_uses_the_lean_transport_unless_through_an_egress_proxy() -> None:
    from httpx_aiohttp import AiohttpTransport

    from providers.transport import LeanTransport

    options: dict[str, Any] = {"headers": {}, "connect_timeout_s": 1.0, "read_timeout_s": 1.0, "max_connections": 2}
    direct = build_client("https://api.example.invalid/v1", **options)
    proxied = build_client("https://api.example.invalid/v1", proxy="http://127.0.0.1:9", **options)
    assert isinstance(direct._transport, LeanTransport) and isinstance(proxied._transport, AiohttpTransport)
    await direct.aclose()
    await proxied.aclose()
