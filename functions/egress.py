"""The SSRF guard: where a proxy function's call may go, and the one client that takes it there.

A function's target is written by a member of an account; without a guard it could make the
gateway call into the operator's own network (``http://127.0.0.1:6379``, the cloud metadata
service at ``169.254.169.254``, a database on ``10.0.0.5``). The rules:

=========================  =====================================================================
what                       rule
=========================  =====================================================================
scheme                     ``https``; ``http`` only for a host ``function_allow_hosts`` allows
host text                  no ``%`` (encoded or scoped hosts), no user info; ``localhost`` and
                           ``*.localhost`` only when allowed by name
literal address            every spelling a URL parser or ``inet_aton`` accepts (``2130706433``,
                           ``0177.0.0.1``, ``0x7f.1``, ``127.1``, ``[::ffff:127.0.0.1]``) is read
                           as the address it is and must be public (or in an allowed network)
resolved name              every address the name resolves to must be public (or in an allowed
                           network); a name allowed by name may resolve anywhere
public                     not loopback, private, link-local, multicast, unspecified, reserved,
                           CGNAT (100.64/10), benchmarking, documentation, site-local, ULA
                           (which holds the metadata address ``fd00:ec2::254``); an IPv6 address
                           that embeds an IPv4 one (mapped ``::ffff:a.b.c.d``, translated
                           ``::ffff:0:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) is
                           judged by that IPv4 address; IPv4-compatible ``::a.b.c.d`` is reserved
redirects                  never followed: the target's 3xx goes back to the caller as it is
=========================  =====================================================================

The address checked is the address connected to. :class:`GuardedResolver` sits inside the
aiohttp connector of the shared transport: the connector asks it for a host's addresses when it
opens a connection, it checks every address the system resolver gave and hands back exactly
those, and the connector connects to one of them; nothing resolves the name a second time, so
a DNS server that answers a public address first and ``127.0.0.1`` next (DNS rebinding) cannot
slip the second answer past the check. The connector's DNS cache holds only answers that passed.
A literal address is never handed to a resolver by aiohttp, so it is checked from the URL
(:meth:`EgressPolicy.check_url`) before the request is sent: it cannot change in between.

Why not an ``httpx.AsyncClient``: one client serves every function of every account, and a
client keeps a cookie jar (a ``Set-Cookie`` from one tenant's target would ride along on another
tenant's call to the same host), follows redirects when asked, and logs every request's URL at
INFO (a query-string secret in a log line). :class:`FunctionEgress` sends ``httpx.Request``
objects straight to ``httpx_aiohttp``'s transport over an aiohttp session with no cookie jar,
no decompression (bytes pass through with their ``Content-Encoding``) and no proxies from the
environment.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from httpx_aiohttp import AiohttpTransport

__all__ = [
    "AllowedHosts",
    "EgressPolicy",
    "EgressRefused",
    "FunctionEgress",
    "GuardedResolver",
    "embedded_ipv4",
    "is_public_address",
    "literal_ip",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_NUMERIC_HOST = re.compile(r"^[0-9a-fx.]+\Z")
# Not caught by ``is_global``/``is_private`` on every Python we support: CGNAT (3.11 reads it as
# neither), the 6to4 relay anycast, and the IPv6 blocks 3.11 still calls global.
_NOT_PUBLIC: tuple[Network, ...] = (
    ipaddress.IPv4Network("100.64.0.0/10"),
    ipaddress.IPv4Network("192.0.0.0/24"),
    ipaddress.IPv4Network("192.88.99.0/24"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
    ipaddress.IPv6Network("2001::/23"),
    ipaddress.IPv6Network("2001:db8::/32"),
    ipaddress.IPv6Network("fc00::/7"),
    ipaddress.IPv6Network("fec0::/10"),
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_TRANSLATED_PREFIX = 0xFFFF0000  # ::ffff:0:a.b.c.d, the upper 96 bits


class EgressRefused(Exception):
    """The target is not a place a function may call; the message says why (no secret in it)."""


def literal_ip(host: str) -> Address | None:
    """The address a host name literally is, in any form a URL parser accepts: dotted, IPv6
    (brackets stripped), and the decimal, octal, hex and short IPv4 forms (``2130706433``,
    ``0177.0.0.1``, ``0x7f.1``); None for a DNS name."""
    text = host.strip("[]").lower().rstrip(".")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if _NUMERIC_HOST.match(text) and any(ch.isdigit() for ch in text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries and reaches: mapped, translated, NAT64 or 6to4."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    value = int(address)
    if value >> 32 == _TRANSLATED_PREFIX:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if address in _NAT64:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return address.sixtofour


def is_public_address(address: Address) -> bool:
    """Globally routable unicast: what a function may reach without the operator's leave."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = embedded_ipv4(address)
        if embedded is not None:
            return is_public_address(embedded)
        if address.is_site_local:
            return False
    if (
        not address.is_global
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address.is_loopback
        or address.is_link_local
        or address.is_private
    ):
        return False
    return not any(address in network for network in _NOT_PUBLIC if network.version == address.version)


@dataclass(frozen=True)
class AllowedHosts:
    """``function_allow_hosts`` parsed once: exact host names and IP networks a function may
    target although they are not public https addresses (the tests' fakes on 127.0.0.1)."""

    names: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowedHosts:
        names: set[str] = set()
        networks: list[Network] = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry.lower().rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def allows_name(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.names

    def allows_address(self, address: Address) -> bool:
        candidates: list[Address] = [address]
        if isinstance(address, ipaddress.IPv6Address):
            embedded = embedded_ipv4(address)
            if embedded is not None:
                candidates.append(embedded)
        return any(candidate in network for candidate in candidates for network in self.networks)

    def allows(self, host: str) -> bool:
        """Whether ``host`` (a name, or an address in any of its literal forms) is excepted."""
        if self.allows_name(host):
            return True
        address = literal_ip(host)
        return address is not None and self.allows_address(address)


def _is_localhost(host: str) -> bool:
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


@dataclass(frozen=True)
class EgressPolicy:
    """The operator's exceptions applied to the rules of the module docstring."""

    allowed: AllowedHosts = AllowedHosts()

    @classmethod
    def from_settings(cls, allow_hosts: Iterable[str]) -> EgressPolicy:
        return cls(AllowedHosts.parse(allow_hosts))

    def check_target(self, target_url: str) -> httpx.URL:
        """The target URL parsed and checked (:meth:`check_url`); an unreadable one is refused too."""
        try:
            url = httpx.URL(target_url)
        except (httpx.InvalidURL, TypeError) as error:
            raise EgressRefused("the target URL is not valid") from error
        self.check_url(url)
        return url

    def check_url(self, url: httpx.URL) -> None:
        """What the URL shows: scheme, host text and a literal address. Raises :class:`EgressRefused`."""
        host = url.host
        if url.scheme not in ("http", "https"):
            raise EgressRefused("the target must be an https URL")
        if not host or "%" in host or url.userinfo:
            raise EgressRefused("the target's host is not allowed")
        excepted = self.allowed.allows(host)
        if url.scheme == "http" and not excepted:
            raise EgressRefused("the target must use https")
        if excepted:
            return
        if _is_localhost(host):
            raise EgressRefused("the target points at localhost")
        address = literal_ip(host)
        if address is not None and not is_public_address(address):
            raise EgressRefused("the target points at a private address")

    def check_resolved(self, host: str, addresses: Sequence[str]) -> None:
        """What the name resolved to: every address, before any is connected to."""
        if self.allowed.allows_name(host):
            return
        if not addresses:
            raise EgressRefused("the target's name resolved to nothing")
        for text in addresses:
            try:
                # A scoped IPv6 address (fe80::1%eth0) is link-local whatever its scope.
                address = ipaddress.ip_address(text.split("%", 1)[0])
            except ValueError as error:
                raise EgressRefused("the target's name resolved to an unreadable address") from error
            if not (is_public_address(address) or self.allowed.allows_address(address)):
                raise EgressRefused("the target's name resolves to a private address")


class GuardedResolver(AbstractResolver):
    """The connector's resolver: resolves with ``inner`` (the system's by default), refuses the
    whole answer if any address is not allowed, and returns exactly what it checked."""

    def __init__(self, policy: EgressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if _is_localhost(host) and not self._policy.allowed.allows_name(host):
            raise EgressRefused("the target points at localhost")
        results = await self._inner.resolve(host, port, family)
        self._policy.check_resolved(host, [result["host"] for result in results])
        return results

    async def close(self) -> None:
        await self._inner.close()


ResolverFactory = Callable[[], AbstractResolver]


class FunctionEgress:
    """The one transport every function's calls go through (see the module docstring).

    Built in the app's lifespan; the aiohttp session is made on the first call (aiohttp wants
    a running loop). ``resolver`` replaces the system resolver under the guard (tests play a
    rebinding DNS with it, and ``ssl_context`` to trust their certificate); ``dns_cache_s`` is how
    long a checked answer is reused (0: never).
    """

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        max_connections: int = 512,
        keepalive_s: float = 30.0,
        dns_cache_s: int = 10,
        resolver: ResolverFactory | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
        self._dns_cache_s = dns_cache_s
        self._resolver = resolver
        self._ssl = ssl_context or httpx.create_ssl_context()
        self._session: aiohttp.ClientSession | None = None
        self._transport = AiohttpTransport(client=self._make_session)

    def _make_session(self) -> aiohttp.ClientSession:
        inner = self._resolver() if self._resolver is not None else None
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self.policy, inner),
            use_dns_cache=self._dns_cache_s > 0,
            ttl_dns_cache=self._dns_cache_s or None,
            limit=self._max_connections,
            keepalive_timeout=self._keepalive_s,
            ssl=self._ssl,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),  # shared by every tenant: never keep a cookie
            auto_decompress=False,
            trust_env=False,
            # A body-less POST would otherwise go out as application/octet-stream.
            skip_auto_headers=("Content-Type",),
        )
        return self._session

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` (its URL already passed :meth:`EgressPolicy.check_url`); the answer's
        body is a stream to read with ``aiter_raw`` and close with ``aclose``. Raises
        :class:`EgressRefused` when a resolved address is not allowed, ``httpx.HTTPError`` else."""
        return await self._transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self._transport.aclose()
