"""Azure OpenAI's payloads are OpenAI's: the same view types, named here so every provider
package has the same files."""

from providers.openai.types import ChunkView, ErrorView, UsageView, chunk_decoder, error_decoder

__all__ = ["ChunkView", "ErrorView", "UsageView", "chunk_decoder", "error_decoder"]
