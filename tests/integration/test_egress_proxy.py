"""``egress_proxy``: every upstream provider call goes through the operator's HTTP proxy, with the
proxy's credentials sent to the proxy alone and never printed; without the setting, the
environment's HTTP(S)_PROXY is still ignored (trust_env stays off)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import msgspec
import pytest

from gateway.settings import MASK, load_settings, redacted
from tests.fakes.gateway_fixtures import FAKE_MODEL, Backend, gateway_settings, start_gateway
from tests.fakes.http_proxy import HttpProxy
from tests.fakes.openai_upstream import FakeOpenAI

PROXY_USER, PROXY_PASSWORD = "egress", "proxy-password-never-printed"
PROXY_AUTHORIZATION = "Basic ZWdyZXNzOnByb3h5LXBhc3N3b3JkLW5ldmVyLXByaW50ZWQ="  # base64 of user:password
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def proxy() -> Iterator[HttpProxy]:
    running = HttpProxy(credentials=(PROXY_USER, PROXY_PASSWORD)).start()
    try:
        yield running
    finally:
        running.stop()


def _chat(url: str, key: str, **extra: object) -> httpx.Response:
    # trust_env=False: the test's own client must not take the HTTP_PROXY the next test sets.
    with httpx.Client(trust_env=False, timeout=30) as client:
        return client.post(
            f"{url}/v1/chat/completions",
            json={"model": FAKE_MODEL, "messages": HI, **extra},
            headers={"authorization": f"Bearer {key}"},
        )


def test_egress_proxy_carries_every_upstream_call(
    backend: Backend, fake_openai: FakeOpenAI, proxy: HttpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    egress = f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{proxy.port}"
    gateway, server = start_gateway(gateway_settings(backend, fake_openai, egress_proxy=egress), fake_openai)
    caplog.set_level(logging.DEBUG)
    try:
        answer = _chat(gateway.url, gateway.key)
        assert answer.status_code == 200, answer.text
        streamed = _chat(gateway.url, gateway.key, stream=True)
        assert streamed.status_code == 200 and "data: [DONE]" in streamed.text
    finally:
        server.stop()
    upstream = f"{fake_openai.url}/v1/chat/completions"  # type: ignore[attr-defined]
    assert [request.target for request in proxy.requests] == [upstream, upstream]
    assert {request.method for request in proxy.requests} == {"POST"}
    # The proxy saw its credentials; the provider never did, and no log line holds them.
    assert {request.proxy_authorization for request in proxy.requests} == {PROXY_AUTHORIZATION}
    assert len(fake_openai.received) == 2
    assert all("proxy-authorization" not in request.headers for request in fake_openai.received)
    assert PROXY_PASSWORD not in caplog.text


def test_egress_proxy_tunnels_https_upstreams_with_connect(
    backend: Backend, fake_openai: FakeOpenAI, proxy: HttpProxy
) -> None:
    # An https upstream: the proxy is asked for a CONNECT tunnel, credentials on the CONNECT (the
    # fake upstream speaks plain HTTP, so the TLS handshake inside the tunnel then fails: 502).
    https_base = fake_openai.url.replace("http://", "https://") + "/v1"  # type: ignore[attr-defined]
    base = gateway_settings(backend, fake_openai)
    provider = msgspec.structs.replace(base.providers["fake"], base_url=https_base)
    settings = msgspec.structs.replace(
        base,
        providers={"fake": provider},
        egress_proxy=f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{proxy.port}",
        retry_attempts=1,
    )
    gateway, server = start_gateway(settings, fake_openai)
    try:
        answer = _chat(gateway.url, gateway.key)
    finally:
        server.stop()
    assert answer.status_code == 502
    host_port = fake_openai.url.removeprefix("http://")  # type: ignore[attr-defined]
    assert [(r.method, r.target, r.proxy_authorization) for r in proxy.requests] == [
        ("CONNECT", host_port, PROXY_AUTHORIZATION)
    ]
    assert fake_openai.received == []


def test_environment_proxy_is_ignored_without_egress_proxy(
    backend: Backend, fake_openai: FakeOpenAI, proxy: HttpProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(variable, proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    gateway, server = start_gateway(gateway_settings(backend, fake_openai), fake_openai)
    try:
        assert _chat(gateway.url, gateway.key).status_code == 200
    finally:
        server.stop()
    assert proxy.requests == [] and len(fake_openai.received) == 1


def test_egress_proxy_refusing_the_credentials_fails_the_call(
    backend: Backend, fake_openai: FakeOpenAI, proxy: HttpProxy
) -> None:
    egress = f"http://{PROXY_USER}:wrong-password@127.0.0.1:{proxy.port}"
    gateway, server = start_gateway(
        gateway_settings(backend, fake_openai, egress_proxy=egress, retry_attempts=1), fake_openai
    )
    try:
        answer = _chat(gateway.url, gateway.key)
    finally:
        server.stop()
    # The proxy's 407 is the gateway's credentials failing, never the caller's to answer.
    assert answer.status_code == 502 and answer.json()["error"]["code"] == "upstream_auth_failed"
    assert "wrong-password" not in answer.text
    assert fake_openai.received == []  # nothing got past the proxy
    assert len(proxy.requests) == 1


def test_egress_proxy_password_is_masked_when_settings_are_printed() -> None:
    settings = load_settings(env={"TOLLWAY_EGRESS_PROXY": f"http://{PROXY_USER}:{PROXY_PASSWORD}@proxy.internal:3128"})
    assert settings.egress_proxy.endswith("@proxy.internal:3128")
    shown = redacted(settings)
    assert shown["egress_proxy"] == f"http://{PROXY_USER}:{MASK}@proxy.internal:3128"
    assert PROXY_PASSWORD not in msgspec.json.encode(shown).decode()
