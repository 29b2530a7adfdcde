"""Download Code: one self-hosting file per platform, from a :class:`ResolvedFunction`.

The file is the shared JavaScript core (``js/core.js``, the hosted runtime's checks in their
order), a small platform adapter, and one ``CONFIG`` object holding the function's settings.
It never holds a secret: each secret is read from an environment variable named after its
variable's key, the token from ``PROXY_TOKEN``, so the file itself may be committed and shared.

Everything that comes from the function (name, target, header names, templates, origins, the
body template) reaches the source only as a JSON literal (:func:`js_literal`): ASCII only, so
no line terminator (U+2028/2029 included) can end a ``//`` comment or a string early, and
``</`` escaped; no user text is ever concatenated into code. Environment variable names are
checked against ``[A-Za-z_][A-Za-z0-9_]*`` even though the variables API already does.
"""

from __future__ import annotations

import functools
import json
import re
import textwrap
from importlib import resources
from typing import Any

import msgspec

from functions.codegen.errors import FunctionUnresolved, UnknownPlatform, UnusableVariableKey
from functions.codegen.platforms import PLATFORMS, Platform, PlatformSpec, Routing, base_path
from functions.config import Injection, ResolvedFunction
from functions.models import HttpMethod, InjectAs
from functions.validation import normalise_origin

__all__ = ["TOKEN_ENV", "EnvVar", "GeneratedCode", "file_slug", "generate", "js_literal", "platform_of"]

TOKEN_ENV = "PROXY_TOKEN"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MARKER = re.compile(r"__(BASE_PATH|NETLIFY_PATH)__")


class EnvVar(msgspec.Struct, frozen=True):
    name: str
    description: str


class GeneratedCode(msgspec.Struct, frozen=True):
    platform: str
    filename: str
    path: str
    instructions: str
    content: str
    env: list[EnvVar]


def platform_of(name: str) -> Platform:
    try:
        return Platform(name)
    except ValueError:
        known = ", ".join(platform.value for platform in Platform)
        raise UnknownPlatform(f"no code for platform {name[:40]!r}; choose one of {known}", param="platform") from None


def js_literal(value: Any, *, indent: int | None = None) -> str:
    """``value`` as a JavaScript expression (JSON, a subset of JS since ES2019), safe anywhere.

    ``ensure_ascii`` escapes every non-ASCII character and every control character, so the
    text has no line terminator in it; ``</`` becomes ``<\\/`` (the same string) so the
    source can be inlined in HTML without closing a script element."""
    text = json.dumps(value, ensure_ascii=True, allow_nan=False, indent=indent)
    return text.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def file_slug(slug: str) -> str:
    """The slug as it goes into a file name and a URL path: ``[a-z0-9-]``, never empty."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", slug.lower()).strip("-")[:50].strip("-")
    return cleaned or "function"


def _too_large_message(max_body_bytes: int) -> str:
    # The hosted runtime's words (functions/runtime.py).
    limit = "1MB" if max_body_bytes == 1024 * 1024 else f"{max_body_bytes} bytes"
    return f"Request body too large (max {limit})"


def _origins(function: ResolvedFunction) -> list[str]:
    """The allowed origins as the runtime compiles them: normalised (lower case, no default
    port), an entry that is not a valid origin skipped (rows written by hand), duplicates out."""
    found: list[str] = []
    for entry in function.allowed_origins:
        try:
            origin = normalise_origin(entry)
        except ValueError:
            continue
        if origin not in found:
            found.append(origin)
    return found


def _env_names(function: ResolvedFunction) -> list[str]:
    names: list[str] = []
    for injection in function.injections:
        name = injection.variable_key
        if not _ENV_NAME.match(name) or len(name) > 200:
            raise UnusableVariableKey(
                f"the variable {name[:60]!r} cannot name an environment variable: "
                "rename it to letters, digits and _ (not starting with a digit)"
            )
        if name == TOKEN_ENV:
            raise UnusableVariableKey(
                f"a mapped variable is named {TOKEN_ENV}, which the downloaded code reads the function's "
                "token from: rename the variable"
            )
        if name not in names:
            names.append(name)
    return names


def _kind(injection: Injection) -> str:
    # InjectAs(...): the directory builds injections from stored JSON, where it is a plain str.
    return InjectAs(injection.inject_as).value


def _config(function: ResolvedFunction, max_body_bytes: int) -> dict[str, Any]:
    """What the core reads (``CONFIG.*`` in js/core.js). No secret and no token in it."""
    return {
        "name": function.name,
        "targetUrl": function.target_url,
        "method": str(function.method),
        "headers": dict(function.headers),
        "injections": [
            {
                "env": injection.variable_key,
                "as": _kind(injection),
                "key": injection.key,
                "template": injection.template,
            }
            for injection in function.injections
        ],
        "allowedOrigins": _origins(function),
        "passThroughBody": function.pass_through_body,
        "bodyTemplate": function.body_template,
        "forwardPath": function.forward_path,
        "forwardQuery": function.forward_query,
        "timeoutMs": max(1, round(function.timeout_s * 1000)),
        "maxBodyBytes": max_body_bytes,
        "tooLarge": _too_large_message(max_body_bytes),
    }


def _env_vars(function: ResolvedFunction, names: list[str]) -> list[EnvVar]:
    found = [EnvVar(TOKEN_ENV, "the function's token (Tollway: Copy Token); callers send it as x-proxy-token")]
    for name in names:
        places = []
        for injection in function.injections:
            if injection.variable_key != name:
                continue
            place = f"{_kind(injection)} {js_literal(injection.key)}"
            if injection.template:
                place += f" as {js_literal(injection.template)}"
            places.append(place)
        found.append(EnvVar(name, "injected as " + "; ".join(places)))
    return found


def _comment(text: str) -> str:
    return "\n".join(f"// {line}".rstrip() for line in text.split("\n"))


def _header(function: ResolvedFunction, spec: PlatformSpec, path: str, env: list[EnvVar], seconds: str) -> str:
    width = max(len(var.name) for var in env)
    env_lines = "\n".join(f"  {var.name.ljust(width)}  {var.description}" for var in env)
    origins = ", ".join(js_literal(origin) for origin in _origins(function)) or "none (every call is refused)"
    limit = function.rate_limit_per_minute
    where = spec.rate_limiting.replace("<N>", str(limit or 60))
    rate = textwrap.fill(
        f"Not done here: the function's rate limit of {limit} requests per minute is NOT enforced by this "
        f"file (Tollway counts it across its servers; there is no portable equivalent): set one with {where}."
        if limit is not None
        else f"Not done here: a rate limit (the function has none in Tollway); to add one use {where}.",
        width=96,
    )
    lines = [
        f"Tollway proxy function {js_literal(function.name)}, self-hosted on {spec.label}: {path}",
        "",
        f"Function:  {js_literal(function.name)} (id {js_literal(function.id)})",
        f"Target:    {HttpMethod(function.method).value} {js_literal(function.target_url)}",
        f"Platform:  {spec.label}",
        "",
        "A SNAPSHOT of the function's configuration when it was downloaded: after any change to it in",
        "Tollway (target, method, headers, secret mappings, origins, body), download this file again.",
        "",
        "Required environment variables (set them on the platform; this file holds no secret):",
        env_lines,
        "",
        "Enforced as by Tollway's hosted runtime, in this order: an extra path only if the function",
        "forwards it (404), CORS preflight (204, or 403), body size (413), x-proxy-token compared in",
        'constant time (401), allowed origins (403; a call with no Origin passes only with "*"), method',
        "(405), the extra path's form (400); then the secrets are read (500 if one is not set), injected,",
        f"and the call forwarded with a {seconds} s timeout (504; 502 if the target cannot be reached).",
        "The target's status, body and content type come back with the CORS headers. Errors are JSON:",
        '{"error": "..."}.',
        f"Allowed origins: {origins}",
        "",
        rate,
        "Calls made here are not logged in Tollway's analytics.",
    ]
    if not function.enabled:
        lines += ["", "The function was disabled in Tollway when downloaded; this file serves calls regardless."]
    return _comment("\n".join(lines))


@functools.cache
def _js(name: str) -> str:
    return (resources.files("functions.codegen") / "js" / f"{name}.js").read_text(encoding="utf-8")


def _fill(template: str, literals: dict[str, str]) -> str:
    """The adapter's ``__NAME__`` markers replaced by JSON literals, in one pass, so a literal
    holding a marker's text is never filled in again."""
    if set(_MARKER.findall(template)) != set(literals):
        raise RuntimeError(f"adapter markers {sorted(set(_MARKER.findall(template)))} != {sorted(literals)}")
    return _MARKER.sub(lambda match: literals[match.group(1)], template)


def _adapter(platform: Platform, spec: PlatformSpec, slug: str, forward_path: bool) -> str:
    literals: dict[str, str] = {}
    if platform in (Platform.VERCEL, Platform.NETLIFY):
        literals["BASE_PATH"] = js_literal(base_path(slug))
    elif platform is Platform.CLOUDFLARE:
        literals["BASE_PATH"] = js_literal("")  # the worker's whole path is the function's
    if platform is Platform.NETLIFY:
        paths = [base_path(slug), base_path(slug) + "/*"] if forward_path else base_path(slug)
        literals["NETLIFY_PATH"] = js_literal(paths)
    return _fill(_js(spec.adapter), literals)


def generate(
    function: ResolvedFunction, platform: Platform, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> GeneratedCode:
    """The platform's file for ``function``. Reads each injection's ``variable_key``, ``inject_as``,
    ``key`` and ``template``, never its ``value``."""
    if function.unresolved:
        raise FunctionUnresolved(
            "a secret mapping of this function names a variable that no longer exists or cannot be opened: "
            "fix its mappings, then download the code"
        )
    spec = PLATFORMS[platform]
    slug = file_slug(function.slug)
    names = _env_names(function)
    env = _env_vars(function, names)
    seconds = f"{function.timeout_s:g}"
    parts = []
    if spec.extension == ".ts":
        parts.append("// @ts-nocheck -- plain JavaScript, which is also valid TypeScript: deploy it as it is.")
    parts.append(_header(function, spec, spec.path(slug), env, seconds))
    if spec.prelude:
        parts.append(spec.prelude.rstrip("\n"))
    parts.append(f"const CONFIG = {js_literal(_config(function, max_body_bytes), indent=2)};")
    parts.append(_js("core").rstrip("\n"))
    if spec.web:
        parts.append(_js("web").rstrip("\n"))
    parts.append(_adapter(platform, spec, slug, function.forward_path).rstrip("\n"))
    routing = Routing(
        slug=slug,
        method=str(function.method),
        forward_path=function.forward_path,
        timeout_s=function.timeout_s,
        env_names=tuple(var.name for var in env),
    )
    return GeneratedCode(
        platform=platform.value,
        filename=spec.filename(slug),
        path=spec.path(slug),
        instructions=spec.instructions(routing),
        content="\n\n".join(parts) + "\n",
        env=env,
    )
