"""The SSRF guard (functions/egress.py): every address form, names that resolve inside, a DNS
server that changes its answer between lookups (each connection connects to what was checked),
the operator's allow-list, redirects not followed; and the same refusals through ``/fn``."""

# ruff: noqa: F811 (the fixtures are imported by name)
from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from functions.egress import AllowedHosts, EgressPolicy, EgressRefused, FunctionEgress, is_public_address
from functions.ratelimit import RateLimiter
from functions.runtime import FunctionRuntime
from tests.fakes.function_calls import Served, make_function, served, third_party  # noqa: F401
from tests.fakes.third_party import ThirdParty, self_signed, start_third_party

NOWHERE = EgressPolicy()
LOOPBACK_ONLY = EgressPolicy.from_settings(["127.0.0.1/32"])

REFUSED_TARGETS = [
    "https://127.0.0.1/",
    "https://127.1/",
    "https://127.0.0.1./",
    "https://2130706433/",
    "https://0x7f000001/",
    "https://0x7f.1/",
    "https://0177.0.0.1/",
    "https://017700000001/",
    "https://[::1]/",
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:7f00:1]/",
    "https://[0:0:0:0:0:ffff:127.0.0.1]/",
    "https://[::127.0.0.1]/",
    "https://[::ffff:0:7f00:1]/",
    "https://[64:ff9b::7f00:1]/",
    "https://[64:ff9b::a00:1]/",
    "https://[2002:7f00:1::]/",
    "https://[2002:a9fe:a9fe::]/",
    "https://10.0.0.1/",
    "https://0x0a000001/",
    "https://172.16.5.4/",
    "https://192.168.1.1/",
    "https://169.254.169.254/latest/meta-data/",
    "https://[fd00:ec2::254]/",
    "https://[fe80::1]/",
    "https://[fec0::1]/",
    "https://[fc00::1]/",
    "https://100.64.0.1/",
    "https://0.0.0.0/",
    "https://0/",
    "https://[::]/",
    "https://224.0.0.1/",
    "https://[ff02::1]/",
    "https://240.0.0.1/",
    "https://255.255.255.255/",
    "https://198.18.0.1/",
    "https://192.0.2.1/",
    "https://192.0.0.8/",
    "https://[2001:db8::1]/",
    "https://localhost/",
    "https://LOCALHOST./",
    "https://api.localhost/",
    "https://%31%32%37.0.0.1/",
    "https://[fe80::1%25eth0]/",
    "http://api.example.com/",
    "http://8.8.8.8/",
    "ftp://api.example.com/",
    "https://user:pass@api.example.com/",
]


@pytest.mark.parametrize("target", REFUSED_TARGETS)
def test_function_ssrf_refuses_every_spelling_of_an_inside_address(target: str) -> None:
    with pytest.raises(EgressRefused):
        NOWHERE.check_target(target)


def test_function_ssrf_lets_public_https_targets_through() -> None:
    for target in (
        "https://api.example.com/v1/x?a=1",
        "https://8.8.8.8/",
        "https://[2606:4700:4700::1111]/",
        "https://[::ffff:8.8.8.8]/",
        "https://[64:ff9b::808:808]/",
        "https://[2002:808:808::1]/",
    ):
        NOWHERE.check_target(target)


def test_function_ssrf_address_classification() -> None:
    public = ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::"]
    inside = [
        "127.0.0.1",
        "10.1.2.3",
        "100.127.255.255",
        "169.254.169.254",
        "fd00:ec2::254",
        "::ffff:10.0.0.1",
        "::ffff:0:a00:1",
        "64:ff9b::a9fe:a9fe",
        "2002:c0a8:101::",
        "2001::1",
        "::a00:1",
        "ff05::1",
        "224.0.0.251",
        "192.88.99.1",
    ]
    assert all(is_public_address(ipaddress.ip_address(text)) for text in public)
    assert not any(is_public_address(ipaddress.ip_address(text)) for text in inside)


def test_function_ssrf_allow_list_opens_named_hosts_and_networks() -> None:
    allowed = EgressPolicy(AllowedHosts.parse(["127.0.0.1/32", "internal.example", "10.0.0.0/8"]))
    for target in (
        "http://127.0.0.1:8080/",
        "http://2130706433/",
        "http://[::ffff:127.0.0.1]/",
        "http://internal.example/x",
        "https://10.2.3.4/",
    ):
        allowed.check_target(target)
    for target in (
        "http://127.0.0.2/",
        "https://localhost/",
        "http://internal.example.org/",
        "http://10.0.0.1.nip.io/",
    ):
        with pytest.raises(EgressRefused):
            allowed.check_target(target)
    allowed.check_target("https://10.0.0.1.nip.io/")  # a name: judged by what it resolves to
    allowed.check_resolved("internal.example", ["10.9.9.9", "127.0.0.1"])
    allowed.check_resolved("svc.example", ["10.9.9.9"])
    with pytest.raises(EgressRefused):
        allowed.check_resolved("svc.example", ["10.9.9.9", "192.168.0.1"])
    with pytest.raises(EgressRefused):
        allowed.check_resolved("svc.example", [])


class ScriptedDNS(AbstractResolver):
    """Answers each lookup with the next answer of the script (the last one repeats)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answer = self.answers[min(len(self.lookups), len(self.answers) - 1)]
        self.lookups.append(host)
        return [
            ResolveResult(hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=0)
            for address in answer
        ]

    async def close(self) -> None:
        return None


@pytest.fixture
def tls_third_party(tmp_path: Path) -> Iterator[tuple[ThirdParty, int, ssl.SSLContext]]:
    cert, key, context = self_signed(tmp_path, "rebind.test")
    fake, server = start_third_party((cert, key))
    try:
        yield fake, server.port, context
    finally:
        server.stop()


@pytest.fixture
async def egress_closer() -> AsyncIterator[list[FunctionEgress]]:
    made: list[FunctionEgress] = []
    yield made
    for egress in made:
        await egress.aclose()


async def test_function_ssrf_name_resolving_to_loopback_is_refused(
    third_party: ThirdParty, egress_closer: list[FunctionEgress]
) -> None:
    port = httpx.URL(third_party.url).port
    dns = ScriptedDNS(["127.0.0.1"])
    egress = FunctionEgress(NOWHERE, resolver=lambda: dns, dns_cache_s=0)
    egress_closer.append(egress)
    with pytest.raises(EgressRefused):
        await egress.send(httpx.Request("GET", f"https://loopback.test:{port}/json"))
    assert dns.lookups == ["loopback.test"]
    assert third_party.received == []
    # The system resolver, too: "localhost" never reaches it.
    system = FunctionEgress(NOWHERE, dns_cache_s=0)
    egress_closer.append(system)
    with pytest.raises(EgressRefused):
        await system.send(httpx.Request("GET", f"https://localhost:{port}/json"))


async def test_function_ssrf_rebinding_dns_cannot_swap_the_checked_address(
    tls_third_party: tuple[ThirdParty, int, ssl.SSLContext], egress_closer: list[FunctionEgress]
) -> None:
    fake, port, context = tls_third_party
    # First lookup: an allowed address (the stand-in for a public one); every later lookup: one
    # inside. A guard that checked and then let the client resolve again would connect to the
    # second answer; here each connection connects to exactly what its one lookup returned.
    dns = ScriptedDNS(["127.0.0.1"], ["127.0.0.2"])
    egress = FunctionEgress(LOOPBACK_ONLY, resolver=lambda: dns, dns_cache_s=0, ssl_context=context)
    egress_closer.append(egress)
    url = f"https://rebind.test:{port}/json"
    response = await egress.send(httpx.Request("GET", url, headers={"Connection": "close"}))
    assert response.status_code == 200
    await response.aread()
    await response.aclose()
    assert dns.lookups == ["rebind.test"]  # one lookup for the connection, none after the check
    assert fake.last.headers["host"] == f"rebind.test:{port}"
    with pytest.raises(EgressRefused):
        await egress.send(httpx.Request("GET", url))  # a new connection, a new answer: refused
    assert dns.lookups == ["rebind.test", "rebind.test"]
    assert len(fake.received) == 1
    mixed = ScriptedDNS(["127.0.0.1", "127.0.0.2"])
    guarded = FunctionEgress(LOOPBACK_ONLY, resolver=lambda: mixed, dns_cache_s=0, ssl_context=context)
    egress_closer.append(guarded)
    with pytest.raises(EgressRefused):  # one bad address in the answer refuses the answer
        await guarded.send(httpx.Request("GET", url))
    assert len(fake.received) == 1


async def test_function_ssrf_allow_list_lets_loopback_through_and_redirects_stay_unfollowed(
    third_party: ThirdParty, egress_closer: list[FunctionEgress]
) -> None:
    egress = FunctionEgress(LOOPBACK_ONLY)
    egress_closer.append(egress)
    url = httpx.URL(third_party.url + "/redirect")
    LOOPBACK_ONLY.check_url(url)
    response = await egress.send(httpx.Request("GET", url))
    await response.aclose()
    assert response.status_code == 302
    assert [r.path for r in third_party.received] == ["/redirect"]
    with pytest.raises(EgressRefused):
        NOWHERE.check_url(url)


def test_function_ssrf_refusals_through_the_runtime(served: Served) -> None:
    port = httpx.URL(served.third_party.url).port
    for target in (
        "https://169.254.169.254/latest/meta-data/",
        "https://2130706434/",  # 127.0.0.2: loopback, and not the allowed 127.0.0.1/32
        "https://[::ffff:127.0.0.2]/",
        "https://0x0a000001/",
        "https://localhost/",
        "http://api.example.com/",
    ):
        response = make_function(served.gateway, target).call("POST")
        assert (response.status_code, response.json()) == (502, {"error": "Target address not allowed"}), target
    # A name whose DNS answer holds an inside address, resolved by the runtime's own transport.
    dns = ScriptedDNS(["127.0.0.1"], ["127.0.0.1", "10.0.0.7"])
    state = served.state
    # (The transport it replaces never opened a session: every call above was refused first.)
    state.function_client = FunctionEgress(state.function_client.policy, resolver=lambda: dns, dns_cache_s=0)
    state.function_runtime = FunctionRuntime(
        state.function_client,
        RateLimiter(state.counters, prefix="fn-ssrf:", clock=lambda: state.now().timestamp()),
        max_body_bytes=state.settings.function_max_body_bytes,
    )
    named = make_function(served.gateway, f"https://inside.test:{port}/json")
    response = named.call("POST")
    # The first answer was allowed; the fake speaks plain http, so the TLS handshake fails: 502.
    assert response.status_code == 502
    response = named.call("POST")
    assert (response.status_code, response.json()) == (502, {"error": "Target address not allowed"})
    assert served.third_party.received == []
