"""Pure conversions for Azure OpenAI: where each OpenAI route lives on an Azure resource.

Bodies, chunks and usage are OpenAI's (``providers.openai.convert``); only the URL differs:
Azure names a *deployment*, not a model, in the path and wants ``api-version`` on every call.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

DEFAULT_API_VERSION = "2024-10-21"


def azure_path(api_version: str) -> Callable[[str, str], str]:
    version = quote(api_version, safe="")

    def path(route: str, deployment: str) -> str:
        return f"/openai/deployments/{quote(deployment, safe='')}{route}?api-version={version}"

    return path
