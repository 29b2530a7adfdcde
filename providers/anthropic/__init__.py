"""Anthropic's Messages API behind the gateway's OpenAI-shaped adapter protocol."""

from providers.anthropic.adapter import AnthropicAdapter
from providers.anthropic.convert import StreamTranslator
from providers.anthropic.errors import InvalidChatRequest

__all__ = ["AnthropicAdapter", "InvalidChatRequest", "StreamTranslator"]
