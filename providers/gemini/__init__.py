"""Google Gemini through its native ``generateContent`` API, translated to and from OpenAI's shape."""

from providers.gemini.adapter import GeminiAdapter, GeminiStream
from providers.gemini.convert import GeminiRequestError, StreamTranslator, request_to_gemini, response_to_openai

__all__ = [
    "GeminiAdapter",
    "GeminiRequestError",
    "GeminiStream",
    "StreamTranslator",
    "request_to_gemini",
    "response_to_openai",
]
