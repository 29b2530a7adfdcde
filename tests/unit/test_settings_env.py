"""``TOLLWAY_*`` environment overrides: every setting, parsed by its field's type."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.settings import MASK, SECRET_FIELDS, Settings, SettingsError, env_variable, load_settings, redacted

# Values the cross-field checks accept for strings they validate; any other field gets a value
# derived from its type, so a setting added tomorrow is covered without touching this test.
STRING_SAMPLES = {
    "database_url": "sqlite+aiosqlite:///./elsewhere.db",
    "log_level": "debug",
    "markup_percent": "12.5",
    "bootstrap_credits": "7",
    "admin_token": "a" * 32,
    "session_secret": "s" * 32,
    "function_invocation_credits": "0.25",
    "egress_proxy": "http://proxy.internal:3128",
    "otel_traces_endpoint": "http://otel-collector:4318/v1/traces",
    "log_format": "json",
    "metrics_bind": "127.0.0.1:9464",
    "signup_credits": "250",
    "public_url": "https://ai.example.com",
}
# Fields whose type-derived sample would break their bounds (the cache TTL is at most 1 s).
NUMBER_SAMPLES: dict[str, tuple[str, Any]] = {"function_cache_ttl_s": ("0.5", 0.5)}
TABLE_SAMPLES: dict[str, tuple[str, Any]] = {
    "providers": ('{"up": {"kind": "openai", "api_key": "sk-x"}}', "openai"),
    "models": ('{"demo/echo": {"provider": "demo", "upstream_model": "echo"}}', "echo"),
    "function_secret_keys": ('{"k2027": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}', "k2027"),
    "credit_packages": ('[{"id": "starter", "name": "Starter", "credits": "12000", "price": "9.00"}]', "starter"),
    "payments": (
        '{"checkout_provider": "stripe", "stripe": {"api_key_env": "STRIPE_SECRET_KEY"}}',
        "STRIPE_SECRET_KEY",
    ),
    "response_cache": ('{"price_per_mille": 250}', '"price_per_mille":250'),
}


def _sample(field: msgspec.inspect.Field, tmp_path: Path) -> tuple[str, Any]:
    """An env text for ``field`` that differs from its default, and the value it must load as."""
    shape = field.type
    if field.name == "geoip_database":
        path = tmp_path / "country.mmdb"
        path.write_bytes(b"")
        return str(path), str(path)
    if field.name in NUMBER_SAMPLES:
        return NUMBER_SAMPLES[field.name]
    if field.name in STRING_SAMPLES:
        return STRING_SAMPLES[field.name], STRING_SAMPLES[field.name]
    if isinstance(shape, msgspec.inspect.BoolType):
        return ("no", False) if field.default else ("yes", True)
    if isinstance(shape, msgspec.inspect.IntType):
        return str(field.default + 1), field.default + 1
    if isinstance(shape, msgspec.inspect.FloatType):
        return str(field.default + 0.5), field.default + 0.5
    if isinstance(shape, msgspec.inspect.StrType):
        return "from-env", "from-env"
    if isinstance(shape, msgspec.inspect.ListType):
        return "10.0.0.0/8, 127.0.0.1", ["10.0.0.0/8", "127.0.0.1"]
    raise AssertionError(f"no sample for {field.name}: {shape}")


def _fields() -> tuple[msgspec.inspect.Field, ...]:
    info = msgspec.inspect.type_info(Settings)
    assert isinstance(info, msgspec.inspect.StructType)
    return info.fields


@pytest.mark.parametrize("field", _fields(), ids=lambda field: field.name)
def test_settings_env_overrides_every_field(field: msgspec.inspect.Field, tmp_path: Path) -> None:
    env = {"TOLLWAY_REDIS_URL": "redis://cache:6379/0"} if field.name == "workers" else {}
    if field.name in TABLE_SAMPLES:
        text, marker = TABLE_SAMPLES[field.name]
        settings = load_settings(env={**env, env_variable(field.name): text})
        assert marker in msgspec.json.encode(getattr(settings, field.name)).decode()
        return
    text, expected = _sample(field, tmp_path)
    settings = load_settings(env={**env, env_variable(field.name): text})
    assert getattr(settings, field.name) == expected


def test_settings_env_list_takes_json_or_commas() -> None:
    assert load_settings(env={"TOLLWAY_TRUSTED_PROXIES": '["10.0.0.1", "::1"]'}).trusted_proxies == ["10.0.0.1", "::1"]
    assert load_settings(env={"TOLLWAY_TRUSTED_PROXIES": ""}).trusted_proxies == []


def test_settings_env_overrides_file_table(tmp_path: Path) -> None:
    path = tmp_path / "tollway.toml"
    path.write_text("[providers.file]\nkind = 'openai'\n")
    settings = load_settings(path, env={"TOLLWAY_PROVIDERS": '{"env": {"kind": "anthropic"}}'})
    assert list(settings.providers) == ["env"]


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("TOLLWAY_RETRY_ATTEMPTS", "0", ">= 1"),
        ("TOLLWAY_BREAKER_FAILURES", "-1", ">= 1"),
        ("TOLLWAY_HEADER_TIMEOUT_S", "0", "> 0"),
        ("TOLLWAY_CORS_MAX_AGE_S", "ten", "int"),
        ("TOLLWAY_WEBHOOK_POLL_S", "soon", "float"),
        ("TOLLWAY_SESSION_COOKIE_SECURE", "maybe", "true or false"),
        ("TOLLWAY_PROVIDERS", "openai", "JSON"),
        ("TOLLWAY_PROVIDERS", '{"x": {"kind": 5}}', "kind"),
        ("TOLLWAY_TRUSTED_PROXIES", '["10.0.0.1", 5]', "str"),
    ],
)
def test_settings_env_bad_value_names_the_variable(variable: str, value: str, needle: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env={variable: value})
    assert variable in str(caught.value) and needle in str(caught.value)


# Fields whose names look secret but hold none; anything else matching SECRET_LOOKING must be in
# SECRET_FIELDS, so `tollway config check` cannot print a new secret by accident.
SECRET_LOOKING = re.compile(r"secret|token|password|passwd|api_key|credential|private_key|signing|_key$")
HARMLESS = {"max_output_tokens", "api_key_env", "function_secret_key_file", "webhook_secret_env"}  # names, not keys


def _struct_fields(cls: type[msgspec.Struct]) -> set[str]:
    names: set[str] = set()
    pending: list[msgspec.inspect.Type] = [msgspec.inspect.type_info(cls)]
    while pending:
        shape = pending.pop()
        if isinstance(shape, msgspec.inspect.StructType):
            names.update(field.name for field in shape.fields)
            pending.extend(field.type for field in shape.fields)
        elif isinstance(shape, msgspec.inspect.DictType):
            pending.append(shape.value_type)
        elif isinstance(shape, msgspec.inspect.ListType):
            pending.append(shape.item_type)
        elif isinstance(shape, msgspec.inspect.UnionType):
            pending.extend(shape.types)
    return names


def test_settings_secret_fields_cover_every_secret_looking_field() -> None:
    looking = {name for name in _struct_fields(Settings) if SECRET_LOOKING.search(name)}
    assert looking - HARMLESS <= SECRET_FIELDS
    assert {"admin_token", "session_secret", "api_key"} <= SECRET_FIELDS


def test_settings_redacted_masks_secrets_and_url_passwords() -> None:
    settings = load_settings(
        env={},
        database_url="postgresql+asyncpg://u:pw@db/x?password=pw2&ssl=require",
        session_secret="s" * 32,
        providers={"o": {"kind": "openai", "api_key": "sk-1", "headers": {"X-Key": "h"}}},
    )
    shown = redacted(settings)
    assert shown["database_url"] == f"postgresql+asyncpg://u:{MASK}@db/x?password={MASK}&ssl=require"
    assert (shown["session_secret"], shown["admin_token"]) == (MASK, "")  # unset stays visibly unset
    assert shown["providers"]["o"]["api_key"] == MASK and shown["providers"]["o"]["headers"] == {"X-Key": MASK}
    assert "sk-1" not in msgspec.json.encode(shown).decode()


def test_settings_env_unknown_provider_kind_names_the_known_ones() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env={"TOLLWAY_PROVIDERS": '{"x": {"kind": "nope"}}'})
    assert "unknown provider kind 'nope'" in str(caught.value) and "openai" in str(caught.value)


def test_settings_redacted_masks_payment_secrets() -> None:
    settings = load_settings(
        env={},
        payments={
            "checkout_provider": "lemonsqueezy",
            "stripe": {"api_key": "sk_live_1", "webhook_secret": "whsec_2"},
            "lemonsqueezy": {"api_key": "ls_3", "store_id": "30883", "webhook_secret": "ls_4"},
        },
    )
    shown = redacted(settings)["payments"]
    assert shown["stripe"]["api_key"] == shown["stripe"]["webhook_secret"] == MASK
    assert shown["lemonsqueezy"]["webhook_secret"] == MASK and shown["lemonsqueezy"]["store_id"] == "30883"
    assert not {"sk_live_1", "whsec_2", "ls_3", "ls_4"} & set(msgspec.json.encode(shown).decode().split('"'))


@pytest.mark.parametrize(
    ("payments", "needle"),
    [
        ({"checkout_provider": "paypal"}, "checkout_provider"),
        ({"checkout_provider": "lemonsqueezy"}, "payments.lemonsqueezy.store_id"),
        ({"lemonsqueezy": {"store_id": "my-store"}}, "payments.lemonsqueezy.store_id"),
        ({"stripe": {"api_base": "api.stripe.com"}}, "payments.stripe.api_base"),
        ({"success_url": "/billing"}, "payments.success_url"),
        ({"webhook_tolerance_s": 0}, "webhook_tolerance_s"),
    ],
)
def test_settings_payment_errors_name_the_setting(payments: dict[str, Any], needle: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env={}, payments=payments)
    assert needle in str(caught.value)
