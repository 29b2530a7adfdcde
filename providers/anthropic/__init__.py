"""Anthropic's Messages API behind the gateway's OpenAI-shaped adapter protocol."""

from providers.anthropic.adapter import AnthropicAdapter, AnthropicStream
from providers.anthropic.convert import InvalidChatRequest, StreamTranslator

__all__ = ["AnthropicAdapter", "AnthropicStream", "InvalidChatRequest", "StreamTranslator"]
