"""Webhook signing, retry delays and the private-address rule."""

from __future__ import annotations

from datetime import timedelta

import pytest

from billing.webhooks import retry_delay, signature_header, verify_signature
from gateway.webhooks import PrivateAddress, check_webhook_url, pin_public_address, system_resolver
from keys.restrictions import RestrictionError


def test_signature_is_hmac_sha256_over_timestamp_and_body() -> None:
    header = signature_header("whsec_x", 1_700_000_000, b'{"event":"low_credits"}')
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify_signature("whsec_x", header, b'{"event":"low_credits"}')
    assert not verify_signature("whsec_x", header, b'{"event":"low_credits" }')
    assert not verify_signature("whsec_x", header.replace("t=1700000000", "t=1700000001"), b'{"event":"low_credits"}')
    assert not verify_signature("whsec_x", "garbage", b"")


def test_retry_delays_grow_and_are_capped() -> None:
    assert [retry_delay(n, 10) for n in (1, 2, 3)] == [timedelta(seconds=s) for s in (10, 30, 90)]
    assert retry_delay(20, 10) == timedelta(hours=6)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "https://10.0.0.1/",
        "http://[::1]:8080/",
        "http://169.254.169.254/latest",
        "http://localhost/",
    ],
)
def test_private_urls_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(RestrictionError):
        check_webhook_url(url, allow_private=False)
    check_webhook_url(url, allow_private=True)


def test_public_urls_and_names_pass_the_configuration_check() -> None:
    check_webhook_url("https://hooks.example.com/tollway", allow_private=False)
    check_webhook_url("https://8.8.8.8/hook", allow_private=False)


async def test_names_are_checked_by_what_they_resolve_to() -> None:
    for url in ("http://localhost:9/x", "http://[::ffff:10.0.0.1]/x"):  # localhost: no network needed
        with pytest.raises(PrivateAddress):
            await pin_public_address(url, system_resolver)
    pinned = await pin_public_address("https://1.1.1.1/x", system_resolver)
    assert str(pinned.url) == "https://1.1.1.1/x" and pinned.sni_hostname is None


class RebindingDns:
    """Answers a public address on the first lookup and loopback on every later one."""

    def __init__(self) -> None:
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        return ["93.184.216.34"] if len(self.lookups) == 1 else ["127.0.0.1"]


async def test_webhook_pin_connects_to_the_address_it_checked() -> None:
    dns = RebindingDns()
    pinned = await pin_public_address("https://hooks.example.com:8443/in?x=1", dns)
    assert str(pinned.url) == "https://93.184.216.34:8443/in?x=1"
    assert pinned.host_header == "hooks.example.com:8443" and pinned.sni_hostname == "hooks.example.com"
    assert dns.lookups == ["hooks.example.com"]  # one lookup: nothing left for a second answer to change


async def test_webhook_pin_refuses_a_name_with_any_private_address() -> None:
    async def mixed(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]

    with pytest.raises(PrivateAddress):
        await pin_public_address("https://hooks.example.com/", mixed)
