"""Azure OpenAI: the OpenAI wire format behind per-deployment URLs.

Azure names a *deployment*, not a model, in the path (``/openai/deployments/{name}/…``), wants
the ``api-version`` query parameter on every call and authenticates with an ``api-key``
header. Bodies, chunks and errors are OpenAI's, so the OpenAI adapter does the rest; a
deployment's ``upstream_model`` in the config is its deployment name.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

import httpx

from providers.openai.adapter import OpenAIAdapter

DEFAULT_API_VERSION = "2024-10-21"


def azure_path(api_version: str) -> Callable[[str, str], str]:
    version = quote(api_version, safe="")

    def path(route: str, deployment: str) -> str:
        return f"/openai/deployments/{quote(deployment, safe='')}{route}?api-version={version}"

    return path


def azure_adapter(name: str, client: httpx.AsyncClient, *, api_version: str = DEFAULT_API_VERSION) -> OpenAIAdapter:
    return OpenAIAdapter(name, client, path_for=azure_path(api_version or DEFAULT_API_VERSION))
