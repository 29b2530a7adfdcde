"""Azure OpenAI: the OpenAI wire format behind per-deployment URLs.

Azure names a *deployment*, not a model, in the path (``/openai/deployments/{name}/…``), wants
the ``api-version`` query parameter on every call and authenticates with an ``api-key``
header. Bodies, chunks and errors are OpenAI's, so the OpenAI adapter does the rest; a
deployment's ``upstream_model`` in the config is its deployment name.
"""

from __future__ import annotations

import httpx

from providers.azure.convert import DEFAULT_API_VERSION, azure_path
from providers.openai.adapter import OpenAIAdapter


def auth_headers(api_key: str) -> dict[str, str]:
    return {"api-key": api_key}


def azure_adapter(name: str, client: httpx.AsyncClient, *, api_version: str = DEFAULT_API_VERSION) -> OpenAIAdapter:
    return OpenAIAdapter(name, client, path_for=azure_path(api_version or DEFAULT_API_VERSION))
