"""Every ``/api`` and ``/v1`` route, thrown generated requests: it never answers a 500.

Each route has a seed (a request it accepts); hypothesis mutates it: a field set to a huge or
negative int, ``1e30``, a NUL byte, a 100 kB string, a wrong type or nested JSON, a field
removed or an unknown one added, the body replaced by random or raw bytes (100,000 ``[``),
path ids and query parameters past 64 bits or with a NUL. Whatever it sends, the gateway
answers in the OpenAI error shape, never with ``internal_error``.

``test_route_fuzz_covers_every_route`` walks the app's route table: a new route without a seed
here fails it, so no route escapes the fuzzing; and every int or str path/query parameter must
carry bounds (``gateway.validation``).

Runs on SQLite + the embedded counters by default (``TOLLWAY_FUZZ_BACKENDS=sqlite,postgres``
for both); ``TOLLWAY_FUZZ_EXAMPLES`` sets examples per route.
"""

from __future__ import annotations

import os
import re
import secrets
import struct
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.params import ParameterKwarg
from litestar.routes import HTTPRoute

from gateway.app import create_app
from gateway.settings import ModelSettings, Settings
from tests.conftest import _asyncpg_url, _create_database, _drop_database, run_in_thread
from tests.fakes.function_api import workspace
from tests.fakes.gateway_fixtures import (
    ADMIN_TOKEN,
    FAKE_MODEL,
    Backend,
    Gateway,
    _delete_redis_prefix,
    gateway_settings,
    start_gateway,
)
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.servers import ThreadedServer
from tests.fakes.services import POSTGRES_ADMIN_URL, REDIS_URL

EXAMPLES = int(os.environ.get("TOLLWAY_FUZZ_EXAMPLES", "15"))
FUZZ_BACKENDS = os.environ.get("TOLLWAY_FUZZ_BACKENDS", "sqlite").split(",")
EMBED, INSTRUCT, DALLE, TTS, WHISPER, SORA = (
    "fake/embed-small",
    "fake/instruct",
    "fake/dall-e-3",
    "fake/tts-1",
    "fake/whisper-1",
    "fake/sora-2",
)

# -- what a request is made of ------------------------------------------------------------


@dataclass
class Seed:
    """A request the route accepts; ``auth``: "key", "admin" or "none"."""

    json: Any = None
    form: dict[str, str] | None = None
    file: bool = False
    path: dict[str, Any] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    auth: str = "key"


# Seeds carry every structure the route reads, so that mutating what is there (a list where a
# dict was, 5 where tool_calls was) reaches each parser; random keys alone rarely would.
CHAT = {
    "model": FAKE_MODEL,
    "models": [FAKE_MODEL],
    "messages": [
        {"role": "system", "content": "be brief", "name": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "user": "u-1",
    "max_tokens": 20,
    "stream": False,
    "stream_options": {"include_usage": True},
    "provider": {"order": ["fake"], "allow_fallbacks": True, "sort": "price"},
}

# An Anthropic Messages request with every block type the translation reads.
MESSAGES = {
    "model": FAKE_MODEL,
    "max_tokens": 20,
    "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hi"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            ],
        },
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
    ],
    "tools": [{"name": "f", "input_schema": {"type": "object"}}],
    "tool_choice": {"type": "auto"},
    "stop_sequences": ["END"],
    "metadata": {"user_id": "u-1"},
    "stream": False,
}

# A Responses request with every field the translation reads set.
RESPONSES = {
    "model": FAKE_MODEL,
    "instructions": "Be brief.",
    "input": [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "hi"},
                {"type": "input_image", "image_url": "https://example.com/a.png"},
            ],
        },
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
    ],
    "tools": [{"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}, "strict": False}],
    "tool_choice": "auto",
    "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}}},
    "max_output_tokens": 5,
    "temperature": 0.5,
    "top_p": 1,
    "parallel_tool_calls": True,
    "store": False,
    "metadata": {"k": "v"},
    "user": "u",
}

# A proxy function with every field set; "spare_variable" is filled in at start, at any depth.
FUNCTION = {
    "name": "fuzz function",
    "description": "d",
    "target_url": "https://api.example.com/v1/x?a=1",
    "method": "POST",
    "headers": {"Accept": "application/json"},
    "secret_mappings": [
        {"variable_id": "spare_variable", "inject_as": "header", "key": "Authorization", "template": "Bearer ${value}"},
        {"variable_id": "spare_variable", "inject_as": "body", "key": "auth.token"},
    ],
    "allowed_origins": ["https://app.example.com", "*.example.com"],
    "pass_through_body": False,
    "body_template": {"a": {"b": [1, "x", None]}},
    "rate_limit_per_minute": 60,
    "forward_path": True,
    "forward_query": False,
    "timeout_ms": 1000,
}

# Keyed by the route table's (method, path); ``{spare_key}`` etc. are filled in at start.
SEEDS: dict[tuple[str, str], Seed] = {
    ("POST", "/v1/chat/completions"): Seed(json=CHAT),
    ("POST", "/v1/messages"): Seed(json=MESSAGES),
    ("POST", "/v1/messages/count_tokens"): Seed(json={k: v for k, v in MESSAGES.items() if k != "max_tokens"}),
    ("POST", "/v1/completions"): Seed(
        json={"model": INSTRUCT, "prompt": ["Say", "hello"], "max_tokens": 5, "n": 1, "best_of": 1, "user": "u"}
    ),
    ("POST", "/v1/embeddings"): Seed(json={"model": EMBED, "input": ["one", [1, 2]], "dimensions": 8, "user": "u"}),
    ("POST", "/v1/images/generations"): Seed(
        json={"model": DALLE, "prompt": "a lighthouse", "n": 1, "size": "1024x1024", "quality": "hd", "user": "u"}
    ),
    ("POST", "/v1/audio/speech"): Seed(
        json={"model": TTS, "voice": "alloy", "input": "Hello", "response_format": "wav", "speed": 1}
    ),
    ("POST", "/v1/audio/transcriptions"): Seed(
        form={"model": WHISPER, "user": "u-1", "response_format": "json", "language": "en"}, file=True
    ),
    ("POST", "/v1/videos"): Seed(form={"model": SORA, "prompt": "dawn", "seconds": "4", "size": "720x1280"}),
    ("GET", "/v1/videos/{video_id:str}"): Seed(path={"video_id": "video_123"}),
    ("POST", "/v1/responses"): Seed(json=RESPONSES),
    ("GET", "/v1/videos/{video_id:str}/content"): Seed(path={"video_id": "video_123"}, query={"variant": "video"}),
    ("GET", "/v1/models"): Seed(),
    ("GET", "/v1/models/{slug:path}"): Seed(path={"slug": FAKE_MODEL}),
    ("GET", "/v1/generation"): Seed(query={"id": "req_nope"}),
    ("GET", "/api/keys"): Seed(),
    ("POST", "/api/keys"): Seed(
        json={"name": "fuzz", "description": "d", "rpm_limit": 10, "spending_limit": "1.5", "allowed_models": []}
    ),
    ("GET", "/api/keys/{key_id:int}"): Seed(path={"key_id": "spare_key"}),
    ("PATCH", "/api/keys/{key_id:int}"): Seed(json={"name": "spare", "tpm_limit": 100}, path={"key_id": "spare_key"}),
    ("DELETE", "/api/keys/{key_id:int}"): Seed(path={"key_id": "spare_key"}),
    ("POST", "/api/keys/{key_id:int}/revoke-tokens"): Seed(path={"key_id": "spare_key"}),
    ("POST", "/api/keys/ephemeral"): Seed(json={"key_id": "spare_key", "ttl": 60}),
    ("POST", "/api/keys/ephemeral/revoke"): Seed(json={"token": "bt-nope"}),
    ("GET", "/api/audit"): Seed(query={"limit": "10", "before_id": "5"}),
    ("GET", "/api/members"): Seed(),
    ("POST", "/api/members"): Seed(json={"email": "fuzz@example.com", "role": "viewer"}),
    ("PATCH", "/api/members/{member_id:int}"): Seed(json={"role": "viewer"}, path={"member_id": "spare_member"}),
    ("DELETE", "/api/members/{member_id:int}"): Seed(path={"member_id": "spare_member"}),
    ("GET", "/api/invitations"): Seed(),
    ("POST", "/api/invitations"): Seed(json={"email": "fuzz@example.com", "role": "viewer"}),
    ("DELETE", "/api/invitations/{invitation_id:int}"): Seed(path={"invitation_id": "spare_invitation"}),
    ("POST", "/api/invitations/accept"): Seed(json={"token": "twinv_nope", "password": "fuzz-Passw0rd-x"}, auth="none"),
    ("GET", "/api/credits"): Seed(query={"limit": "10", "before_id": "5"}),
    ("PUT", "/api/credits/threshold"): Seed(json={"low_credits_threshold": "250.5"}),
    ("GET", "/api/usage"): Seed(query={"key_id": "1", "model": FAKE_MODEL, "since": "2026-01-01T00:00:00Z"}),
    ("GET", "/api/usage/summary"): Seed(query={"group_by": "model", "until": "2030-01-01T00:00:00Z"}),
    ("GET", "/api/webhooks/deliveries"): Seed(query={"limit": "10"}),
    ("GET", "/api/webhooks/secret"): Seed(),
    ("POST", "/api/webhooks/secret/rotate"): Seed(),
    ("POST", "/api/auth/login"): Seed(json={"email": "a@example.com", "password": "pw-12345"}, auth="none"),
    ("POST", "/api/auth/refresh"): Seed(auth="none"),
    ("POST", "/api/auth/logout"): Seed(auth="none"),
    ("GET", "/api/auth/me"): Seed(),
    ("POST", "/api/auth/password"): Seed(json={"current_password": "a", "new_password": "b"}),
    ("GET", "/api/admin/accounts"): Seed(auth="admin"),
    ("POST", "/api/admin/accounts"): Seed(json={"name": "fuzz", "credits": "5"}, auth="admin"),
    ("PATCH", "/api/admin/accounts/{account_id:int}"): Seed(
        json={"status": "active"}, path={"account_id": "spare_account"}, auth="admin"
    ),
    ("POST", "/api/admin/accounts/{account_id:int}/credits"): Seed(
        json={"amount": "1", "reason": "r", "idempotency_key": "k"}, path={"account_id": "spare_account"}, auth="admin"
    ),
    ("POST", "/api/admin/accounts/{account_id:int}/refunds"): Seed(
        json={"amount": "1", "idempotency_key": "k"}, path={"account_id": "spare_account"}, auth="admin"
    ),
    ("POST", "/api/admin/accounts/{account_id:int}/keys"): Seed(
        json={"name": "k"}, path={"account_id": "spare_account"}, auth="admin"
    ),
    ("POST", "/api/admin/accounts/{account_id:int}/members"): Seed(
        json={"email": "o@example.com", "role": "owner"}, path={"account_id": "spare_account"}, auth="admin"
    ),
    ("GET", "/api/admin/keys"): Seed(query={"account_id": "1"}, auth="admin"),
    ("DELETE", "/api/admin/keys/{key_id:int}"): Seed(path={"key_id": "spare_admin_key"}, auth="admin"),
    ("GET", "/api/admin/models"): Seed(auth="admin"),
    ("GET", "/api/admin/anomalies"): Seed(auth="admin"),
    ("GET", "/api/admin/revenue"): Seed(query={"from": "2026-01", "to": "2026-12"}, auth="admin"),
    ("PUT", "/api/admin/models/{slug:path}"): Seed(
        json={"input_per_mtok": "0.15", "output_per_mtok": "0.6"}, path={"slug": INSTRUCT}, auth="admin"
    ),
    ("DELETE", "/api/admin/models/{slug:path}"): Seed(path={"slug": INSTRUCT}, auth="admin"),
    # Proxy functions (the spare function is deleted by the last of them).
    ("GET", "/api/function-templates"): Seed(),
    ("GET", "/api/environments/{environment_id:int}/functions"): Seed(
        path={"environment_id": "spare_environment"}, query={"q": "fuzz", "limit": "10", "cursor": ""}
    ),
    ("POST", "/api/environments/{environment_id:int}/functions"): Seed(
        json=FUNCTION, path={"environment_id": "spare_environment"}
    ),
    ("GET", "/api/functions/{function_id:str}"): Seed(path={"function_id": "spare_function"}),
    ("PATCH", "/api/functions/{function_id:str}"): Seed(
        json={**FUNCTION, "name": "fuzz renamed"}, path={"function_id": "spare_function"}
    ),
    ("POST", "/api/functions/{function_id:str}/enable"): Seed(path={"function_id": "spare_function"}),
    ("POST", "/api/functions/{function_id:str}/disable"): Seed(path={"function_id": "spare_function"}),
    ("POST", "/api/functions/{function_id:str}/regenerate-token"): Seed(path={"function_id": "spare_function"}),
    ("GET", "/api/functions/{function_id:str}/token"): Seed(path={"function_id": "spare_function"}),
    # The server calls the function: one whose target is the fake upstream on 127.0.0.1.
    ("POST", "/api/functions/{function_id:str}/test"): Seed(
        json={"method": "POST", "path": "v1/models", "query": "a=1", "body": "{}", "content_type": "application/json"},
        path={"function_id": "spare_local_function"},
    ),
    ("DELETE", "/api/functions/{function_id:str}"): Seed(path={"function_id": "spare_function"}),
    # Projects, environments and variables (the delete seeds take spares of their own).
    ("GET", "/api/projects"): Seed(),
    ("POST", "/api/projects"): Seed(json={"name": "fuzz", "description": "d"}),
    ("GET", "/api/projects/{project_id:int}"): Seed(path={"project_id": "spare_project"}),
    ("PATCH", "/api/projects/{project_id:int}"): Seed(
        json={"name": "spare", "description": "d"}, path={"project_id": "spare_project"}
    ),
    ("DELETE", "/api/projects/{project_id:int}"): Seed(path={"project_id": "spare_doomed_project"}),
    ("GET", "/api/projects/{project_id:int}/environments"): Seed(path={"project_id": "spare_project"}),
    ("POST", "/api/projects/{project_id:int}/environments"): Seed(
        json={"name": "fuzz", "clone_from": "spare_project_environment"}, path={"project_id": "spare_project"}
    ),
    ("PATCH", "/api/environments/{environment_id:int}"): Seed(
        json={"name": "Development"}, path={"environment_id": "spare_project_environment"}
    ),
    ("DELETE", "/api/environments/{environment_id:int}"): Seed(path={"environment_id": "spare_doomed_environment"}),
    ("GET", "/api/environments/{environment_id:int}/variables"): Seed(
        path={"environment_id": "spare_project_environment"}
    ),
    ("POST", "/api/environments/{environment_id:int}/variables"): Seed(
        json={"key": "FUZZ_KEY", "value": "v", "is_secret": True, "description": "d"},
        path={"environment_id": "spare_project_environment"},
    ),
    ("PATCH", "/api/variables/{variable_id:int}"): Seed(
        json={"value": "v2", "description": "d"}, path={"variable_id": "spare_project_variable"}
    ),
    ("DELETE", "/api/variables/{variable_id:int}"): Seed(path={"variable_id": "spare_doomed_variable"}),
    ("POST", "/api/variables/{variable_id:int}/reveal"): Seed(path={"variable_id": "spare_project_variable"}),
    ("GET", "/api/projects/{project_id:int}/analytics"): Seed(
        path={"project_id": "spare_project"},
        query={"days": "7", "environment_id": "spare_project_environment", "function_id": "spare_function"},
    ),
    ("GET", "/api/functions/{function_id:str}/code/{platform:str}"): Seed(
        path={"function_id": "code_function", "platform": "lambda"}, query={"download": "0"}
    ),
    # Buying credits (a key acts as an admin: the checkout refuses it before reading the body;
    # tests/integration/test_payment_webhooks.py throws hostile bodies at it as an owner).
    ("GET", "/api/billing/packages"): Seed(),
    ("POST", "/api/billing/checkout"): Seed(json={"package": "starter"}),
}

# Routes whose bodies have the most structure get more examples.
WEIGHT = {
    ("POST", "/v1/chat/completions"): 5,
    ("POST", "/v1/messages"): 3,
    ("POST", "/api/keys"): 2,
    ("PATCH", "/api/keys/{key_id:int}"): 2,
    ("POST", "/api/environments/{environment_id:int}/functions"): 3,
    ("PATCH", "/api/functions/{function_id:str}"): 3,
}

# /v1 routes whose 500s need the pipeline (the lead's files); see the report in the branch.
V1_KNOWN_500: dict[tuple[str, str], str] = {}

# -- the values a hostile caller sends ---------------------------------------------------------

HUGE_INTS = [2**31 - 1, 2**31, 2**62, 2**63 - 1, 2**63, 2**64, 10**30, -(2**31) - 1, -(2**63) - 1, -(10**30)]
NASTY_TEXT = [
    "",
    "a\x00b",
    "\x00",
    "x" * 3000,
    "y" * 100_000,
    "1e400",
    "1e30",
    "-1e999999999",
    "NaN",
    "Infinity",
    "9" * 40,
    "../../etc",
    "ü\u202e\ufeff",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+14:00",
]
FIELD_NAMES = [
    "model",
    "models",
    "messages",
    "user",
    "tool_calls",
    "tools",
    "content",
    "role",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stream",
    "stream_options",
    "provider",
    "input",
    "prompt",
    "size",
    "quality",
    "seconds",
    "voice",
    "response_format",
    "name",
    "description",
    "spending_limit",
    "rpm_limit",
    "tpm_limit",
    "cache_ttl_s",
    "webhook_url",
    "expires_at",
    "allowed_models",
    "amount",
    "reason",
    "idempotency_key",
    "key_id",
    "ttl",
    "email",
    "password",
    "account_id",
    "status",
    "per_unit_usd_variants",
    "target_url",
    "headers",
    "secret_mappings",
    "variable_id",
    "inject_as",
    "allowed_origins",
    "body_template",
    "template",
    "key",
    "value",
    "is_secret",
    "clone_from",
]

scalars = st.one_of(
    st.sampled_from(HUGE_INTS),
    st.sampled_from(NASTY_TEXT),
    st.sampled_from([1e30, -1e30, 1e-30, 0, -1, 0.5, True, False, None]),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars | scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
RAW_BODIES = [
    b"[" * 100_000,
    b'{"a":' * 50_000,
    b'{"model": "fake/gpt-4o-mini", "messages": [{"role": "user", "content": ' + b"[" * 100_000,
    b"",
    b"null",
    b"1e400",
    b'{"amount": 1e400, "name": 1e400, "model": 1e400}',
    b'{"rpm_limit": 1' + b"0" * 400 + b"}",
    b"\xff\xfe\x00",
    b"{",
]
query_values = st.one_of(st.sampled_from([str(n) for n in HUGE_INTS] + NASTY_TEXT[:4] + ["-1", "0"]), st.text())


def _nodes(value: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key or index) in a JSON value, at any depth."""
    if isinstance(value, dict | list):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in list(items):
            yield value, key
            yield from _nodes(child)


@st.composite
def mutated_json(draw: st.DrawFn, seed: Any) -> Any:
    """The seed with one to three nodes replaced, removed or added (any depth, uniformly)."""
    body = msgspec.json.decode(msgspec.json.encode(seed)) if seed is not None else {}
    # Which node: uniformly at random (hypothesis' own draws favour the first of a list).
    pick = draw(st.randoms(use_true_random=True))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["replace"] * 6 + ["add", "add", "delete", "whole"]))
        nodes = list(_nodes(body))
        if op == "whole" or not nodes:
            return draw(json_values)
        container, key = pick.choice(nodes)
        if op == "replace":
            container[key] = draw(json_values)
        elif op == "delete":
            del container[key]
        else:
            dicts = [c for c, _k in nodes if isinstance(c, dict)] or [body]
            target = pick.choice(dicts)
            if isinstance(target, dict):
                target[draw(st.sampled_from(FIELD_NAMES) | st.text(max_size=8))] = draw(json_values)
    return body


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    content: bytes | None = None
    form: dict[str, str] | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    auth: str = "key"

    def describe(self) -> str:
        body = (self.content or b"")[:300] if self.form is None else repr(self.form)[:300].encode()
        return f"{self.method} {self.path} query={str(self.query)[:200]} body={body!r}"


def _wav(seconds: float, rate: int = 8000) -> bytes:
    frames = int(seconds * rate)
    header = b"RIFF" + struct.pack("<I", 36 + frames * 2) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    return header + b"data" + struct.pack("<I", frames * 2) + bytes(frames * 2)


def path_value(kind: str, seeded: Any) -> st.SearchStrategy[str]:
    if kind == "int":
        # Never a small positive id but the spare's: the caller's own key and account stay usable.
        return st.one_of(
            st.just(str(seeded)),
            st.sampled_from([str(n) for n in HUGE_INTS] + ["0", "-1"]),
            st.integers(min_value=10**6).map(str),
            st.integers(max_value=0).map(str),
        )
    safe = "/" if kind == "path" else ""
    return st.one_of(st.just(str(seeded)), st.sampled_from(NASTY_TEXT[:4]), st.text(min_size=1, max_size=40)).map(
        lambda text: quote(text, safe=safe)
    )


@st.composite
def requests_for(draw: st.DrawFn, method: str, template: str, seed: Seed, spares: dict[str, Any]) -> Request:
    def fill(value: Any) -> Any:
        if isinstance(value, list):
            return [fill(item) for item in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return spares.get(value, value) if isinstance(value, str) else value

    path = template
    for name, kind in re.findall(r"\{(\w+):(\w+)\}", template):
        value = draw(path_value(kind, fill(seed.path[name])))
        path = path.replace(f"{{{name}:{kind}}}", value.lstrip("/") if kind == "path" else value)
    query = {name: str(fill(value)) for name, value in seed.query.items()}
    for name in draw(
        st.lists(st.sampled_from(sorted(seed.query)), max_size=2, unique=True) if seed.query else st.just([])
    ):
        query[name] = draw(query_values)
    request = Request(method, path, query, auth=seed.auth)
    if seed.form is not None:
        form = dict(seed.form)
        for name in draw(st.lists(st.sampled_from(sorted(form) + FIELD_NAMES[:20]), max_size=3, unique=True)):
            form[name] = draw(st.sampled_from(NASTY_TEXT) | st.sampled_from([str(n) for n in HUGE_INTS]) | st.text())
        request.form = form
        if seed.file:
            audio = draw(st.sampled_from([_wav(1.0), b"", b"\x00" * 64, b"RIFF" + b"\xff" * 40]))
            request.files = {"file": ("a.wav", audio, "audio/wav")}
        return request
    if seed.json is None and method in ("GET", "DELETE"):
        return request
    seeded = msgspec.json.decode(msgspec.json.encode(seed.json)) if seed.json is not None else None
    seeded = fill(seeded)
    if draw(st.integers(0, 9)) == 0:
        request.content = draw(st.sampled_from(RAW_BODIES))
    else:
        request.content = msgspec.json.encode(draw(mutated_json(seeded)))
    return request


# -- the gateway under fire --------------------------------------------------------------------


def _model(upstream: str, category: str, **prices: Any) -> ModelSettings:
    return ModelSettings(provider="fake", upstream_model=upstream, category=category, **prices)  # type: ignore[arg-type]


def _settings(backend: Backend, fake: FakeOpenAI) -> Settings:
    base = gateway_settings(backend, fake)
    models = {
        **base.models,
        EMBED: _model("text-embedding-3-small", "embedding", input_per_mtok=Decimal("0.02")),
        INSTRUCT: _model("gpt-3.5-turbo-instruct", "text", input_per_mtok=Decimal("1.5"), output_per_mtok=Decimal("2")),
        DALLE: _model(
            "dall-e-3", "image", per_unit_usd=Decimal("0.04"), per_unit_usd_variants={"1024x1024/hd": Decimal("0.08")}
        ),
        TTS: _model("tts-1", "tts", per_unit_usd=Decimal("0.000015")),
        WHISPER: _model("whisper-1", "stt", per_unit_usd=Decimal("0.0001")),
        SORA: _model("sora-2", "video", per_unit_usd=Decimal("0.01")),
    }
    return gateway_settings(backend, fake, models=models)


@dataclass
class Target:
    gateway: Gateway
    spares: dict[str, Any]
    # One client for every example: ``httpx.request`` builds a client per call, and with it an
    # SSL context (the CA bundle parsed: ~35 ms of CPU, more than the request itself).
    client: httpx.Client


def _backend(name: str, tmp: Any) -> Generator[Backend, None, None]:
    prefix = f"twfuzz:{secrets.token_hex(4)}:"
    if name == "sqlite":
        yield Backend("sqlite", f"sqlite+aiosqlite:///{tmp}/fuzz.db", "", prefix)
        return
    database = f"tollway_fuzz_{secrets.token_hex(5)}"
    run_in_thread(_create_database(database))
    try:
        yield Backend("postgres", _asyncpg_url(POSTGRES_ADMIN_URL, database), REDIS_URL, prefix)
    finally:
        run_in_thread(_delete_redis_prefix(REDIS_URL, prefix))
        run_in_thread(_drop_database(database))


@pytest.fixture(scope="module", params=FUZZ_BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    fake = FakeOpenAI()
    upstream = ThreadedServer(fake).start()
    fake.url = upstream.url  # type: ignore[attr-defined]
    backends = _backend(request.param, tmp_path_factory.mktemp("fuzz"))
    gateway, server = start_gateway(_settings(next(backends), fake), fake, credits_micro=10**12)
    try:
        with httpx.Client(timeout=60) as client:
            yield Target(gateway, _spares(gateway), client)
    finally:
        server.stop()
        upstream.stop()
        backends.close()


def _spares(gateway: Gateway) -> dict[str, Any]:
    """Things the seeds may change or delete, so the caller's own key and account stay usable."""
    key = {"Authorization": f"Bearer {gateway.key}"}
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    spare_key = httpx.post(gateway.url + "/api/keys/", json={"name": "spare"}, headers=key).json()["id"]
    member = httpx.post(
        gateway.url + f"/api/admin/accounts/{gateway.account_id}/members/",
        json={"email": "m@example.com", "password": "fuzz-Passw0rd-x", "role": "member"},
        headers=admin,
    ).json()
    invitation = httpx.post(gateway.url + "/api/invitations/", json={"email": "i@example.com"}, headers=key).json()
    account = httpx.post(gateway.url + "/api/admin/accounts/", json={"name": "spare"}, headers=admin).json()
    admin_key = httpx.post(
        gateway.url + f"/api/admin/accounts/{account['id']}/keys/", json={"name": "spare"}, headers=admin
    ).json()
    functions = workspace(gateway, "Fuzz")
    spare_function = httpx.post(
        gateway.url + f"/api/environments/{functions.env}/functions/",
        json={"name": "spare", "target_url": "https://api.example.com/x"},
        headers=key,
    ).json()
    local_function = httpx.post(
        gateway.url + f"/api/environments/{functions.env}/functions/",
        json={"name": "local", "target_url": gateway.fake.url, "forward_path": True, "timeout_ms": 2000},  # type: ignore[attr-defined]
        headers=key,
    ).json()
    # Download Code's own function (the spare above is deleted by the last function seed).
    mapping = {
        "variable_id": functions.variable,
        "inject_as": "header",
        "key": "Authorization",
        "template": "Bearer ${value}",
    }
    code_function = httpx.post(
        gateway.url + f"/api/environments/{functions.env}/functions/",
        json={"name": "code", "target_url": "https://api.example.com/x", "secret_mappings": [mapping]},
        headers=key,
    ).json()
    return {
        "spare_local_function": local_function["id"],
        "spare_key": spare_key,
        "spare_member": member["id"],
        "spare_invitation": invitation["id"],
        "spare_account": account["id"],
        "spare_admin_key": admin_key["id"],
        "code_function": code_function["id"],
        "spare_environment": functions.env,
        "spare_variable": functions.variable,
        "spare_function": spare_function["id"],
        **_project_spares(gateway.url, key),
    }


def _project_spares(url: str, key: dict[str, str]) -> dict[str, int]:
    """A project (its first environment and a variable there) the seeds change, and one
    project, environment and variable the delete seeds may take."""
    project = httpx.post(url + "/api/projects/", json={"name": "spare"}, headers=key).json()
    doomed = httpx.post(url + "/api/projects/", json={"name": "doomed"}, headers=key).json()
    development, staging = project["environments"][0]["id"], project["environments"][1]["id"]
    variables = [
        httpx.post(
            url + f"/api/environments/{development}/variables/", json={"key": name, "value": "v"}, headers=key
        ).json()["id"]
        for name in ("SPARE", "DOOMED")
    ]
    return {
        "spare_project": project["id"],
        "spare_doomed_project": doomed["id"],
        "spare_project_environment": development,
        "spare_doomed_environment": staging,
        "spare_project_variable": variables[0],
        "spare_doomed_variable": variables[1],
    }


def send(target: Target, request: Request) -> httpx.Response:
    """One request as ``httpx.request`` would send it: the shared client keeps no cookies from
    an earlier answer (a login seed's session cookie must not authenticate the next example)."""
    gateway = target.gateway
    headers = {
        "key": {"Authorization": f"Bearer {gateway.key}"},
        "admin": {"Authorization": f"Bearer {ADMIN_TOKEN}"},
        "none": {},
    }[request.auth]
    if request.content is not None:
        headers = {**headers, "content-type": "application/json"}
    target.client.cookies.clear()
    try:
        return target.client.request(
            request.method,
            gateway.url + request.path,
            params=request.query,
            headers=headers,
            content=request.content,
            data=request.form,
            files=request.files,
        )
    finally:
        target.client.cookies.clear()


def no_internal_error(response: httpx.Response) -> str | None:
    """``None`` when the answer is acceptable; else what is wrong with it."""
    if response.status_code == 500:
        return f"500: {response.text[:300]}"
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith("application/json"):
        error = response.json().get("error") if isinstance(response.json(), dict) else None
        if not isinstance(error, dict) or error.get("code") == "internal_error":
            return f"{response.status_code}: {response.text[:300]}"
    return None


def _route_id(route: tuple[str, str]) -> str:
    return f"{route[0]} {route[1]}"


def _params() -> list[Any]:
    marks = {
        route: pytest.mark.xfail(strict=False, reason=f"/v1 pipeline: {why}") for route, why in V1_KNOWN_500.items()
    }
    return [pytest.param(route, id=_route_id(route), marks=marks.get(route, ())) for route in SEEDS]


@pytest.mark.parametrize("route", _params())
def test_route_fuzz_never_answers_500(target: Target, route: tuple[str, str]) -> None:
    method, template = route

    @settings(
        max_examples=EXAMPLES * WEIGHT.get(route, 1),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(request=requests_for(method, template, SEEDS[route], target.spares))
    def throw(request: Request) -> None:
        problem = no_internal_error(send(target, request))
        assert problem is None, f"{request.describe()}\n -> {problem}"

    throw()


# -- no route escapes --------------------------------------------------------------------------


def _api_routes() -> list[tuple[str, str, Any]]:
    app = create_app(Settings())
    found: list[tuple[str, str, Any]] = []
    for route in app.routes:
        if isinstance(route, HTTPRoute) and route.path.startswith(("/api", "/v1")):
            for handler in route.route_handlers:
                for method in sorted(handler.http_methods - {"OPTIONS", "HEAD"}):
                    found.append((method, route.path, handler))
    return found


def test_route_fuzz_covers_every_route() -> None:
    routes = {(method, path) for method, path, _handler in _api_routes()}
    assert routes - set(SEEDS) == set(), "add a seed to SEEDS for each new route"
    assert set(SEEDS) - routes == set(), "a seeded route no longer exists"


def test_route_fuzz_every_parameter_is_bounded() -> None:
    """Path and query ints carry le/ge, strs max_length (``gateway.validation``), so a 64-bit
    overflow or a 5 MB query string is a 400 before any handler code runs."""
    unbounded = []
    for method, path, handler in _api_routes():
        for name, parameter in handler.parsed_fn_signature.parameters.items():
            # Path and query parameters; the injected ``gateway``/``caller`` and the ``data``
            # body (checked by its Struct's bounds) are not parameters.
            if (
                name in ("self", "request", "scope")
                or name in handler.resolve_dependencies()
                or not isinstance(parameter.kwarg_definition, ParameterKwarg)
            ):
                continue
            bounds = parameter.kwarg_definition
            text = "str" in str(parameter.annotation)
            if (text and bounds.max_length is None) or (not text and (bounds.le is None or bounds.ge is None)):
                unbounded.append(f"{method} {path}: {name}")
    assert unbounded == []


def test_route_fuzz_billing_still_settles(target: Target) -> None:
    """After everything above was thrown at it, a request is still billed: no value the door let
    in has poisoned the settlement writes every tenant shares (issue 10, item 1)."""
    gateway = target.gateway
    response = httpx.post(
        gateway.v1 + "/chat/completions",
        json={"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {gateway.key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]
    assert request_id in {record.request_id for record in gateway.usage_records()}
    assert gateway.debit_count(request_id) == 1
