from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from gateway.settings import SettingsError, load_settings, sqlite_path

CONFIG = """
database_url = "postgresql+asyncpg://db/tollway"
redis_url = "redis://cache:6379/0"
port = 9000
[providers.openai]
kind = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"
[models."openai/gpt-4o-mini"]
provider = "openai"
upstream_model = "gpt-4o-mini"
category = "text"
input_per_mtok = "0.15"
output_per_mtok = "0.60"
max_output_tokens = 16384
context_length = 128000
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tollway.toml"
    path.write_text(text)
    return path


def test_settings_defaults_are_embedded() -> None:
    settings = load_settings(env={})
    assert settings.database_url == "sqlite+aiosqlite:///./tollway.db"
    assert settings.redis_url == ""
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8080, 1)
    assert settings.demo_provider


def test_settings_reads_documented_toml(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, CONFIG), env={"OPENAI_API_KEY": "sk-test"})
    assert settings.port == 9000
    provider = settings.providers["openai"]
    assert provider.resolved_api_key({"OPENAI_API_KEY": "sk-test"}) == "sk-test"
    model = settings.models["openai/gpt-4o-mini"]
    assert (model.upstream_model, model.max_output_tokens, model.output_per_mtok) == (
        "gpt-4o-mini",
        16384,
        Decimal("0.60"),
    )


def test_settings_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG)
    settings = load_settings(env={"TOLLWAY_CONFIG": str(path), "TOLLWAY_PORT": "9100", "TOLLWAY_HOST": "0.0.0.0"})
    assert (settings.port, settings.host) == (9100, "0.0.0.0")


def test_settings_cli_overrides_env() -> None:
    assert load_settings(env={"TOLLWAY_PORT": "9100"}, port=9200).port == 9200


@pytest.mark.parametrize(
    ("text", "env", "needle"),
    [
        ("portt = 1\n", {}, "portt"),
        ("port = 'x'\n", {}, "port"),
        ("", {"TOLLWAY_PORT": "abc"}, "TOLLWAY_PORT"),
        ("", {"TOLLWAY_AUTO_MIGRATE": "maybe"}, "TOLLWAY_AUTO_MIGRATE"),
        ("workers = 2\n", {}, "Redis"),
        ("database_url = 'mysql://x'\n", {}, "database_url"),
        ("[providers.x]\nkind = 'openai-compatible'\n", {}, "base_url"),
        ("[providers.x]\nkind = 'nope'\nbase_url = 'http://x'\n", {}, "kind"),
        ("[models.nomodel]\nprovider = 'demo'\nupstream_model = 'x'\n", {}, "provider/model"),
        ("[models.'a/b']\nprovider = 'ghost'\nupstream_model = 'x'\n", {}, "ghost"),
        (
            "[models.'demo/b']\nprovider = 'demo'\nupstream_model = 'x'\ninput_per_mtok = 'cheap'\n",
            {},
            "input_per_mtok",
        ),
        ("markup_percent = '-5'\n", {}, "markup_percent"),
        ("port = [", {}, "TOML"),
    ],
)
def test_settings_invalid_names_the_setting(tmp_path: Path, text: str, env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(write(tmp_path, text), env=env)
    assert needle in str(caught.value)


def test_settings_missing_file_is_clear(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "absent.toml", env={})


def test_settings_sqlite_path() -> None:
    assert sqlite_path("sqlite+aiosqlite:///./tollway.db") == Path("./tollway.db")
    assert sqlite_path("sqlite+aiosqlite:////abs/t.db") == Path("/abs/t.db")
    assert sqlite_path("sqlite+aiosqlite:///:memory:") is None
    assert sqlite_path("postgresql+asyncpg://h/db") is None


def test_first_party_providers_have_default_base_urls() -> None:
    settings = load_settings(
        env={}, providers={"o": {"kind": "openai"}, "a": {"kind": "anthropic"}, "g": {"kind": "gemini"}}
    )
    urls = {name: p.effective_base_url for name, p in settings.providers.items()}
    assert urls == {
        "o": "https://api.openai.com/v1",
        "a": "https://api.anthropic.com",
        "g": "https://generativelanguage.googleapis.com",
    }
    with pytest.raises(SettingsError, match="base_url"):
        load_settings(env={}, providers={"az": {"kind": "azure"}})


def test_deployments_are_checked() -> None:
    with pytest.raises(SettingsError, match="unknown provider 'nowhere'"):
        load_settings(
            env={},
            models={"x/y": {"deployments": [{"provider": "nowhere", "upstream_model": "m"}], "input_per_mtok": "1"}},
        )
    with pytest.raises(SettingsError, match="needs a provider"):
        load_settings(env={}, models={"x/y": {"input_per_mtok": "1"}})
    for bad in ("x", "-1", "NaN", "1e999999"):
        with pytest.raises(SettingsError, match=r"per_unit_usd_variants"):
            load_settings(
                env={},
                models={
                    "d/img": {"provider": "demo", "upstream_model": "i", "per_unit_usd_variants": {"1024x1024": bad}}
                },
            )


def test_openai_compatible_presets_know_their_url_and_key_variable() -> None:
    settings = load_settings(env={}, providers={"fast": {"kind": "groq"}, "local": {"kind": "ollama"}})
    groq, ollama = settings.providers["fast"], settings.providers["local"]
    assert groq.effective_base_url == "https://api.groq.com/openai/v1" and groq.speaks_openai
    assert groq.resolved_api_key({"GROQ_API_KEY": "gsk-1"}) == "gsk-1"
    assert ollama.effective_base_url == "http://127.0.0.1:11434/v1" and ollama.resolved_api_key({}) == ""
    custom = load_settings(env={}, providers={"g": {"kind": "groq", "base_url": "http://127.0.0.1:9/v1"}})
    assert custom.providers["g"].effective_base_url == "http://127.0.0.1:9/v1"


def test_settings_accept_a_redis_cluster_url() -> None:
    settings = load_settings(env={"TOLLWAY_REDIS_URL": "redis+cluster://10.0.0.5:7000", "TOLLWAY_WORKERS": "2"})
    assert settings.redis_url == "redis+cluster://10.0.0.5:7000" and settings.uses_redis


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TOLLWAY_REDIS_URL": "redis+cluster://10.0.0.5:7000/3"}, "only database 0"),
        ({"TOLLWAY_REDIS_PREFIX": "tw:{x}:"}, "must not contain { or }"),
        ({"TOLLWAY_REDIS_PREFIX": "tw{"}, "must not contain { or }"),
    ],
)
def test_settings_refuse_what_breaks_cluster_hash_slots(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(env=env)
