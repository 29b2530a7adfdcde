"""Parsing and matching key restrictions; property tests for origins and CIDRs."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys.restrictions import (
    HoursWindow,
    RestrictionError,
    ip_allowed,
    origin_allowed,
    origin_host,
    parse_active_hours,
    parse_categories,
    parse_countries,
    parse_networks,
    parse_origin,
    parse_origins,
    parse_period,
)


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, 22, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "inside", "outside"),
    [
        ("09:00-18:00", [at(9), at(17, 59)], [at(8, 59), at(18), at(23)]),
        ("22:00-06:00", [at(22), at(23, 59), at(0), at(5, 59)], [at(6), at(12), at(21, 59)]),
    ],
)
def test_restrictions_active_hours(value: str, inside: list[datetime], outside: list[datetime]) -> None:
    window = parse_active_hours(value)
    assert window is not None
    assert all(window.contains(t) for t in inside)
    assert not any(window.contains(t) for t in outside)


@pytest.mark.parametrize("bad", ["9:00-18:00", "09:00-24:00", "09:60-10:00", "09:00", "09:00-09:00", "x"])
def test_restrictions_active_hours_invalid(bad: str) -> None:
    with pytest.raises(RestrictionError) as caught:
        parse_active_hours(bad)
    assert caught.value.field == "active_hours"


def test_restrictions_empty_hours_means_none() -> None:
    assert parse_active_hours("") is None


@pytest.mark.parametrize("bad", ["10.0.0.5/24", "300.1.1.1", "10.0.0.0/33", "example.com", "", "::1/129"])
def test_restrictions_ips_invalid(bad: str) -> None:
    with pytest.raises(RestrictionError) as caught:
        parse_networks([bad])
    assert caught.value.field == "allowed_ips"


def test_restrictions_ip_matching_v4_v6_and_mapped() -> None:
    networks = parse_networks(["10.0.0.0/8", "2001:db8::/32", "203.0.113.7"])
    assert ip_allowed(networks, ipaddress.ip_address("10.1.2.3"))
    assert ip_allowed(networks, ipaddress.ip_address("2001:db8::42"))
    assert ip_allowed(networks, ipaddress.ip_address("::ffff:203.0.113.7"))
    assert not ip_allowed(networks, ipaddress.ip_address("203.0.113.8"))
    assert not ip_allowed(networks, ipaddress.ip_address("2001:db9::1"))


@given(st.ip_addresses(v=4), st.integers(min_value=0, max_value=32))
def test_restrictions_cidr_matches_exactly_its_range(address: ipaddress.IPv4Address, prefix: int) -> None:
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    networks = parse_networks([str(network)])
    assert ip_allowed(networks, address)
    first, last = int(network.network_address), int(network.broadcast_address)
    if first > 0:
        assert not ip_allowed(networks, ipaddress.IPv4Address(first - 1))
    if last < 2**32 - 1:
        assert not ip_allowed(networks, ipaddress.IPv4Address(last + 1))


@pytest.mark.parametrize(
    ("pattern", "allowed", "refused"),
    [
        ("myapp.com", [("myapp.com", 443), ("myapp.com", 8080)], [("evil.com", 443), ("sub.myapp.com", 443)]),
        ("*.myapp.com", [("a.myapp.com", 443), ("a.b.myapp.com", 80)], [("myapp.com", 443), ("amyapp.com", 443)]),
        ("localhost", [("localhost", 3000), ("localhost", 80)], [("localhost.evil.com", 80)]),
        ("127.0.0.1:5173", [("127.0.0.1", 5173)], [("127.0.0.1", 5174)]),
    ],
)
def test_restrictions_origin_matching(
    pattern: str, allowed: list[tuple[str, int]], refused: list[tuple[str, int]]
) -> None:
    patterns = parse_origins([pattern])
    assert all(origin_allowed(patterns, *o) for o in allowed)
    assert not any(origin_allowed(patterns, *o) for o in refused)


@pytest.mark.parametrize(
    "bad", ["https://myapp.com", "myapp.com/path", "*", "*.com", "my app.com", "-x.com", "a.*.com", "x.com:0", ""]
)
def test_restrictions_origins_invalid(bad: str) -> None:
    with pytest.raises(RestrictionError) as caught:
        parse_origin(bad)
    assert caught.value.field == "allowed_origins"


labels = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)


@given(st.lists(labels, min_size=2, max_size=4), labels)
def test_restrictions_wildcard_never_matches_lookalikes(parts: list[str], extra: str) -> None:
    domain = ".".join(parts)
    patterns = parse_origins([f"*.{domain}"])
    assert origin_allowed(patterns, f"{extra}.{domain}", 443)
    assert not origin_allowed(patterns, domain, 443)
    # Any other host is allowed exactly when it is a proper subdomain, however it was built.
    for host in (f"{extra}{domain}", f"{domain}.{extra}", f"{domain}{extra}"):
        assert origin_allowed(patterns, host, 443) == host.endswith("." + domain)


def test_restrictions_origin_header_then_referer() -> None:
    assert origin_host("https://app.example.com", "https://other.com/page") == ("app.example.com", 443)
    assert origin_host(None, "http://localhost:3000/x?y") == ("localhost", 3000)
    assert origin_host("null", None) is None
    assert origin_host(None, None) is None


def test_restrictions_countries_categories_periods() -> None:
    assert parse_countries(["ru", "CN"]) == frozenset({"RU", "CN"})
    with pytest.raises(RestrictionError, match="blocked_countries"):
        parse_countries(["XX"])
    assert parse_categories(["text", "tts"]) == frozenset({"text", "tts"})
    with pytest.raises(RestrictionError, match="allowed_categories"):
        parse_categories(["audio"])
    assert parse_period("weekly") == "weekly"
    with pytest.raises(RestrictionError, match="spending_period"):
        parse_period("yearly")


def test_restrictions_overnight_window_type() -> None:
    assert parse_active_hours("22:00-06:00") == HoursWindow(start=22 * 60, end=6 * 60)
