"""Webhook signing, retry delays and the private-address rule."""

from __future__ import annotations

from datetime import timedelta

import pytest

from billing.webhooks import retry_delay, signature_header, verify_signature
from gateway.webhooks import _resolves_private, check_webhook_url
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
    assert await _resolves_private("http://localhost:9/x")  # resolves to loopback, no network needed
    assert await _resolves_private("http://[::ffff:10.0.0.1]/x")
    assert not await _resolves_private("https://1.1.1.1/x")
