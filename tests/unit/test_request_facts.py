from __future__ import annotations

import ipaddress

from gateway.pipeline.facts import client_ip, request_facts
from keys.restrictions import parse_networks

PROXIES = parse_networks(["10.0.0.0/8", "::1/128"], strict=False)


def test_facts_peer_is_client_without_trusted_proxy() -> None:
    assert client_ip("203.0.113.9", "1.2.3.4", PROXIES) == ipaddress.ip_address("203.0.113.9")


def test_facts_rightmost_untrusted_hop() -> None:
    # The client wrote "6.6.6.6" itself; 198.51.100.7 reached our proxy 10.0.0.2.
    assert client_ip("10.0.0.1", "6.6.6.6, 198.51.100.7, 10.0.0.2", PROXIES) == ipaddress.ip_address("198.51.100.7")


def test_facts_ipv6_peer_and_ports() -> None:
    assert client_ip("::1", "[2001:db8::5]:443", PROXIES) == ipaddress.ip_address("2001:db8::5")
    assert client_ip("10.0.0.1", "203.0.113.5:51000", PROXIES) == ipaddress.ip_address("203.0.113.5")


def test_facts_garbled_hop_stops_trust() -> None:
    assert client_ip("10.0.0.1", "1.1.1.1, garbage", PROXIES) == ipaddress.ip_address("10.0.0.1")


def test_facts_country_header_only_through_trusted_proxy() -> None:
    headers = {"cf-ipcountry": "ru"}
    trusted = request_facts(
        "10.0.0.1", headers, trusted_proxies=PROXIES, country_header="cf-ipcountry", fail_closed_on_unknown_country=True
    )
    assert trusted.country == "RU"
    direct = request_facts(
        "203.0.113.1",
        headers,
        trusted_proxies=PROXIES,
        country_header="cf-ipcountry",
        fail_closed_on_unknown_country=True,
    )
    assert direct.country is None
    unknown = request_facts(
        "10.0.0.1",
        {"cf-ipcountry": "XX"},
        trusted_proxies=PROXIES,
        country_header="cf-ipcountry",
        fail_closed_on_unknown_country=True,
    )
    assert unknown.country is None


def test_facts_a_huge_forwarded_hop_is_refused_and_never_kept() -> None:
    from gateway.pipeline import facts

    before = facts._parse_short_ip.cache_info().currsize
    huge = " " * 20_000 + "198.51.100.7"
    assert client_ip("10.0.0.1", huge, PROXIES) == ipaddress.ip_address("198.51.100.7")  # parsed, as before
    assert client_ip("10.0.0.1", "1.1.1.1, " + "9" * 20_000, PROXIES) == ipaddress.ip_address("10.0.0.1")
    assert facts._parse_short_ip.cache_info().currsize <= before + 1  # only the short peer text
