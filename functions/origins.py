"""Which browser origins may call a function, and the CORS headers its answers carry.

PRODUCT.md's rules over envmanager's exact match:

====================  ========================================================================
allowed entry         matches the request's ``Origin``
====================  ========================================================================
``*``                 anything, and a request with no ``Origin`` at all (server to server)
``https://a.com``     exactly that origin (case-insensitive; ``:443`` on https / ``:80`` on
                      http and a trailing ``/`` make no difference)
``*.example.com``     any subdomain at any depth (``a.example.com``, ``b.a.example.com``), not
                      ``example.com`` itself, either scheme, default port; ``*.example.com:8443``
                      that port only
``https://*.a.com``   the same, that scheme only
====================  ========================================================================

An empty list allows nothing, and a request without ``Origin`` (curl, a server) is refused
unless ``*`` is listed (envmanager.md §8.1–2, PRODUCT.md). ``Origin: null`` (a sandboxed frame,
a file) matches only ``*``.

CORS headers (envmanager.md §4): ``Access-Control-Allow-Origin`` is ``*`` when the list has
``*``, else the request's origin echoed with ``Vary: Origin``; methods are the function's and
``OPTIONS``; the only request headers a page may send are ``Content-Type`` and
``x-proxy-token`` (nothing else is forwarded anyway); preflights are cached a day; the rate-limit
headers, ``Retry-After`` and ``X-Request-Id`` are exposed to scripts.
"""

from __future__ import annotations

from dataclasses import dataclass

from functions.validation import normalise_origin

__all__ = ["OriginRules", "request_origin"]

_DEFAULT_PORTS = {"http": "80", "https": "443"}
ALLOW_HEADERS = b"Content-Type, x-proxy-token"
EXPOSE_HEADERS = b"X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After, X-Request-Id"
MAX_AGE = b"86400"


def request_origin(origin: str) -> tuple[str, str, str] | None:
    """``(scheme, host, port)`` of an ``Origin`` header, lower-cased, the default port as ``""``;
    None when it is not an http(s) origin."""
    scheme, sep, rest = origin.lower().rstrip("/").partition("://")
    if not sep or scheme not in _DEFAULT_PORTS or not rest or any(ch in rest for ch in "/?#@ "):
        return None
    if rest.startswith("["):
        closing = rest.find("]")
        if closing < 0:
            return None
        host, port = rest[: closing + 1], rest[closing + 1 :].removeprefix(":")
    else:
        host, _, port = rest.partition(":")
    if port == _DEFAULT_PORTS[scheme]:
        port = ""
    return scheme, host, port


@dataclass(frozen=True, slots=True)
class _Pattern:
    scheme: str  # "" = either
    suffix: str  # ".example.com"
    port: str  # "" = the scheme's default

    def matches(self, scheme: str, host: str, port: str) -> bool:
        return (
            host.endswith(self.suffix)
            and len(host) > len(self.suffix)
            and port == self.port
            and (not self.scheme or scheme == self.scheme)
        )


class OriginRules:
    """One function's allowed origins, compiled once (the runtime caches it per function)."""

    __slots__ = ("_exact", "_patterns", "any", "methods")

    def __init__(self, allowed: tuple[str, ...], method: str) -> None:
        self.any = "*" in allowed
        self.methods = f"{method}, OPTIONS".encode()
        exact: set[str] = set()
        patterns: list[_Pattern] = []
        for entry in allowed:
            try:
                origin = normalise_origin(entry)  # rows written before validation, or by hand
            except ValueError:
                continue
            scheme, sep, rest = origin.rpartition("://")
            if not rest.startswith("*."):
                exact.add(origin)
                continue
            host, _, port = rest.partition(":")
            patterns.append(_Pattern(scheme if sep else "", host[1:], port))
        self._exact = frozenset(exact)
        self._patterns = tuple(patterns)

    def allows(self, origin: str | None) -> bool:
        if self.any:
            return True
        if not origin:
            return False
        parsed = request_origin(origin)
        if parsed is None:
            return False
        scheme, host, port = parsed
        if f"{scheme}://{host}{':' + port if port else ''}" in self._exact:
            return True
        return any(pattern.matches(scheme, host, port) for pattern in self._patterns)

    def headers(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        """The CORS headers of an answer to ``origin`` (not checked here: a refusal carries them
        too, so a page can read why it was refused; reading a refusal grants nothing)."""
        headers = [
            (b"access-control-allow-methods", self.methods),
            (b"access-control-allow-headers", ALLOW_HEADERS),
            (b"access-control-max-age", MAX_AGE),
            (b"access-control-expose-headers", EXPOSE_HEADERS),
        ]
        if self.any:
            headers.append((b"access-control-allow-origin", b"*"))
        elif origin:
            headers.append((b"access-control-allow-origin", origin.encode("latin-1", "replace")))
            headers.append((b"vary", b"Origin"))
        return headers
