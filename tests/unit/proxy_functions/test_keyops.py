"""Key-ring operations: new key ids, the key file, the start-up check and rotation (a SQLite file, no network)."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from billing.models import Account, Base
from functions.crypto import KeyRing, MissingSecretKey, SecretKeyError, new_key_text
from functions.keyfile import read_key_file, write_key_file
from functions.keyops import (
    MissingSecretKeys,
    add_key_to_file,
    check_stored_keys,
    key_file_path,
    missing_key_ids,
    next_key_id,
    rotate,
)
from functions.models import ProxyFunction, Variable
from tests.fakes.function_rows import add_function, add_project, add_variable

MOMENT = datetime(2027, 3, 4, 5, 6, 7, tzinfo=UTC)
K1, K2 = new_key_text(), new_key_text()


def test_keyops_next_key_id_sorts_after_every_existing_id() -> None:
    assert next_key_id({"k20260101000000"}, MOMENT) == "k20270304050607"
    assert next_key_id(set(), MOMENT) == "k20270304050607"
    after_test = next_key_id({"test", "k1"}, MOMENT)
    assert after_test == "test-20270304050607" and after_test > "test"
    same_second = next_key_id({"k20270304050607"}, MOMENT)
    assert same_second > "k20270304050607"
    with pytest.raises(SecretKeyError, match="by hand"):
        next_key_id({"z" * 32}, MOMENT)


def test_keyops_add_key_to_file_makes_the_new_key_current_and_keeps_0600(tmp_path: Path) -> None:
    path = tmp_path / "tollway.db.keys"
    write_key_file(path, {"k1": K1})
    added = add_key_to_file(path, MOMENT)
    keys = read_key_file(path)
    assert keys["k1"] == K1 and set(keys) == {"k1", added}
    assert KeyRing.from_texts(keys).current == added
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(SecretKeyError, match="no key file"):
        add_key_to_file(tmp_path / "absent.keys")


def test_keyops_key_file_path_follows_load_keyring() -> None:
    assert key_file_path("/etc/tollway.keys", Path("/data/t.db")) == Path("/etc/tollway.keys")
    assert key_file_path("", Path("/data/t.db")) == Path("/data/t.db.keys")
    assert key_file_path("", None) is None


def test_keyops_missing_keys_message_names_every_id() -> None:
    error = MissingSecretKeys(["k1", "old_2"], ring_configured=False)
    assert isinstance(error, MissingSecretKey) and error.key_id == "k1"
    message = str(error)
    assert message.startswith("no secret key ring is configured")
    assert "'k1'" in message and "'old_2'" in message and "restore that key" in message


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/keyops.db")
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    try:
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        await engine.dispose()


async def _seed(sessions: async_sessionmaker[AsyncSession], ring: KeyRing, count: int) -> None:
    async with sessions() as session:
        account = Account(name=f"acme-{ring.current}")
        session.add(account)
        await session.flush()
        _project, environments = await add_project(session, account.id)
        for number in range(count):
            variable = await add_variable(session, ring, environments[0], f"KEY_{number}", f"value-{number}")
            await add_function(
                session,
                ring,
                environments[0],
                "https://127.0.0.1:9/",
                secret_mappings=[{"variable_id": variable.id, "inject_as": "header", "key": "X"}],
            )
        await session.commit()


async def test_keyops_check_finds_each_missing_key_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    await check_stored_keys(sessions, None)  # nothing stored: no ring needed
    await _seed(sessions, KeyRing.from_texts({"k1": K1}), 3)
    await _seed(sessions, KeyRing.from_texts({"kx2": K2}), 2)
    async with sessions() as session:
        assert await missing_key_ids(session, None) == ["k1", "kx2"]
        assert await missing_key_ids(session, KeyRing.from_texts({"k1": K1})) == ["kx2"]
        # "_" is a LIKE wildcard: a ring holding "k_2" must not pass for ciphertexts of "kx2".
        assert await missing_key_ids(session, KeyRing.from_texts({"k_2": K2, "k1": K1})) == ["kx2"]
        assert await missing_key_ids(session, KeyRing.from_texts({"k1": K1, "kx2": K2})) == []
    with pytest.raises(MissingSecretKeys) as raised:
        await check_stored_keys(sessions, KeyRing.from_texts({"k1": K1}))
    assert raised.value.key_ids == ["kx2"]


async def test_keyops_rotate_reseals_in_batches_skips_the_unreadable_and_is_idempotent(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await _seed(sessions, KeyRing.from_texts({"k1": K1}), 5)
    async with sessions() as session:
        tampered = await session.scalar(select(Variable).order_by(Variable.id).limit(1))
        assert tampered is not None
        tampered.key = "MOVED"  # its ciphertext no longer opens in its own context
        await session.commit()
    ring = KeyRing.from_texts({"k1": K1, "k2": K2})
    report = await rotate(sessions, ring, batch_size=2)
    assert (report.key_id, report.variables, report.tokens) == ("k2", 4, 5)
    assert report.unreadable == [f"variable {tampered.id}"]
    again = await rotate(sessions, ring, batch_size=2)
    assert (again.variables, again.tokens, again.unreadable) == (0, 0, [f"variable {tampered.id}"])
    async with sessions() as session:
        prefixes = {ring.key_id_of(c) for c in await session.scalars(select(ProxyFunction.token_ciphertext))}
        assert prefixes == {"k2"}
        assert await missing_key_ids(session, KeyRing.from_texts({"k2": K2})) == ["k1"]  # only the tampered row


async def test_keyops_rotate_stops_at_a_value_whose_key_is_gone(sessions: async_sessionmaker[AsyncSession]) -> None:
    await _seed(sessions, KeyRing.from_texts({"k1": K1}), 1)
    with pytest.raises(MissingSecretKey, match="'k1'"):
        await rotate(sessions, KeyRing.from_texts({"k2": K2}))
