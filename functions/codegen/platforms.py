"""The four platforms Download Code writes for: where each file goes and how it is deployed.

Each platform is the shared JavaScript core (``js/core.js``) plus a small adapter from its own
request shape; Vercel, Netlify and Cloudflare take a web ``Request`` (``js/web.js``), Lambda an
API Gateway event. The paths are those of envmanager.md §7's documentation. Netlify gets an
Edge Function (``netlify/edge-functions``, web ``Request``/``Response``, the ``path`` in its
own config) rather than envmanager's classic CommonJS function: it shares the web adapter
with Vercel and Cloudflare, so three of the four run the very same code, and it streams.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["PLATFORMS", "Platform", "PlatformSpec", "Routing"]


class Platform(enum.StrEnum):
    VERCEL = "vercel"
    NETLIFY = "netlify"
    CLOUDFLARE = "cloudflare"
    LAMBDA = "lambda"


@dataclass(frozen=True, slots=True)
class Routing:
    """What the instructions need to know of one function."""

    slug: str  # already safe for a file name: [a-z0-9-]
    method: str
    forward_path: bool
    timeout_s: float
    env_names: tuple[str, ...]  # PROXY_TOKEN first


@dataclass(frozen=True, slots=True)
class PlatformSpec:
    label: str
    directory: str
    extension: str  # ".ts" files are plain JavaScript that is also valid TypeScript
    web: bool  # uses the web Request/Response adapter (js/web.js)
    adapter: str  # js/<adapter>.js
    prelude: str  # imports the platform needs, at the top of the file
    rate_limiting: str  # where to set a rate limit on this platform
    instructions: Callable[[Routing], str]

    def filename(self, slug: str) -> str:
        return f"proxy-{slug}{self.extension}"

    def path(self, slug: str) -> str:
        return f"{self.directory}/{self.filename(slug)}"


def base_path(slug: str) -> str:
    """The URL path Vercel and Netlify serve the function at."""
    return f"/api/proxy-{slug}"


def _env_list(routing: Routing) -> str:
    return ", ".join(routing.env_names)


def _vercel(routing: Routing) -> str:
    text = (
        f"Save as api/proxy-{routing.slug}.ts in your Vercel project. In Project Settings → Environment "
        f"Variables set {_env_list(routing)}, then deploy (vercel deploy --prod). Callers send "
        f"{routing.method} https://<your-app>{base_path(routing.slug)} with the x-proxy-token header."
    )
    if routing.forward_path:
        text += (
            f" For extra paths, route {base_path(routing.slug)}/:path* to this function (a rewrite in"
            " vercel.json); the code reads the extra path from the request URL."
        )
    return text


def _netlify(routing: Routing) -> str:
    return (
        f"Save as netlify/edge-functions/proxy-{routing.slug}.ts in your site. In Site configuration → "
        f"Environment variables set {_env_list(routing)} (scope: Functions), then deploy (netlify deploy "
        f"--prod). Callers send {routing.method} https://<your-site>{base_path(routing.slug)} with the "
        "x-proxy-token header (the path is in the file's config)."
    )


def _cloudflare(routing: Routing) -> str:
    return (
        f'Save as src/proxy-{routing.slug}.ts and set main = "src/proxy-{routing.slug}.ts" in wrangler.toml. '
        f"Add each variable as a secret (wrangler secret put <NAME>, for {_env_list(routing)}), then "
        "wrangler deploy. Callers send "
        f"{routing.method} to the worker's URL with the x-proxy-token header"
        + (" (any path after it is forwarded as the extra path)." if routing.forward_path else ".")
    )


def _lambda(routing: Routing) -> str:
    timeout = max(int(routing.timeout_s) + 5, 10)
    return (
        f"Save as lambda/proxy-{routing.slug}.mjs and deploy it as a Node.js 20.x function with handler "
        f"proxy-{routing.slug}.handler and a timeout of at least {timeout} s (the default 3 s is too short). "
        f"Set the environment variables {_env_list(routing)}. Put it behind an API Gateway HTTP API or a "
        f"REST API proxy integration (route ANY /proxy-{routing.slug}"
        + (f" and ANY /proxy-{routing.slug}/{{proxy+}} for extra paths" if routing.forward_path else "")
        + "), or a function URL, with the gateway's own CORS switched off: the function answers "
        "preflights itself. A REST API returns binary bodies only with binary media types */*."
    )


PLATFORMS: dict[Platform, PlatformSpec] = {
    Platform.VERCEL: PlatformSpec(
        label="Vercel Edge Functions",
        directory="api",
        extension=".ts",
        web=True,
        adapter="vercel",
        prelude="",
        rate_limiting="a Vercel Firewall rate-limiting rule on the function's path",
        instructions=_vercel,
    ),
    Platform.NETLIFY: PlatformSpec(
        label="Netlify Edge Functions",
        directory="netlify/edge-functions",
        extension=".ts",
        web=True,
        adapter="netlify",
        prelude="",
        rate_limiting=(
            "Netlify rate limiting, e.g. rateLimit: { windowLimit: <N>, windowSize: 60, aggregateBy: "
            '["domain"] } in this file\'s config'
        ),
        instructions=_netlify,
    ),
    Platform.CLOUDFLARE: PlatformSpec(
        label="Cloudflare Workers",
        directory="src",
        extension=".ts",
        web=True,
        adapter="cloudflare",
        prelude="",
        rate_limiting="a Cloudflare rate limiting rule (WAF) or the Workers rate limiting binding",
        instructions=_cloudflare,
    ),
    Platform.LAMBDA: PlatformSpec(
        label="AWS Lambda (Node.js 18+)",
        directory="lambda",
        extension=".mjs",
        web=False,
        adapter="lambda",
        # Node 18 has no global `crypto`; Node's own WebCrypto serves the token comparison.
        prelude='import { webcrypto as crypto } from "node:crypto";\n',
        rate_limiting="API Gateway throttling on the route (or a stage usage plan), or AWS WAF",
        instructions=_lambda,
    ),
}
