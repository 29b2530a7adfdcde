"""The secret key ring in operation: rotate and restart, a missing key refuses to start, the
embedded key file; through the real app (and the CLI) on both backends."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from functions.crypto import KeyRing, MissingSecretKey, new_key_text
from functions.directory import load_function, token_of
from functions.keyops import check_stored_keys, missing_key_ids, rotate
from functions.models import Environment, ProxyFunction
from gateway.app import create_app
from gateway.cli import main
from gateway.db import create_engine, create_sessionmaker
from gateway.settings import Settings
from tests.fakes.function_rows import add_function
from tests.fakes.gateway_fixtures import Backend, Gateway, _with_session, gateway_settings, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.servers import ThreadedServer

SECRET = "whsec_rotate-me-0123456789abcdef"
PLAIN = "eu-west-1"


def api(gateway: Gateway, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method, gateway.url + path, headers={"Authorization": f"Bearer {gateway.key}"}, timeout=30, **kwargs
    )


def startup_error(settings: Settings) -> BaseException:
    """What the app's lifespan raised when it refused to start."""
    with pytest.raises(BaseException) as caught, TestClient(create_app(settings, env={})):
        pass
    error: BaseException = caught.value
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def with_ring(settings: Settings, keys: dict[str, str]) -> Settings:
    import msgspec

    return msgspec.structs.replace(settings, function_secret_keys=keys)


def seed_secrets(gateway: Gateway, ring: KeyRing) -> dict[str, Any]:
    """A project with a secret and a plain variable (through the API) and a function mapping
    the secret (straight to the database, sealed with ``ring``); returns their ids and token."""
    created = api(gateway, "POST", "/api/projects/", json={"name": "Rotating"})
    environment_id = created.json()["environments"][0]["id"]
    variables = {}
    for key, value, is_secret in (("API_KEY", SECRET, True), ("REGION", PLAIN, False)):
        response = api(
            gateway,
            "POST",
            f"/api/environments/{environment_id}/variables/",
            json={"key": key, "value": value, "is_secret": is_secret},
        )
        assert response.status_code == 201, response.text
        variables[key] = response.json()["id"]

    async def add(session: Any) -> tuple[str, str]:
        environment = await session.get(Environment, environment_id)
        row, token = await add_function(
            session,
            ring,
            environment,
            "https://127.0.0.1:9/",
            secret_mappings=[
                {"variable_id": variables["API_KEY"], "inject_as": "header", "key": "X-Api-Key", "template": ""}
            ],
        )
        await session.commit()
        return row.id, token

    function_id, token = gateway.run(_with_session(gateway.settings, add))
    return {"variables": variables, "function_id": function_id, "token": token}


async def _rotate(settings: Settings, ring: KeyRing, batch_size: int) -> Any:
    engine = create_engine(settings.database_url)
    try:
        return await rotate(create_sessionmaker(engine), ring, batch_size=batch_size)
    finally:
        await engine.dispose()


def test_function_projects_keys_rotate_restart_and_every_secret_opens(
    backend: Backend, fake_openai: FakeOpenAI
) -> None:
    old, new = new_key_text(), new_key_text()
    settings = gateway_settings(backend, fake_openai, function_secret_keys={"k1": old})
    gateway, server = start_gateway(settings, fake_openai)
    try:
        seeded = seed_secrets(gateway, KeyRing.from_texts({"k1": old}))
    finally:
        server.stop()

    both = KeyRing.from_texts({"k1": old, "k2": new})
    assert both.current == "k2"  # the greater id seals
    first = gateway.run(_rotate(settings, both, batch_size=1))  # batches of one: the paging is exercised
    assert (first.key_id, first.variables, first.tokens, first.unreadable) == ("k2", 2, 1, [])
    again = gateway.run(_rotate(settings, both, batch_size=50))
    assert (again.variables, again.tokens) == (0, 0)  # idempotent

    # The old key leaves the ring: a restarted gateway opens everything with the new one alone.
    only_new = with_ring(settings, {"k2": new})
    restarted = ThreadedServer(create_app(only_new, env={})).start()
    try:
        gateway.url = restarted.url
        for key, value in (("API_KEY", SECRET), ("REGION", PLAIN)):
            revealed = api(gateway, "POST", f"/api/variables/{seeded['variables'][key]}/reveal/")
            assert revealed.status_code == 200 and revealed.json()["value"] == value, revealed.text
        listed = api(gateway, "GET", f"/api/environments/{_environment(gateway, seeded)}/variables/").json()
        assert {v["key"]: v["value"] for v in listed["variables"]}["REGION"] == PLAIN
    finally:
        restarted.stop()

    ring = KeyRing.from_texts({"k2": new})

    async def resolve(session: Any) -> tuple[Any, str]:
        row = await session.get(ProxyFunction, seeded["function_id"])
        return await load_function(session, seeded["function_id"], ring), token_of(row, ring)

    resolved, token = gateway.run(_with_session(settings, resolve))
    assert resolved is not None and not resolved.unresolved
    assert [(i.key, i.value) for i in resolved.injections] == [("X-Api-Key", SECRET)]
    assert token == seeded["token"] and resolved.token_matches(seeded["token"])

    # A ring without k2 refuses to start, naming it; so does `tollway serve`'s check.
    error = startup_error(with_ring(settings, {"k3": new_key_text()}))
    assert isinstance(error, MissingSecretKey) and "'k2'" in str(error), error
    assert "function_secret_keys" in str(error)


def _environment(gateway: Gateway, seeded: dict[str, Any]) -> int:
    projects = api(gateway, "GET", "/api/projects/").json()["projects"]
    return int(projects[0]["environments"][0]["id"])


def test_function_projects_keys_a_missing_key_refuses_to_start(backend: Backend, fake_openai: FakeOpenAI) -> None:
    first, second = new_key_text(), new_key_text()
    settings = gateway_settings(backend, fake_openai, function_secret_keys={"alpha-1": first})
    gateway, server = start_gateway(settings, fake_openai)
    try:
        seed_secrets(gateway, KeyRing.from_texts({"alpha-1": first}))
    finally:
        server.stop()

    # "_" is a LIKE wildcard: a ring holding "alpha_1" must not pass for "alpha-1".
    lookalike = with_ring(settings, {"alpha_1": second})
    error = startup_error(lookalike)
    assert isinstance(error, MissingSecretKey) and error.key_id == "alpha-1", error
    assert "'alpha-1'" in str(error) and "restore that key" in str(error)

    async def missing(ring: KeyRing | None) -> list[str]:
        return list(await _with_session(settings, lambda session: missing_key_ids(session, ring)))

    assert gateway.run(missing(None)) == ["alpha-1"]
    assert gateway.run(missing(KeyRing.from_texts({"alpha-1": first}))) == []

    async def no_ring_check() -> None:
        engine = create_engine(settings.database_url)
        try:
            await check_stored_keys(create_sessionmaker(engine), None)
        finally:
            await engine.dispose()

    with pytest.raises(MissingSecretKey, match="no secret key ring is configured"):
        gateway.run(no_ring_check())


def test_function_projects_keys_key_file_made_once_and_rotate_new_key(
    backend: Backend,
    fake_openai: FakeOpenAI,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if backend.name != "sqlite":
        pytest.skip("the key file is the embedded (SQLite) default")
    settings = gateway_settings(backend, fake_openai, function_secret_keys={})
    key_file = Path(settings.database_url.split("///", 1)[1] + ".keys")
    tollway = logging.getLogger("tollway")
    tollway.addHandler(caplog.handler)  # the app reconfigures the root logger's handlers
    try:
        gateway, server = start_gateway(settings, fake_openai)
        seeded = seed_secrets_with_file(gateway, server)
        server.stop()
        again = ThreadedServer(create_app(settings, env={})).start()
        again.stop()
    finally:
        tollway.removeHandler(caplog.handler)
    warnings = [r for r in caplog.records if "created the secret key file" in r.getMessage()]
    assert len(warnings) == 1 and str(key_file) in warnings[0].getMessage()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    config = tmp_path / "tollway.toml"
    config.write_text(f'database_url = "{settings.database_url}"\n')
    before = key_file.read_text()
    capsys.readouterr()
    assert main(["--config", str(config), "--json", "secrets", "rotate", "--new-key"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["variables_resealed"], report["tokens_resealed"], report["unreadable"]) == (2, 1, [])
    assert report["key_id"] == report["added_key_id"] and report["added_key_id"] in key_file.read_text()
    assert main(["--config", str(config), "--json", "secrets", "rotate"]) == 0
    assert json.loads(capsys.readouterr().out)["variables_resealed"] == 0
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_text().splitlines()) == len(before.splitlines()) + 1

    restarted = ThreadedServer(create_app(settings, env={})).start()
    try:
        gateway.url = restarted.url
        revealed = api(gateway, "POST", f"/api/variables/{seeded['variables']['API_KEY']}/reveal/")
        assert revealed.json()["value"] == SECRET
    finally:
        restarted.stop()


def seed_secrets_with_file(gateway: Gateway, server: ThreadedServer) -> dict[str, Any]:
    ring = server.app.state.gateway.functions.keyring
    assert ring is not None
    return seed_secrets(gateway, ring)
