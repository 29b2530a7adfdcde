"""What a proxy function may hold: the request bodies of the management API and the rules on them.

msgspec checks the gross bounds while decoding (types, lengths, counts: a 400 naming the field
before anything else runs); the functions here check what a type cannot say, each raising
:class:`~functions.errors.InvalidFunction` whose ``param`` is the top-level field and whose
message names the item (``secret_mappings[1].key: …``). All of it is pure: no I/O, so the
runtime (H3), the CLI and the tests can call the same rules.

=====================  ==========================================================================
field                  rule
=====================  ==========================================================================
name                   1..200 chars, one line; its slug (:func:`slugify`) must not be empty
target_url             absolute http(s), ≤ 2000 chars, no control char, space, user info or
                       fragment; ``http`` and literal non-public IPs (or ``localhost``) only for
                       hosts allowed by ``function_allow_hosts`` (:func:`target_url_problem`)
method                 GET, POST, PUT, DELETE
headers                ≤ 50; name an HTTP token ≤ 100 chars, not hop-by-hop, ``Host``,
                       ``Content-Length`` or ``Transfer-Encoding``, no name twice (any case);
                       value ≤ 4096 chars of visible ASCII, space or tab
secret_mappings        ≤ 20; each names a variable (checked against the environment by the
                       service) and a key valid for its kind: a header name (as above), a query
                       name, or a body path ``a.b.c``; template ≤ 1000 chars holding ``${value}``
                       (or empty); no two mappings set the same header, query name or body path;
                       body mappings need a POST/PUT/DELETE method and an object body template
allowed_origins        ≤ 50: ``*``, ``scheme://host[:port]``, ``*.example.com`` or
                       ``https://*.example.com``; lower-cased, default ports and a trailing ``/``
                       dropped, duplicates removed. ``[]`` refuses every caller (PRODUCT.md)
body_template          any JSON value (or null = none), ≤ 64 KiB encoded, nesting ≤ 32
rate_limit_per_minute  null (no limit) or 1..10000
timeout_ms             1..``function_timeout_s`` × 1000
description            ≤ 1000 chars
=====================  ==========================================================================

Defaults of a blank create: method POST, pass-through on, no headers or mappings, timeout the
operator's ``function_timeout_s``, and ``allowed_origins = ["*"]`` as envmanager's form and
templates have it (the docs then advise real origins for production). Sending ``[]`` stores
``[]``, which refuses every origin and every caller without one.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec

from billing.bounds import Description, Id, Name
from functions.config import VALUE_PLACEHOLDER
from functions.egress import AllowedHosts, is_public_address, literal_ip
from functions.errors import InvalidFunction
from functions.models import HttpMethod, InjectAs

__all__ = [
    "FORBIDDEN_HEADERS",
    "AllowedHosts",
    "FunctionCreate",
    "FunctionRules",
    "FunctionUpdate",
    "MappingIn",
    "check_body_template",
    "check_headers",
    "check_mappings_shape",
    "check_origins",
    "check_target_url",
    "literal_ip",
    "slugify",
    "target_url_problem",
]

MAX_SLUG = 50
MAX_URL = 2000
MAX_HEADERS = 50
MAX_HEADER_NAME = 100
MAX_HEADER_VALUE = 4096
MAX_MAPPINGS = 20
MAX_MAPPING_KEY = 200
MAX_BODY_PATH_SEGMENTS = 10
MAX_MAPPING_TEMPLATE = 1000
MAX_ORIGINS = 50
MAX_ORIGIN = 300
MAX_BODY_TEMPLATE_BYTES = 64 * 1024
MAX_BODY_TEMPLATE_DEPTH = 32
MAX_RATE_PER_MINUTE = 10_000
MAX_TIMEOUT_MS = 600_000  # the settings' own ceiling (function_timeout_s ≤ 600)

# Never set by a function's static headers or header mappings: connection-level headers
# (RFC 9110 §7.6.1) and the ones the HTTP client derives from the request itself.
FORBIDDEN_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # RFC 9110 token
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e]*\Z")  # visible ASCII, space, tab: what every client sends
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")  # control characters and spaces
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)\Z")
_SLUG_RUN = re.compile(r"[^a-z0-9]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}

# Bounds msgspec enforces while decoding, before any rule below runs.
HeaderMap = Annotated[
    dict[
        Annotated[str, msgspec.Meta(max_length=MAX_HEADER_NAME)],
        Annotated[str, msgspec.Meta(max_length=MAX_HEADER_VALUE)],
    ],
    msgspec.Meta(max_length=MAX_HEADERS),
]
MappingKey = Annotated[str, msgspec.Meta(max_length=MAX_MAPPING_KEY)]
MappingTemplate = Annotated[str, msgspec.Meta(max_length=MAX_MAPPING_TEMPLATE)]
Origin = Annotated[str, msgspec.Meta(max_length=MAX_ORIGIN)]
Origins = Annotated[list[Origin], msgspec.Meta(max_length=MAX_ORIGINS)]
TargetUrl = Annotated[str, msgspec.Meta(max_length=MAX_URL)]
RatePerMinute = Annotated[int, msgspec.Meta(ge=1, le=MAX_RATE_PER_MINUTE)]
TimeoutMs = Annotated[int, msgspec.Meta(ge=1, le=MAX_TIMEOUT_MS)]
TemplateSlug = Annotated[str, msgspec.Meta(max_length=64)]


class MappingIn(msgspec.Struct, forbid_unknown_fields=True):
    """One secret mapping as sent. From a template, a field left out is the hint's at the same
    position; otherwise ``inject_as`` and ``key`` are required (the service says which is missing)."""

    variable_id: Id | None = None
    inject_as: InjectAs | msgspec.UnsetType = msgspec.UNSET
    key: MappingKey | msgspec.UnsetType = msgspec.UNSET
    template: MappingTemplate | msgspec.UnsetType = msgspec.UNSET


Mappings = Annotated[list[MappingIn], msgspec.Meta(max_length=MAX_MAPPINGS)]


class FunctionCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new function: blank (``name`` and ``target_url`` required) or ``{"template": slug, …}``,
    where every field left out is the template's and each secret hint becomes a mapping whose
    variable the caller picks (``secret_mappings[i].variable_id``)."""

    template: TemplateSlug | msgspec.UnsetType = msgspec.UNSET
    name: Name | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    target_url: TargetUrl | msgspec.UnsetType = msgspec.UNSET
    method: HttpMethod | msgspec.UnsetType = msgspec.UNSET
    headers: HeaderMap | msgspec.UnsetType = msgspec.UNSET
    secret_mappings: Mappings | msgspec.UnsetType = msgspec.UNSET
    allowed_origins: Origins | msgspec.UnsetType = msgspec.UNSET
    pass_through_body: bool | msgspec.UnsetType = msgspec.UNSET
    body_template: Any = msgspec.UNSET  # any JSON value; null = none
    rate_limit_per_minute: RatePerMinute | msgspec.UnsetType | None = msgspec.UNSET
    forward_path: bool | msgspec.UnsetType = msgspec.UNSET
    forward_query: bool | msgspec.UnsetType = msgspec.UNSET
    timeout_ms: TimeoutMs | msgspec.UnsetType = msgspec.UNSET


class FunctionUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """A PATCH: only the fields sent change. ``secret_mappings``, ``headers`` and
    ``allowed_origins`` replace the whole list; ``null`` clears ``description``,
    ``body_template`` and ``rate_limit_per_minute``."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType | None = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    target_url: TargetUrl | msgspec.UnsetType = msgspec.UNSET
    method: HttpMethod | msgspec.UnsetType = msgspec.UNSET
    headers: HeaderMap | msgspec.UnsetType = msgspec.UNSET
    secret_mappings: Mappings | msgspec.UnsetType = msgspec.UNSET
    allowed_origins: Origins | msgspec.UnsetType = msgspec.UNSET
    pass_through_body: bool | msgspec.UnsetType = msgspec.UNSET
    body_template: Any = msgspec.UNSET
    rate_limit_per_minute: RatePerMinute | msgspec.UnsetType | None = msgspec.UNSET
    forward_path: bool | msgspec.UnsetType = msgspec.UNSET
    forward_query: bool | msgspec.UnsetType = msgspec.UNSET
    timeout_ms: TimeoutMs | msgspec.UnsetType = msgspec.UNSET


# -- the operator's exceptions -----------------------------------------------------------------


@dataclass(frozen=True)
class FunctionRules:
    """The operator's settings the rules depend on (the service never reads the gateway's)."""

    allowed_hosts: AllowedHosts = field(default_factory=AllowedHosts)
    max_timeout_ms: int = 25_000

    @classmethod
    def from_settings(cls, allow_hosts: Sequence[str], function_timeout_s: float) -> FunctionRules:
        return cls(AllowedHosts.parse(allow_hosts), max(1, int(function_timeout_s * 1000)))


# -- names -------------------------------------------------------------------------------------


def slugify(name: str) -> str:
    """envmanager's slug: lower-case, each run of non-``[a-z0-9]`` one ``-``, trimmed, ≤ 50 chars."""
    return _SLUG_RUN.sub("-", name.lower()).strip("-")[:MAX_SLUG].strip("-")


def check_name(name: str) -> str:
    slug = slugify(name)
    if not slug:
        raise InvalidFunction("name: must contain at least one letter or digit (a-z, 0-9)", param="name")
    return slug


# -- the target --------------------------------------------------------------------------------


def target_url_problem(url: str, allowed: AllowedHosts) -> str | None:
    """What is visibly wrong with a target URL, or None. Pure (no DNS): it refuses what can be
    seen in the text; where the name resolves to is the runtime's SSRF guard's to check."""
    if not url:
        return "is required"
    if len(url) > MAX_URL:
        return f"must be at most {MAX_URL} characters"
    if _URL_FORBIDDEN.search(url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL (check the host and port)"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.netloc:
        return "must be an absolute https:// URL"
    if "@" in parts.netloc:
        return "must not carry a user name or password (put credentials in a secret mapping)"
    if "#" in url:
        return "must not have a #fragment"
    host = (parts.hostname or "").rstrip(".")
    if not host:
        return "has no host"
    if port == 0:
        return "has an invalid port"
    address = literal_ip(host)
    if address is None and not all(_DNS_LABEL.match(label) for label in host.split(".")):
        return "has an invalid host name (use punycode, xn--…, for international names)"
    excepted = allowed.allows(host)
    if scheme == "http" and not excepted:
        return "must use https (http only for hosts listed in function_allow_hosts)"
    if not excepted:
        if address is not None and not is_public_address(address):
            return (
                "points at a private, loopback, link-local or multicast address (not allowed by function_allow_hosts)"
            )
        if host == "localhost" or host.endswith(".localhost"):
            return "points at localhost (not allowed by function_allow_hosts)"
    return None


def check_target_url(url: str, allowed: AllowedHosts) -> str:
    problem = target_url_problem(url, allowed)
    if problem is not None:
        raise InvalidFunction(f"target_url: {problem}", param="target_url")
    return url


# -- headers -----------------------------------------------------------------------------------


def header_name_problem(name: str) -> str | None:
    if not name:
        return "is empty"
    if len(name) > MAX_HEADER_NAME:
        return f"is longer than {MAX_HEADER_NAME} characters"
    if not _TOKEN.match(name):
        return "is not a valid HTTP header name (letters, digits and !#$%&'*+.^_`|~-)"
    if name.lower() in FORBIDDEN_HEADERS:
        return "cannot be set by a function (a connection-level header the client manages)"
    return None


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    if len(headers) > MAX_HEADERS:
        raise InvalidFunction(f"headers: at most {MAX_HEADERS} headers", param="headers")
    seen: set[str] = set()
    for name, value in headers.items():
        problem = header_name_problem(name)
        if problem is not None:
            raise InvalidFunction(f"headers: the name {name[:MAX_HEADER_NAME]!r} {problem}", param="headers")
        if name.lower() in seen:
            raise InvalidFunction(f"headers: {name!r} is given twice (header names ignore case)", param="headers")
        seen.add(name.lower())
        if len(value) > MAX_HEADER_VALUE or not _HEADER_VALUE.match(value):
            raise InvalidFunction(
                f"headers: the value of {name!r} must be at most {MAX_HEADER_VALUE} characters of visible "
                "ASCII, space or tab (no line breaks or NUL)",
                param="headers",
            )
    return dict(headers)


# -- secret mappings (their shape; the variables are the service's to check) ------------------


def _mapping_key_problem(inject_as: InjectAs, key: str) -> str | None:
    if not key:
        return "is empty: name the header, query parameter or body field the secret goes into"
    if inject_as is InjectAs.HEADER:
        return header_name_problem(key)
    if len(key) > MAX_MAPPING_KEY or _CONTROL.search(key):
        return f"must be at most {MAX_MAPPING_KEY} characters without control characters"
    if inject_as is InjectAs.BODY:
        segments = key.split(".")
        if any(not segment for segment in segments):
            return "is not a body path: use field names joined by dots (api_key, credentials.token)"
        if len(segments) > MAX_BODY_PATH_SEGMENTS:
            return f"nests deeper than {MAX_BODY_PATH_SEGMENTS} levels"
    return None


def _target(inject_as: InjectAs, key: str) -> tuple[InjectAs, str]:
    return inject_as, key.lower() if inject_as is InjectAs.HEADER else key


def check_mappings_shape(mappings: Sequence[tuple[int, InjectAs, str, str]]) -> None:
    """``(variable_id, inject_as, key, template)`` items: keys valid for their kind, templates
    holding the placeholder, and no two mappings writing the same place."""
    if len(mappings) > MAX_MAPPINGS:
        raise InvalidFunction(f"secret_mappings: at most {MAX_MAPPINGS} mappings", param="secret_mappings")
    seen: dict[tuple[InjectAs, str], int] = {}
    for index, (_variable_id, inject_as, key, template) in enumerate(mappings):
        where = f"secret_mappings[{index}]"
        problem = _mapping_key_problem(inject_as, key)
        if problem is not None:
            raise InvalidFunction(f"{where}.key {problem}", param="secret_mappings")
        if template:
            if len(template) > MAX_MAPPING_TEMPLATE or _CONTROL.search(template):
                raise InvalidFunction(
                    f"{where}.template must be at most {MAX_MAPPING_TEMPLATE} characters without control characters",
                    param="secret_mappings",
                )
            if VALUE_PLACEHOLDER not in template:
                raise InvalidFunction(
                    f"{where}.template must contain {VALUE_PLACEHOLDER} (where the secret goes), or be empty "
                    "for the raw secret",
                    param="secret_mappings",
                )
            if inject_as is InjectAs.HEADER and not _HEADER_VALUE.match(template):
                raise InvalidFunction(
                    f"{where}.template of a header must be visible ASCII, space or tab", param="secret_mappings"
                )
        target = _target(inject_as, key)
        if target in seen:
            raise InvalidFunction(
                f"{where}: the {inject_as.value} {key!r} is already set by secret_mappings[{seen[target]}]",
                param="secret_mappings",
            )
        seen[target] = index


def check_body_mappings(
    mappings: Sequence[tuple[int, InjectAs, str, str]], method: HttpMethod, body_template: Any
) -> None:
    """Cross-field: a body mapping needs a request with a body, and a body it can be merged into."""
    for index, (_variable_id, inject_as, _key, _template) in enumerate(mappings):
        if inject_as is not InjectAs.BODY:
            continue
        if method is HttpMethod.GET:
            raise InvalidFunction(
                f"secret_mappings[{index}]: a GET request has no body; inject into a header or the query instead",
                param="secret_mappings",
            )
        if body_template is not None and not isinstance(body_template, dict):
            raise InvalidFunction(
                f"secret_mappings[{index}]: a body secret is merged into the body, so body_template must be a "
                "JSON object (or null)",
                param="secret_mappings",
            )


# -- origins -----------------------------------------------------------------------------------


def _host_problem(host: str, *, wildcard: bool) -> str | None:
    if wildcard:
        labels = host.split(".")
        if len(labels) < 2 or not all(_DNS_LABEL.match(label) for label in labels):
            return "a pattern is *. followed by a domain of at least two labels (*.example.com)"
        return None
    if host.startswith("["):
        if not host.endswith("]"):
            return "has an unclosed IPv6 bracket"
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return "has an invalid IPv6 address"
        return None
    if not all(_DNS_LABEL.match(label) for label in host.split(".")):
        return "has an invalid host (use punycode, xn--…, for international names)"
    return None


def normalise_origin(text: str) -> str:
    """One allowed origin in its stored form; raises ``ValueError`` saying what is wrong."""
    origin = text.lower()
    if origin == "*":
        return origin
    if not origin or _URL_FORBIDDEN.search(origin):
        raise ValueError("must not be empty or contain spaces or control characters")
    if origin.endswith("/"):
        origin = origin[:-1]
    scheme, sep, rest = origin.partition("://")
    if not sep:
        scheme, rest = "", origin
        if not rest.startswith("*."):
            raise ValueError("needs a scheme: https://example.com (or a pattern *.example.com)")
    elif scheme not in _DEFAULT_PORTS:
        raise ValueError("must be an http or https origin")
    if any(ch in rest for ch in "/?#@"):
        raise ValueError("an origin is scheme://host[:port], without a path, query or user name")
    host, port_text = rest, ""
    if rest.startswith("["):
        closing = rest.find("]")
        host, port_text = rest[: closing + 1], rest[closing + 1 :].removeprefix(":")
        if closing < 0 or (rest[closing + 1 :] and not rest[closing + 1 :].startswith(":")):
            raise ValueError("has an invalid IPv6 host")
    elif ":" in rest:
        host, port_text = rest.split(":", 1)
    wildcard = host.startswith("*.")
    if "*" in host[2 if wildcard else 0 :]:
        raise ValueError("a wildcard may only open the host (*.example.com), or be * alone for any origin")
    problem = _host_problem(host[2:] if wildcard else host, wildcard=wildcard)
    if problem is not None:
        raise ValueError(problem)
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError("has an invalid port")
        if scheme and int(port_text) == _DEFAULT_PORTS[scheme]:
            port_text = ""  # what a browser sends: https://example.com, never :443
    prefix = f"{scheme}://" if scheme else ""
    return f"{prefix}{host}{':' + str(int(port_text)) if port_text else ''}"


def check_origins(origins: Sequence[str]) -> list[str]:
    if len(origins) > MAX_ORIGINS:
        raise InvalidFunction(f"allowed_origins: at most {MAX_ORIGINS} origins", param="allowed_origins")
    normalised: list[str] = []
    for index, origin in enumerate(origins):
        try:
            normalised.append(normalise_origin(origin))
        except ValueError as error:
            raise InvalidFunction(
                f"allowed_origins[{index}] {origin[:MAX_ORIGIN]!r}: {error}", param="allowed_origins"
            ) from None
    return list(dict.fromkeys(normalised))


# -- the body ----------------------------------------------------------------------------------


def _depth(value: Any) -> int:
    """How deeply a decoded JSON value nests (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Iterable[Any] = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > MAX_BODY_TEMPLATE_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_body_template(value: Any) -> Any:
    if value is None:
        return None
    if _depth(value) > MAX_BODY_TEMPLATE_DEPTH:
        raise InvalidFunction(
            f"body_template: nests deeper than {MAX_BODY_TEMPLATE_DEPTH} levels", param="body_template"
        )
    if len(msgspec.json.encode(value)) > MAX_BODY_TEMPLATE_BYTES:
        raise InvalidFunction(
            f"body_template: must be at most {MAX_BODY_TEMPLATE_BYTES // 1024} KiB as JSON", param="body_template"
        )
    return value


def check_timeout(timeout_ms: int, rules: FunctionRules) -> int:
    if not 1 <= timeout_ms <= rules.max_timeout_ms:
        raise InvalidFunction(
            f"timeout_ms: must be 1..{rules.max_timeout_ms} (the operator's function_timeout_s)", param="timeout_ms"
        )
    return timeout_ms
