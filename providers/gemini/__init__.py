"""Google Gemini through its native ``generateContent`` API, translated to and from OpenAI's shape."""

from providers.gemini.adapter import GeminiAdapter
from providers.gemini.convert import StreamTranslator, request_to_gemini, response_to_openai
from providers.gemini.errors import GeminiRequestError

__all__ = [
    "GeminiAdapter",
    "GeminiRequestError",
    "StreamTranslator",
    "request_to_gemini",
    "response_to_openai",
]
