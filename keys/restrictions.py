"""Key restrictions: parsing operator input, and matching a request against it.

Parsing happens when a key is created or changed (errors name the field) and again when a
key is loaded into the resolver cache, so the request path only runs the cheap matchers on
already-parsed values: networks, minute windows, lowercase host patterns.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from datetime import datetime
from urllib.parse import urlsplit

import msgspec

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CATEGORIES = frozenset({"text", "image", "video", "stt", "tts"})
# Embeddings are text (docs/product-rules.md); keys made when they were a category of their own keep working.
_LEGACY_CATEGORIES = {"embedding": "text"}
PERIODS = frozenset({"daily", "weekly", "monthly"})

# ISO 3166-1 alpha-2, officially assigned codes.
COUNTRY_CODES = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW
    BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI
    FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN
    IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME
    MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF
    PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV
    SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE
    YT ZA ZM ZW
    """.split()
)

_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_MINUTES_PER_DAY = 24 * 60


class RestrictionError(ValueError):
    """A restriction value is malformed; ``field`` names the restriction."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class OriginPattern(msgspec.Struct, frozen=True):
    """``host`` exact, or ``*.suffix`` (``wildcard``: any subdomain, not the apex); ``port`` 0 = any."""

    host: str
    wildcard: bool = False
    port: int = 0

    def matches(self, host: str, port: int) -> bool:
        if self.port and self.port != port:
            return False
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host


class HoursWindow(msgspec.Struct, frozen=True):
    """Minutes after UTC midnight; ``start > end`` is an overnight window."""

    start: int
    end: int

    def contains(self, now: datetime) -> bool:
        minute = now.hour * 60 + now.minute
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


def parse_active_hours(value: str) -> HoursWindow | None:
    """``"HH:MM-HH:MM"`` in UTC, overnight allowed; ``""`` means no restriction."""
    if value == "":
        return None
    match = _HOURS.match(value)
    if match is None:
        raise RestrictionError("active_hours", f"expected HH:MM-HH:MM (UTC), got {value!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise RestrictionError("active_hours", "start and end are equal: the window would be empty or all day")
    return HoursWindow(start % _MINUTES_PER_DAY, end % _MINUTES_PER_DAY)


def parse_networks(values: Iterable[str], *, strict: bool = True) -> tuple[IPNetwork, ...]:
    """Addresses or CIDRs; ``strict`` refuses host bits set (``10.0.0.5/24``) as a likely typo."""
    networks: list[IPNetwork] = []
    for value in values:
        if not isinstance(value, str):
            raise RestrictionError("allowed_ips", f"not an address: {value!r}")
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=strict))
        except ValueError as error:
            raise RestrictionError("allowed_ips", f"{value!r} is not an IP address or CIDR ({error})") from error
    return tuple(networks)


def _valid_hostname(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        pass
    labels = host.split(".")
    return len(host) <= 253 and len(labels) >= 2 and all(_LABEL.match(label) for label in labels)


def parse_origin(value: str) -> OriginPattern:
    """``myapp.com``, ``localhost``, ``*.myapp.com``, each optionally with ``:port``."""
    if not isinstance(value, str) or not value or value != value.strip():
        raise RestrictionError("allowed_origins", f"not a host or pattern: {value!r}")
    raw = value.lower()
    if "/" in raw or "@" in raw or "?" in raw or "#" in raw:
        raise RestrictionError("allowed_origins", f"{value!r}: give a host such as myapp.com or *.myapp.com, not a URL")
    wildcard = raw.startswith("*.")
    if wildcard:
        raw = raw[2:]
    host, port = raw, 0
    if raw.startswith("["):  # [::1]:8080
        end = raw.find("]")
        host, rest = raw[1:end], raw[end + 1 :]
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise RestrictionError("allowed_origins", f"{value!r}: bad port")
            port = int(rest[1:])
    elif raw.count(":") == 1:
        host, _, port_text = raw.partition(":")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise RestrictionError("allowed_origins", f"{value!r}: bad port")
        port = int(port_text)
    if "*" in host or not _valid_hostname(host) or (wildcard and host == "localhost"):
        raise RestrictionError("allowed_origins", f"not a host or pattern: {value!r}")
    return OriginPattern(host=host, wildcard=wildcard, port=port)


def parse_origins(values: Iterable[str]) -> tuple[OriginPattern, ...]:
    return tuple(parse_origin(value) for value in values)


def parse_countries(values: Iterable[str]) -> frozenset[str]:
    codes = set()
    for value in values:
        code = value.upper() if isinstance(value, str) else value
        if code not in COUNTRY_CODES:
            raise RestrictionError("blocked_countries", f"{value!r} is not an ISO 3166-1 alpha-2 country code")
        codes.add(code)
    return frozenset(codes)


def parse_categories(values: Iterable[str]) -> frozenset[str]:
    categories = frozenset(_LEGACY_CATEGORIES.get(value, value) for value in values)
    unknown = categories - CATEGORIES
    if unknown:
        raise RestrictionError("allowed_categories", f"unknown {sorted(unknown)}; use {', '.join(sorted(CATEGORIES))}")
    return categories


def parse_period(value: str) -> str:
    if value not in PERIODS:
        raise RestrictionError("spending_period", f"{value!r}: use daily, weekly or monthly")
    return value


def origin_host(origin: str | None, referer: str | None) -> tuple[str, int] | None:
    """(host, port) of the ``Origin`` header, else of the ``Referer``; ``None`` when neither."""
    for header in (origin, referer):
        if not header or header == "null":
            continue
        try:
            parts = urlsplit(header)
            host, port = parts.hostname, parts.port
        except ValueError:
            continue
        if host:
            default = 443 if parts.scheme == "https" else 80
            return host.lower(), port or default
    return None


def origin_allowed(patterns: tuple[OriginPattern, ...], host: str, port: int) -> bool:
    return any(pattern.matches(host, port) for pattern in patterns)


def ip_allowed(networks: tuple[IPNetwork, ...], address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)
