"""Token counts with tiktoken, offline.

The BPE rank files ship inside the package (``billing/encodings``) because tiktoken would
otherwise download them at first use, which an air-gapped gateway cannot do. Each file's
SHA-256 is checked when it is loaded (once per process, lazily). Counts serve two purposes:
the worst-case reservation before a call, and billing a stream whose provider never sent
usage. Both are rare (a byte bound sizes ordinary reservations, and upstreams report usage), so
neither tiktoken nor an encoding is loaded until a count is needed: an o200k encoding holds
some 70 MiB of ranks a gateway that never counts should not carry. For models that are not
OpenAI's the count is an estimate; ``o200k_base`` is used because modern tokenizers are close
to it in size.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import threading
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    import tiktoken

ENDOFTEXT = "<|endoftext|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
ENDOFPROMPT = "<|endofprompt|>"

# Patterns and special tokens exactly as tiktoken_ext.openai_public defines them.
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)
_O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)


class _Spec(msgspec.Struct, frozen=True):
    sha256: str
    pattern: str
    special_tokens: dict[str, int]


ENCODINGS: dict[str, _Spec] = {
    "cl100k_base": _Spec(
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pattern=_CL100K_PATTERN,
        special_tokens={
            ENDOFTEXT: 100257,
            FIM_PREFIX: 100258,
            FIM_MIDDLE: 100259,
            FIM_SUFFIX: 100260,
            ENDOFPROMPT: 100276,
        },
    ),
    "o200k_base": _Spec(
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pattern=_O200K_PATTERN,
        special_tokens={ENDOFTEXT: 199999, ENDOFPROMPT: 200018},
    ),
}

# Older OpenAI models use cl100k_base; everything newer (and every non-OpenAI model) o200k_base.
_CL100K_PREFIXES = ("gpt-4-", "gpt-3.5", "text-embedding-3", "text-embedding-ada")
_CL100K_EXACT = frozenset({"gpt-4", "gpt-4-32k", "gpt-35-turbo"})
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "chatgpt-4o")

# OpenAI's published recipe: every message is framed by 3 tokens, a name costs 1 more, and
# the reply is primed with 3.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
# Tool definitions are rendered into the prompt in a format OpenAI does not publish; counting
# their JSON plus this overhead per tool over-counts slightly, which is the safe side for a
# reservation.
TOKENS_PER_TOOL = 10
IMAGE_LOW_DETAIL = 85
IMAGE_TOKENS_PER_TILE = 170
# An image we do not decode (a URL or data URL) is reserved at the most a high-detail image
# can cost: 2048x768 after scaling is 4x2 tiles = 8 x 170 + 85.
IMAGE_UNKNOWN_SIZE = 8 * IMAGE_TOKENS_PER_TILE + IMAGE_LOW_DETAIL


class EncodingFileError(RuntimeError):
    """A shipped encoding file is missing or does not match its expected hash."""


def encoding_path(name: str) -> Path:
    return Path(str(resources.files("billing") / "encodings" / f"{name}.tiktoken"))


def load_ranks(path: Path, expected_sha256: str) -> dict[bytes, int]:
    """Parse a ``.tiktoken`` rank file after checking its SHA-256; never touches the network."""
    try:
        contents = path.read_bytes()
    except OSError as error:
        raise EncodingFileError(f"encoding file {path} cannot be read: {error}") from error
    digest = hashlib.sha256(contents).hexdigest()
    if digest != expected_sha256:
        raise EncodingFileError(f"encoding file {path} has sha256 {digest}, expected {expected_sha256}")
    ranks: dict[bytes, int] = {}
    for line in contents.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


_lock = threading.Lock()
_loaded: set[str] = set()


@functools.cache
def get_encoding(name: str) -> tiktoken.Encoding:
    """The named encoding, built once per process from the shipped file (blocking for a few
    hundred ms the first time: see :func:`encoding_loaded`)."""
    import tiktoken  # here, not at the top: loaded with the first count (module docstring)

    spec = ENCODINGS[name]
    with _lock:
        encoding = tiktoken.Encoding(
            name,
            pat_str=spec.pattern,
            mergeable_ranks=load_ranks(encoding_path(name), spec.sha256),
            special_tokens=spec.special_tokens,
        )
        _loaded.add(name)
        return encoding


def encoding_loaded(model: str | None = None) -> bool:
    """Whether counting for ``model`` (or, without one, for every model) needs no load first:
    a caller on the event loop runs a count inline only then, and in a worker thread otherwise."""
    if model is None:
        return len(_loaded) == len(ENCODINGS)
    return encoding_name_for_model(model) in _loaded


@functools.lru_cache(maxsize=1024)
def encoding_name_for_model(model: str) -> str:
    name = model.rsplit("/", 1)[-1].lower()
    if name.startswith(_O200K_PREFIXES):
        return "o200k_base"
    if name in _CL100K_EXACT or name.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return "o200k_base"


def encoding_for_model(model: str) -> tiktoken.Encoding:
    return get_encoding(encoding_name_for_model(model))


def count_text_tokens(text: str, model: str) -> int:
    """Tokens in plain text; special-token strings in user text count as text, never raise."""
    if not text:
        return 0
    return len(encoding_for_model(model).encode_ordinary(text))


def estimate_image_tokens(width: int, height: int, detail: str = "high") -> int:
    """OpenAI's tile formula: fit in 2048x2048, shortest side to 768, 170 per 512px tile + 85."""
    if detail == "low":
        return IMAGE_LOW_DETAIL
    scale = min(1.0, 2048 / max(width, height))
    scaled_width, scaled_height = width * scale, height * scale
    scale = min(1.0, 768 / min(scaled_width, scaled_height))
    scaled_width, scaled_height = scaled_width * scale, scaled_height * scale
    tiles = math.ceil(scaled_width / 512) * math.ceil(scaled_height / 512)
    return tiles * IMAGE_TOKENS_PER_TILE + IMAGE_LOW_DETAIL


def _content_tokens(content: Any, encoding: tiktoken.Encoding) -> int:
    if isinstance(content, str):
        return len(encoding.encode_ordinary(content))
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            total += len(encoding.encode_ordinary(part["text"]))
        elif kind == "image_url":
            image = part.get("image_url")
            detail = image.get("detail", "auto") if isinstance(image, dict) else "auto"
            total += IMAGE_LOW_DETAIL if detail == "low" else IMAGE_UNKNOWN_SIZE
        else:
            # Audio, files and future part types: count their JSON, an upper-ish bound.
            total += len(encoding.encode_ordinary(msgspec.json.encode(part).decode()))
    return total


# Chat body fields that steer sampling or the gateway and never reach the model as text; every
# other field but ``messages`` (tools, functions, response_format's schema, tool_choice,
# prediction, fields not invented yet) is counted as prompt, by its JSON: a slight over-count,
# the safe side for a reservation.
NOT_PROMPT_FIELDS = frozenset(
    {
        "messages", "model", "models", "provider", "user", "stream", "stream_options", "max_tokens",
        "max_completion_tokens", "n", "temperature", "top_p", "frequency_penalty", "presence_penalty",
        "logit_bias", "logprobs", "top_logprobs", "seed", "stop", "metadata", "store", "parallel_tool_calls",
        "service_tier", "modalities", "reasoning_effort",
    }
)  # fmt: skip


def prompt_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The parts of a chat body besides its messages that the model reads as prompt."""
    return {key: value for key, value in body.items() if key not in NOT_PROMPT_FIELDS}


def _tool_count(extra: dict[str, Any]) -> int:
    return sum(len(extra[name]) for name in ("tools", "functions") if isinstance(extra.get(name), list))


def count_chat_tokens(
    messages: list[dict[str, Any]],
    model: str,
    tools: list[dict[str, Any]] | None = None,
    *,
    extra: dict[str, Any] | None = None,
) -> int:
    """Prompt tokens of a chat request, by OpenAI's counting recipe; ``extra`` is every other
    prompt part of the body (see :func:`prompt_fields`), counted by its JSON."""
    encoding = encoding_for_model(model)
    total = REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE
        role = message.get("role")
        if isinstance(role, str):
            total += len(encoding.encode_ordinary(role))
        total += _content_tokens(message.get("content"), encoding)
        name = message.get("name")
        if isinstance(name, str):
            total += TOKENS_PER_NAME + len(encoding.encode_ordinary(name))
        tool_calls = message.get("tool_calls")
        for call in tool_calls if isinstance(tool_calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                total += len(encoding.encode_ordinary(str(function.get("name", ""))))
                total += len(encoding.encode_ordinary(str(function.get("arguments", ""))))
        tool_call_id = message.get("tool_call_id")
        if isinstance(tool_call_id, str):
            total += len(encoding.encode_ordinary(tool_call_id))
    for tool in tools or ():
        total += TOKENS_PER_TOOL + len(encoding.encode_ordinary(msgspec.json.encode(tool).decode()))
    if extra:
        total += TOKENS_PER_TOOL * _tool_count(extra) + len(
            encoding.encode_ordinary(msgspec.json.encode(extra).decode())
        )
    return total


def chat_tokens_upper_bound(body_bytes: int, messages: list[dict[str, Any]], extra: dict[str, Any]) -> int:
    """A bound on :func:`count_chat_tokens` without tokenising: a token is at least one byte,
    and the JSON body holds every string of the prompt at no fewer bytes than its UTF-8; what
    the recipe adds beyond the text (message framing, tools, images counted at their most)
    is added here. Cheap enough for every request; exact counting is for when it does not fit."""
    images = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            images += sum(1 for part in content if isinstance(part, dict) and part.get("type") == "image_url")
    return (
        body_bytes
        # Re-encoded, a number can be longer than the client wrote it (1e5 is 100000.0).
        + (len(msgspec.json.encode(extra)) if extra else 0)
        + REPLY_PRIMING
        + (TOKENS_PER_MESSAGE + TOKENS_PER_NAME) * len(messages)
        + TOKENS_PER_TOOL * _tool_count(extra)
        + IMAGE_UNKNOWN_SIZE * images
    )
