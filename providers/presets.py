"""OpenAI-compatible services known by name: data, not code.

Each is the OpenAI adapter pointed at the service's base URL, with the environment variable
its key is usually kept in and, when the shipped price list has the service's models, the
vendor to look them up under. ``providers.registry`` turns each line into a provider kind, so
an operator writes ``kind = "groq"`` instead of looking up URLs; ``base_url`` and
``api_key_env`` in the config still win, and anything not listed here works with
``kind = "openai-compatible"`` and a ``base_url``. Adding a service is one line here.
"""

from __future__ import annotations

from typing import NamedTuple


class Preset(NamedTuple):
    base_url: str
    api_key_env: str
    # The vendor whose list prices apply (a table of billing/catalogue/prices.toml); "" for none.
    vendor: str = ""


OPENAI_COMPATIBLE_PRESETS: dict[str, Preset] = {
    "groq": Preset("https://api.groq.com/openai/v1", "GROQ_API_KEY", vendor="groq"),
    "together": Preset("https://api.together.xyz/v1", "TOGETHER_API_KEY", vendor="together"),
    "mistral": Preset("https://api.mistral.ai/v1", "MISTRAL_API_KEY", vendor="mistral"),
    "deepseek": Preset("https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", vendor="deepseek"),
    "fireworks": Preset("https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY"),
    "openrouter": Preset("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "xai": Preset("https://api.x.ai/v1", "XAI_API_KEY", vendor="xai"),
    "perplexity": Preset("https://api.perplexity.ai", "PERPLEXITY_API_KEY"),
    "cerebras": Preset("https://api.cerebras.ai/v1", "CEREBRAS_API_KEY"),
    "sambanova": Preset("https://api.sambanova.ai/v1", "SAMBANOVA_API_KEY"),
    "ollama": Preset("http://127.0.0.1:11434/v1", ""),
    "lmstudio": Preset("http://127.0.0.1:1234/v1", ""),
    "vllm": Preset("http://127.0.0.1:8000/v1", ""),
}
