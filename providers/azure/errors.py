"""Azure OpenAI answers errors in OpenAI's envelope: OpenAI's mapping, named here so every
provider package has the same files."""

from providers.openai.errors import error_message, http_error

__all__ = ["error_message", "http_error"]
