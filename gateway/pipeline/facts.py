"""Who is calling: client IP (through trusted proxies), country and origin, once per request.

The right-most ``X-Forwarded-For`` hop that is not one of our trusted proxies is the client:
everything left of it was written by the client itself and can be forged. The country header
is believed only when it arrives through a trusted proxy, for the same reason; without it the
country comes from the operator's local MaxMind database, looked up by the client IP.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Mapping

from keys.chain import RequestFacts
from keys.restrictions import IPAddress, IPNetwork, origin_host


def _parse_ip(value: str) -> IPAddress | None:
    # Kept per text: the same peers ask again and again, and ``ip_address`` parses in Python
    # (~1 % of a chat request's CPU). Only short texts are kept (no address is longer), so a
    # client's forwarded-for hops can neither grow the cache nor fill it with big strings.
    return _parse_short_ip(value) if len(value) <= 96 else _parse_any_ip(value)


@functools.lru_cache(maxsize=4096)
def _parse_short_ip(value: str) -> IPAddress | None:
    return _parse_any_ip(value)


def _parse_any_ip(value: str) -> IPAddress | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # [2001:db8::1]:443
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # 203.0.113.5:443
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, proxies: tuple[IPNetwork, ...]) -> bool:
    return any(address in network for network in proxies)


def client_ip(peer: str | None, forwarded_for: str | None, proxies: tuple[IPNetwork, ...]) -> IPAddress | None:
    address = _parse_ip(peer) if peer else None
    if address is None or not forwarded_for or not _trusted(address, proxies):
        return address
    for hop in reversed(forwarded_for.split(",")):
        hop_address = _parse_ip(hop)
        if hop_address is None:
            return address  # a garbled hop: trust nothing further left
        address = hop_address
        if not _trusted(hop_address, proxies):
            return hop_address
    return address


def request_facts(
    peer: str | None,
    headers: Mapping[str, str],
    *,
    trusted_proxies: tuple[IPNetwork, ...],
    country_header: str,
    fail_closed_on_unknown_country: bool,
    country_lookup: Callable[[IPAddress], str | None] | None = None,
) -> RequestFacts:
    peer_address = _parse_ip(peer) if peer else None
    address = client_ip(peer, headers.get("x-forwarded-for"), trusted_proxies)
    country = None
    if country_header and peer_address is not None and _trusted(peer_address, trusted_proxies):
        value = headers.get(country_header, "").strip().upper()
        # CDNs send XX or T1 (Tor) for "unknown"; treat anything but two letters as unknown.
        if len(value) == 2 and value.isalpha() and value not in {"XX", "T1"}:
            country = value
    if country is None and country_lookup is not None and address is not None:
        country = country_lookup(address)
    return RequestFacts(
        client_ip=address,
        origin=origin_host(headers.get("origin"), headers.get("referer")),
        country=country,
        fail_closed_on_unknown_country=fail_closed_on_unknown_country,
    )
