"""What a function sends upstream, through the real HTTP app on both backends: every injection
kind with templates, each body mode, extra path and query forwarding and their refusals, SSE
passed through as it is produced, and nothing of the client's own headers."""

# ruff: noqa: F811 (the fixtures are imported by name)
from __future__ import annotations

import json
import threading

import httpx

from tests.fakes.function_calls import Served, served, third_party  # noqa: F401
from tests.fakes.third_party import BINARY, SSE_FIRST, SSE_REST

SECRET = "sk_live_" + "5" * 24
OTHER = "tok-" + "7" * 20


def test_function_runtime_injects_headers_with_templates_over_static_headers(served: Served) -> None:
    fn = served.function(
        "/json",
        headers={"authorization": "static-will-be-replaced", "Accept": "application/json", "X-App": "demo"},
        secrets_by_key={"API_KEY": SECRET, "OTHER": OTHER},
        mappings=[
            {"variable": "API_KEY", "inject_as": "header", "key": "Authorization", "template": "Bearer ${value}"},
            {"variable": "OTHER", "inject_as": "header", "key": "X-Both", "template": "${value}|${value}"},
        ],
    )
    assert fn.call("POST").status_code == 200
    received = served.third_party.last
    assert received.headers["authorization"] == f"Bearer {SECRET}"  # a mapping wins, whatever the case
    assert [name for name, _ in received.header_list].count("authorization") == 1
    assert received.headers["x-both"] == f"{OTHER}|${{value}}"  # only the first ${value} (envmanager)
    assert received.headers["accept"] == "application/json"
    assert received.headers["x-app"] == "demo"


def test_function_runtime_injects_query_parameters_and_sets_them_over_the_callers(served: Served) -> None:
    fn = served.function(
        "/json?fixed=1&api_key=target-default",
        forward_query=True,
        secrets_by_key={"API_KEY": SECRET, "OTHER": OTHER},
        mappings=[
            {"variable": "API_KEY", "inject_as": "query", "key": "api_key"},
            {"variable": "OTHER", "inject_as": "query", "key": "auth", "template": "Token ${value}"},
        ],
    )
    assert fn.call("POST", params={"q": "a b&c", "api_key": "caller-tries-its-own"}).status_code == 200
    query = httpx.QueryParams(served.third_party.last.query)
    assert query.get_list("api_key") == [SECRET]  # the caller cannot replace the secret
    assert query["auth"] == f"Token {OTHER}"
    assert (query["fixed"], query["q"]) == ("1", "a b&c")


def test_function_runtime_body_template_with_dotted_secrets(served: Served) -> None:
    fn = served.function(
        "/json",
        pass_through_body=False,
        body_template={"sender": {"name": "Site"}, "credentials": "replaced-by-an-object", "n": 1},
        secrets_by_key={"API_KEY": SECRET, "OTHER": OTHER},
        mappings=[
            {"variable": "API_KEY", "inject_as": "body", "key": "credentials.token"},
            {"variable": "OTHER", "inject_as": "body", "key": "sender.key", "template": "k-${value}"},
        ],
    )
    assert fn.call("POST", json={"ignored": "the template wins"}).status_code == 200
    received = served.third_party.last
    assert received.json == {
        "sender": {"name": "Site", "key": f"k-{OTHER}"},
        "credentials": {"token": SECRET},
        "n": 1,
    }
    assert received.headers["content-type"] == "application/json"
    # The template wins even when pass-through is on (envmanager), and is sent as it is.
    plain = served.function("/json", pass_through_body=True, body_template=[1, 2, {"a": None}])
    assert plain.call("POST", content=b'{"client": 1}').status_code == 200
    assert served.third_party.last.json == [1, 2, {"a": None}]


def test_function_runtime_client_json_gets_body_secrets_merged(served: Served) -> None:
    fn = served.function(
        "/json",
        secrets_by_key={"API_KEY": SECRET},
        mappings=[{"variable": "API_KEY", "inject_as": "body", "key": "auth.api_key"}],
    )
    client = {"to": [{"email": "a@b.test"}], "auth": {"api_key": "caller", "keep": True}}
    assert fn.call("POST", json=client).status_code == 200
    assert served.third_party.last.json == {"to": [{"email": "a@b.test"}], "auth": {"api_key": SECRET, "keep": True}}
    assert served.third_party.last.headers["content-type"] == "application/json"
    # No client body: the secrets alone.
    assert fn.call("POST").status_code == 200
    assert served.third_party.last.json == {"auth": {"api_key": SECRET}}
    # A JSON body that is not an object cannot take them: it passes through unchanged.
    assert fn.call("POST", content=b"[1,2]", headers={"Content-Type": "application/json"}).status_code == 200
    assert served.third_party.last.body == b"[1,2]"


def test_function_runtime_non_json_bodies_pass_through_byte_for_byte(served: Served) -> None:
    fn = served.function("/json")
    form = b"amount=2000&currency=eur&source=tok_visa&description=caf%C3%A9+%26+more"
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    assert fn.call("POST", content=form, headers=form_type).status_code == 200
    received = served.third_party.last
    assert received.body == form
    assert received.headers["content-type"] == "application/x-www-form-urlencoded"
    assert fn.call("POST", content=BINARY, headers={"Content-Type": "application/octet-stream"}).status_code == 200
    assert (served.third_party.last.body, served.third_party.last.headers["content-type"]) == (
        BINARY,
        "application/octet-stream",
    )
    raw_json = b'{ "spaced" :  true ,"order":[2,1] }'
    assert fn.call("POST", content=raw_json, headers={"Content-Type": "application/json"}).status_code == 200
    assert served.third_party.last.body == raw_json  # nothing to merge: not even re-encoded
    # A static Content-Type (the Stripe template's) is the operator's: it wins over the client's.
    stripe = served.function("/json", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert stripe.call("POST", content=b"a=1", headers={"Content-Type": "text/plain"}).status_code == 200
    assert served.third_party.last.headers["content-type"] == "application/x-www-form-urlencoded"
    # GET sends no body whatever the client sent, and an empty object is not sent.
    getter = served.function("/json", method="GET", body_template={})
    assert getter.call("GET", content=b"ignored").status_code == 200
    assert (served.third_party.last.method, served.third_party.last.body) == ("GET", b"")
    assert "content-type" not in served.third_party.last.headers


def test_function_runtime_client_headers_never_reach_the_target(served: Served) -> None:
    fn = served.function("/json", headers={"X-Static": "yes"}, allowed_origins=["https://app.example.com"])
    sent = {
        "Origin": "https://app.example.com",
        "Cookie": "session=browser-cookie",
        "Authorization": "Bearer client-credential",
        "X-Custom": "client",
        "Accept": "text/html",
        "Accept-Language": "fr",
        "Referer": "https://app.example.com/page",
        "X-Forwarded-For": "10.1.2.3",
        "Content-Type": "application/json",
    }
    assert fn.call("POST", json={"a": 1}, headers=sent).status_code == 200
    received = served.third_party.last
    names = {name for name, _ in received.header_list}
    assert names <= {"host", "content-length", "content-type", "x-static", "accept", "accept-encoding", "user-agent"}
    assert received.headers["accept"] != "text/html"
    assert fn.token not in json.dumps(received.header_list)
    for value in ("browser-cookie", "client-credential", "client", "10.1.2.3", "fr"):
        assert all(value not in header for _name, header in received.header_list), value


def test_function_runtime_forwards_extra_path_and_query(served: Served) -> None:
    fn = served.function("/v1/?base=1", forward_path=True, forward_query=True, method="GET")
    assert fn.call("GET", "/customers/cus_42%20x", params={"expand": "a b"}).status_code == 200
    received = served.third_party.last
    assert received.path == "/v1/customers/cus_42%20x"
    assert received.query == "base=1&expand=a+b"
    assert fn.call("GET").status_code == 200
    assert (served.third_party.last.path, served.third_party.last.query) == ("/v1/", "base=1")
    for refused in ("/a/../b", "/..", "/%2e%2e/x", "/a/%2E./x", "/a%2Fb", "/a%5cb", "/a//b", "/./a", "/a\\b", "/%00"):
        status, body = fn.raw_call("GET", refused)
        assert (status, json.loads(body)) == (400, {"error": "Invalid path"}), refused
    assert len(served.third_party.received) == 2
    # Without forward_query the caller's query string is dropped (envmanager).
    fixed = served.function("/json?only=this", method="GET")
    assert fixed.call("GET", params={"extra": "1"}).status_code == 200
    assert served.third_party.last.query == "only=this"


def test_function_runtime_streams_sse_as_the_target_produces_it(served: Served) -> None:
    fn = served.function("/sse", method="GET")
    released = threading.Timer(20, served.third_party.release_stream)  # never hang the suite
    released.start()
    try:
        with httpx.stream("GET", fn.url, headers={"x-proxy-token": fn.token}, timeout=30) as response:
            assert response.headers["content-type"] == "text/event-stream"
            chunks = response.iter_raw()
            first = next(chunks)
            # The first event is here while the target is still holding the rest back.
            assert first == SSE_FIRST
            assert not served.third_party.stream_finished.is_set()
            served.third_party.release_stream()
            rest = b"".join(chunks)
        assert rest == b"".join(SSE_REST)
    finally:
        released.cancel()
