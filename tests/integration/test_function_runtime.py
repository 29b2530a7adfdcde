"""The ``/fn`` runtime through the real HTTP app, on both backends: envmanager.md §4's checks in
their order with their status codes and bodies, CORS and the preflight, what comes back from the
target (status, body, Content-Type and Content-Encoding, nothing else), 413, 502, 504, request
ids, and the ledger seam (admit / finish / refused exactly as functions/invocations.py says)."""

# ruff: noqa: F811 (the fixtures are imported by name)
from __future__ import annotations

import gzip
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx

from functions.invocations import ErrorType
from tests.fakes.function_calls import Recorded, Served, make_function, served, third_party  # noqa: F401
from tests.fakes.third_party import BINARY, SSE_FIRST

ORIGIN = "https://app.example.com"
CORS = "access-control-allow-origin"


def error(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) <= {"error", "retry_after"}, body
    return str(body["error"])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_function_runtime_forwards_and_answers_with_the_targets_status_and_body(served: Served) -> None:
    fn = served.function("/json")
    response = fn.call("POST", json={"a": 1})
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True, "path": "/json"}
    assert response.headers["content-type"] == "application/json"
    assert response.headers[CORS] == "*"
    assert response.headers["access-control-allow-methods"] == "POST, OPTIONS"
    assert response.headers["access-control-allow-headers"] == "Content-Type, x-proxy-token"
    assert response.headers["access-control-max-age"] == "86400"
    assert response.headers["x-request-id"].startswith("req_")
    for status in (201, 404, 418, 500, 503):
        upstream = served.function(f"/status/{status}").call("POST")
        assert upstream.status_code == status
        assert upstream.json() == {"status": status}  # byte for byte, 4xx and 5xx alike
        assert "x-upstream" not in upstream.headers


def test_function_runtime_id_checks_come_first_without_cors(served: Served) -> None:
    base = served.gateway.url
    for path in ("/fn", "/fn/"):
        response = httpx.post(base + path, headers={"Origin": ORIGIN})
        assert (response.status_code, error(response)) == (404, "Proxy ID is required")
        assert CORS not in response.headers
    for path in ("/fn/not-a-uuid", f"/fn/{uuid.uuid4()}", "/fn/%ff%fe", f"/fn/{uuid.uuid4()}/extra"):
        for method in ("POST", "OPTIONS"):
            response = httpx.request(method, base + path, headers={"Origin": ORIGIN, "x-proxy-token": "x"})
            assert (response.status_code, error(response)) == (404, "Not found"), path
            assert CORS not in response.headers
    # An extra path on a function that does not forward one: the same 404, before anything else.
    fn = served.function("/json")
    response = fn.call("POST", "/more")
    assert (response.status_code, error(response), CORS in response.headers) == (404, "Not found", False)


def test_function_runtime_preflight(served: Served) -> None:
    fn = served.function("/json", allowed_origins=[ORIGIN], method="PUT")
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "PUT"}
    allowed = fn.call("OPTIONS", token=None, headers=preflight)
    assert (allowed.status_code, allowed.content) == (204, b"")
    assert allowed.headers[CORS] == ORIGIN
    assert allowed.headers["vary"] == "Origin"
    assert allowed.headers["access-control-allow-methods"] == "PUT, OPTIONS"
    refused = fn.call("OPTIONS", token=None, headers={**preflight, "Origin": "https://evil.example"})
    assert (refused.status_code, error(refused), CORS in refused.headers) == (403, "Origin not allowed", False)
    # Step 3 comes before step 5: a disabled function still answers its preflight.
    disabled = served.function("/json", allowed_origins=[ORIGIN], enabled=False)
    assert disabled.call("OPTIONS", token=None, headers=preflight).status_code == 204
    assert served.third_party.received == []


def test_function_runtime_checks_in_envmanagers_order(served: Served) -> None:
    fn = served.function("/json", allowed_origins=[ORIGIN])
    big = {"Content-Length": str(2 * 1024 * 1024), "Origin": "https://evil.example"}
    # 4: a declared size past the limit is refused before the token or origin is looked at.
    too_large = httpx.post(fn.url, headers=big, content=b"x" * (2 * 1024 * 1024))
    assert (too_large.status_code, error(too_large)) == (413, "Request body too large (max 1MB)")
    assert too_large.headers[CORS] == "https://evil.example"  # a page may read why it was refused
    # 5: disabled is "Not found", with CORS headers, before the token is checked.
    disabled = served.function("/json", enabled=False)
    response = disabled.call("POST", token=None, headers={"Origin": ORIGIN})
    assert (response.status_code, error(response), response.headers[CORS]) == (404, "Not found", "*")
    # 6, 7: the token, before the origin.
    response = fn.call("POST", token=None, headers={"Origin": "https://evil.example"})
    assert (response.status_code, error(response)) == (401, "Missing x-proxy-token header")
    response = fn.call("POST", token="0" * 64, headers={"Origin": "https://evil.example"})
    assert (response.status_code, error(response)) == (401, "Invalid proxy token")
    response = fn.call("POST", token=fn.token.upper(), headers={"Origin": ORIGIN})
    assert response.status_code == 401
    # 8: the origin, before the method.
    response = fn.call("GET", headers={"Origin": "https://evil.example"})
    assert (response.status_code, error(response)) == (403, "Origin not allowed")
    response = fn.call("GET")  # no Origin at all, and no "*"
    assert (response.status_code, error(response)) == (403, "Origin not allowed")
    # 9: the method.
    response = fn.call("GET", headers={"Origin": ORIGIN})
    assert (response.status_code, error(response)) == (405, "Method GET not allowed. Expected POST")
    assert response.headers["allow"] == "POST, OPTIONS"
    assert response.headers[CORS] == ORIGIN
    assert served.third_party.received == []
    assert fn.call("POST", headers={"Origin": ORIGIN}).status_code == 200


def test_function_runtime_origin_rules(served: Served) -> None:
    patterns = served.function("/json", allowed_origins=["*.example.com", "https://app.test", "http://localhost:3000"])
    for origin, allowed in [
        ("https://a.example.com", True),
        ("http://b.a.example.com", True),
        ("https://A.Example.com", True),
        ("https://example.com", False),
        ("https://evilexample.com", False),
        ("https://a.example.com:8443", False),
        ("https://app.test", True),
        ("https://app.test:443", True),
        ("https://app.test/", True),
        ("http://app.test", False),
        ("http://localhost:3000", True),
        ("http://localhost:3001", False),
        ("null", False),
    ]:
        response = patterns.call("POST", headers={"Origin": origin})
        assert (response.status_code == 200) is allowed, origin
        if allowed:
            assert response.headers[CORS] == origin
            assert response.headers["vary"] == "Origin"
    secure = served.function("/json", allowed_origins=["https://*.example.com:8443"])
    assert secure.call("POST", headers={"Origin": "https://a.example.com:8443"}).status_code == 200
    assert secure.call("POST", headers={"Origin": "http://a.example.com:8443"}).status_code == 403
    nobody = served.function("/json", allowed_origins=[])
    assert nobody.call("POST", headers={"Origin": ORIGIN}).status_code == 403
    assert nobody.call("POST").status_code == 403
    anyone = served.function("/json", allowed_origins=["*"])
    assert anyone.call("POST").status_code == 200  # server to server, no Origin: only "*" allows it
    assert anyone.call("POST", headers={"Origin": "null"}).headers[CORS] == "*"


def test_function_runtime_chunked_body_past_the_limit_is_refused_while_it_streams_in(served: Served) -> None:
    fn = served.function("/json")

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"x" * 100_000

    response = fn.call("POST", content=chunks())  # no Content-Length: chunked
    assert (response.status_code, error(response)) == (413, "Request body too large (max 1MB)")
    assert fn.call("POST", content=iter([b"y" * 1000, b"z" * 1000])).status_code == 200
    assert served.third_party.last.body == b"y" * 1000 + b"z" * 1000
    assert len(served.third_party.received) == 1


def test_function_runtime_unresolved_secret_is_500(served: Served) -> None:
    fn = served.function("/json", mappings=[{"variable": "GONE", "inject_as": "header", "key": "api-key"}])
    response = fn.call("POST")
    assert (response.status_code, error(response)) == (500, "Failed to resolve proxy configuration")
    assert served.third_party.received == []


def test_function_runtime_unreachable_target_is_502_and_slow_target_504(served: Served) -> None:
    ledger = served.record_calls()
    fn = make_function(served.gateway, f"http://127.0.0.1:{closed_port()}/x")
    response = fn.call("POST")
    assert (response.status_code, error(response)) == (502, "Failed to reach target API")
    assert response.headers[CORS] == "*"
    request_id = response.headers["x-request-id"]
    assert [(c.what, c.status, c.error_type) for c in ledger.of(request_id)] == [
        ("admit", 0, ErrorType.NONE),
        ("finish", 502, ErrorType.UNREACHABLE),
    ]
    slow = served.function("/sleep?s=3", timeout_ms=300)
    response = slow.call("POST")
    assert (response.status_code, error(response)) == (504, "Gateway timeout: target API did not respond in time")
    assert [(c.what, c.status, c.error_type) for c in ledger.of(response.headers["x-request-id"])][-1] == (
        "finish",
        504,
        ErrorType.TIMEOUT,
    )


def test_function_runtime_passes_back_only_content_type_and_encoding(served: Served) -> None:
    headers = served.function("/headers").call("POST")
    assert headers.status_code == 200
    for stripped in ("set-cookie", "x-upstream-secret"):
        assert stripped not in headers.headers, stripped
    assert headers.headers.get("server") != "third-party/1.0"
    assert headers.headers[CORS] == "*"  # ours, not the target's
    binary = served.function("/binary").call("POST")
    assert (binary.content, binary.headers["content-type"]) == (BINARY, "application/octet-stream")
    text = served.function("/text").call("POST")
    assert (text.text, text.headers["content-type"]) == ("hello, world", "text/plain; charset=utf-8")
    chunked = served.function("/chunked").call("POST")
    assert chunked.text == "one,two,three"
    # Bytes pass through still encoded, with the target's Content-Encoding: what the client
    # decodes is what the target meant (and the target was asked for no encoding at all).
    fn = served.function("/gzip")
    response = httpx.post(fn.url, headers={"x-proxy-token": fn.token, "Accept-Encoding": "identity"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.json() == {"compressed": True}  # httpx undid the gzip the header names
    assert served.third_party.last.headers["accept-encoding"] == "identity"
    with httpx.stream("POST", fn.url, headers={"x-proxy-token": fn.token}) as raw:
        assert gzip.decompress(b"".join(raw.iter_raw())) == b'{"compressed": true}'


def test_function_runtime_does_not_follow_redirects(served: Served) -> None:
    response = served.function("/redirect").call("POST")
    assert response.status_code == 302
    assert "location" not in response.headers
    assert [r.path for r in served.third_party.received] == ["/redirect"]


def test_function_runtime_target_breaking_mid_body_aborts_the_answer(served: Served) -> None:
    ledger = served.record_calls()
    fn = served.function("/break")
    try:
        response = fn.call("POST")
    except httpx.HTTPError:
        pass  # the connection was closed before the declared length: the client sees an error
    else:
        raise AssertionError(f"a truncated body was passed as whole: {response.status_code} {response.content!r}")
    finishes = [c for c in ledger.calls if c.what == "finish"]
    assert [(c.status, c.error_type) for c in finishes] == [(200, ErrorType.TARGET_ERROR)]


def test_function_runtime_ledger_sees_every_call_once(served: Served) -> None:
    ledger = served.record_calls()
    served.gateway.clock.set_now(datetime.now(UTC).replace(second=0, microsecond=0))  # no minute ends mid-test
    fn = served.function("/json", rate_limit_per_minute=1, allowed_origins=[ORIGIN])
    ok = fn.call("POST", headers={"Origin": ORIGIN})
    limited = fn.call("POST", headers={"Origin": ORIGIN})
    refused_early = fn.call("POST", token="bad", headers={"Origin": ORIGIN})
    assert [ok.status_code, limited.status_code, refused_early.status_code] == [200, 429, 401]
    ids = [r.headers["x-request-id"] for r in (ok, limited, refused_early)]
    assert len(set(ids)) == 3

    def finished(request_id: str) -> list[Recorded]:
        # A call is finished once its answer has gone out: on a busy machine the client may read
        # the answer before the finish is recorded, so wait (bounded) for it rather than race it.
        deadline = time.monotonic() + 15
        while len(ledger.of(request_id)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(ledger.of(request_id))

    assert [(c.what, c.status, c.error_type, c.origin) for c in finished(ids[0])] == [
        ("admit", 0, ErrorType.NONE, ""),
        ("finish", 200, ErrorType.NONE, ORIGIN),
    ]
    assert [(c.what, c.status, c.error_type) for c in ledger.of(ids[1])] == [("refused", 429, ErrorType.RATE_LIMITED)]
    assert ledger.of(ids[2]) == []  # envmanager: refusals before the rate limit are not counted
    target_error = served.function("/status/503").call("POST")
    assert [(c.what, c.error_type) for c in finished(target_error.headers["x-request-id"])] == [
        ("admit", ErrorType.NONE),
        ("finish", ErrorType.TARGET_ERROR),
    ]
    ledger.refuse = True
    broke = served.function("/json").call("POST")
    assert (broke.status_code, error(broke)) == (402, "Insufficient credits")
    assert [(c.what, c.status, c.error_type) for c in ledger.of(broke.headers["x-request-id"])] == [
        ("refused", 402, ErrorType.PAYMENT_REQUIRED)
    ]


def test_function_runtime_stream_finishes_when_the_client_goes_away(served: Served) -> None:
    ledger = served.record_calls()
    fn = served.function("/sse", method="GET")
    with httpx.stream("GET", fn.url, headers={"x-proxy-token": fn.token}, timeout=30) as response:
        request_id = response.headers["x-request-id"]
        assert next(response.iter_raw()) == SSE_FIRST
    # The client hung up while the target still holds its stream open: the call is finished
    # now (the target's response closed), not when the target would have ended.
    deadline = time.monotonic() + 15
    while [c.what for c in ledger.of(request_id)] != ["admit", "finish"]:
        assert time.monotonic() < deadline, ledger.of(request_id)
        time.sleep(0.02)
    assert not served.third_party.stream_finished.is_set()
    finish = ledger.of(request_id)[1]
    assert (finish.status, finish.error_type) == (200, ErrorType.NONE)
    served.third_party.release_stream()
    time.sleep(0.2)
    assert [c.what for c in ledger.of(request_id)] == ["admit", "finish"]  # once
