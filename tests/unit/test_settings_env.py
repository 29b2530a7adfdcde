"""``TOLLWAY_*`` environment overrides: every setting, parsed by its field's type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.settings import Settings, SettingsError, env_variable, load_settings

# Values the cross-field checks accept for strings they validate; any other field gets a value
# derived from its type, so a setting added tomorrow is covered without touching this test.
STRING_SAMPLES = {
    "database_url": "sqlite+aiosqlite:///./elsewhere.db",
    "markup_percent": "12.5",
    "bootstrap_credits": "7",
    "admin_token": "a" * 32,
    "session_secret": "s" * 32,
}
TABLE_SAMPLES: dict[str, tuple[str, Any]] = {
    "providers": ('{"up": {"kind": "openai", "api_key": "sk-x"}}', "openai"),
    "models": ('{"demo/echo": {"provider": "demo", "upstream_model": "echo"}}', "echo"),
}


def _sample(field: msgspec.inspect.Field, tmp_path: Path) -> tuple[str, Any]:
    """An env text for ``field`` that differs from its default, and the value it must load as."""
    shape = field.type
    if field.name == "geoip_database":
        path = tmp_path / "country.mmdb"
        path.write_bytes(b"")
        return str(path), str(path)
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
        ("TOLLWAY_PROVIDERS", '{"x": {"kind": "nope"}}', "kind"),
        ("TOLLWAY_TRUSTED_PROXIES", '["10.0.0.1", 5]', "str"),
    ],
)
def test_settings_env_bad_value_names_the_variable(variable: str, value: str, needle: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env={variable: value})
    assert variable in str(caught.value) and needle in str(caught.value)
