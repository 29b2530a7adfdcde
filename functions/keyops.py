"""Operating the key ring: re-sealing under the newest key, and the start-up check.

**Rotation.** To rotate, the operator adds a key whose id sorts after the others to the ring
(``function_secret_keys`` / ``TOLLWAY_FUNCTION_SECRET_KEYS``, or a line of the key file:
``tollway secrets rotate --new-key`` appends one), restarts the gateway processes so they seal
with it and can still open the old one, then runs ``tollway secrets rotate``. :func:`rotate`
re-seals every variable value and function token whose key id is not the ring's current one,
in batches of its own short transactions, each row only if it still holds the ciphertext that
was read (a concurrent change is left alone, it was sealed by the API), so it can run beside
live gateways, be interrupted and run again: a second run finds nothing to do. Once it reports
nothing left, the old key may leave the ring.

**Start-up check.** :func:`check_stored_keys` runs in the app's lifespan and in
``tollway serve`` before any worker starts: if a stored ciphertext names a key id the ring does
not hold (or there are ciphertexts and no ring at all), the gateway refuses to start with
:class:`MissingSecretKeys`, naming the ids, instead of serving functions whose secrets would
silently fail to open. It reads no row it does not need: per table, the first row whose prefix
is none of the known key ids, repeated once per missing id found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from functions.crypto import (
    KEY_ID,
    KeyRing,
    MissingSecretKey,
    SecretKeyError,
    UnreadableSecret,
    new_key_text,
    token_context,
    variable_context,
)
from functions.keyfile import default_key_id, read_key_file, write_key_file
from functions.models import ProxyFunction, Variable

__all__ = [
    "MissingSecretKeys",
    "RotationReport",
    "add_key_to_file",
    "check_stored_keys",
    "key_file_path",
    "missing_key_ids",
    "next_key_id",
    "rotate",
]

_VERSION = "v1"
_MAX_MISSING = 20  # enough to name; past it the operator has a bigger problem than a list


class MissingSecretKeys(MissingSecretKey):
    """Stored secrets name key ids the ring lacks; ``key_ids`` lists them (first one = ``key_id``)."""

    def __init__(self, key_ids: list[str], *, ring_configured: bool) -> None:
        super().__init__(key_ids[0])
        self.key_ids = key_ids
        message = "; ".join(str(MissingSecretKey(key_id)) for key_id in key_ids)
        if not ring_configured:
            message = f"no secret key ring is configured, yet {message}"
        self.args = (message,)


@dataclass
class RotationReport:
    """What :func:`rotate` did. ``unreadable``: rows whose ciphertext does not open under its
    own key (tampered with or moved), left as they are and named by table and id."""

    key_id: str
    variables: int = 0
    tokens: int = 0
    unreadable: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "variables_resealed": self.variables,
            "tokens_resealed": self.tokens,
            "unreadable": self.unreadable,
        }


def _prefix(key_id: str) -> str:
    return f"{_VERSION}:{key_id}:"


def _key_id(ciphertext: str, where: str) -> str:
    parts = ciphertext.split(":", 2)
    if len(parts) != 3 or parts[0] != _VERSION or not KEY_ID.match(parts[1]):
        raise UnreadableSecret(f"{where} holds a value that is not a Tollway secret ciphertext")
    return parts[1]


def _not_sealed_with(column: Any, key_ids: set[str]) -> list[ColumnElement[bool]]:
    # autoescape: key ids may hold "_", a LIKE wildcard.
    return [~column.startswith(_prefix(key_id), autoescape=True) for key_id in sorted(key_ids)]


async def missing_key_ids(session: AsyncSession, keyring: KeyRing | None) -> list[str]:
    """The key ids stored ciphertexts name that ``keyring`` does not hold (sorted)."""
    known = set(keyring.keys) if keyring is not None else set()
    missing: set[str] = set()
    tables = (("variables", Variable.value_ciphertext), ("proxy_functions", ProxyFunction.token_ciphertext))
    for table, column in tables:
        while len(missing) < _MAX_MISSING:
            found = await session.scalar(
                select(column).where(and_(true(), *_not_sealed_with(column, known | missing))).limit(1)
            )
            if found is None:
                break
            missing.add(_key_id(found, f"a row of {table}"))
    return sorted(missing)


async def check_stored_keys(sessionmaker: async_sessionmaker[AsyncSession], keyring: KeyRing | None) -> None:
    """Raise :class:`MissingSecretKeys` if any stored secret cannot be opened by ``keyring``."""
    async with sessionmaker() as session:
        missing = await missing_key_ids(session, keyring)
    if missing:
        raise MissingSecretKeys(missing, ring_configured=keyring is not None)


# --- rotation ---------------------------------------------------------------------------------


async def rotate(
    sessionmaker: async_sessionmaker[AsyncSession], keyring: KeyRing, *, batch_size: int = 200
) -> RotationReport:
    """Re-seal every variable value and function token not sealed with ``keyring.current``.

    Raises :class:`~functions.crypto.MissingSecretKey` when a value's key is not in the ring
    (nothing can re-seal what nothing can open; rows done so far stay done)."""
    report = RotationReport(keyring.current)
    report.variables = await _rotate_variables(sessionmaker, keyring, batch_size, report.unreadable)
    report.tokens = await _rotate_tokens(sessionmaker, keyring, batch_size, report.unreadable)
    return report


async def _rotate_variables(
    sessionmaker: async_sessionmaker[AsyncSession], keyring: KeyRing, batch_size: int, unreadable: list[str]
) -> int:
    done, last = 0, 0
    stale = _not_sealed_with(Variable.value_ciphertext, {keyring.current})
    while True:
        async with sessionmaker() as session:
            rows = (
                await session.execute(
                    select(Variable.id, Variable.account_id, Variable.environment_id, Variable.key)
                    .add_columns(Variable.value_ciphertext)
                    .where(Variable.id > last, *stale)
                    .order_by(Variable.id)
                    .limit(batch_size)
                )
            ).all()
            if not rows:
                return done
            for variable_id, account_id, environment_id, key, ciphertext in rows:
                last = variable_id
                context = variable_context(account_id, environment_id, key)
                resealed = _reseal(keyring, ciphertext, context, f"variable {variable_id}", unreadable)
                if resealed is None:
                    continue
                result = await session.execute(
                    update(Variable)
                    .where(Variable.id == variable_id, Variable.value_ciphertext == ciphertext)
                    .values(value_ciphertext=resealed, updated_at=Variable.updated_at)
                )
                done += _rowcount(result)
            await session.commit()


async def _rotate_tokens(
    sessionmaker: async_sessionmaker[AsyncSession], keyring: KeyRing, batch_size: int, unreadable: list[str]
) -> int:
    done, last = 0, ""
    stale = _not_sealed_with(ProxyFunction.token_ciphertext, {keyring.current})
    while True:
        async with sessionmaker() as session:
            rows = (
                await session.execute(
                    select(ProxyFunction.id, ProxyFunction.account_id, ProxyFunction.token_ciphertext)
                    .where(ProxyFunction.id > last, *stale)
                    .order_by(ProxyFunction.id)
                    .limit(batch_size)
                )
            ).all()
            if not rows:
                return done
            for function_id, account_id, ciphertext in rows:
                last = function_id
                context = token_context(account_id, function_id)
                resealed = _reseal(keyring, ciphertext, context, f"proxy function {function_id}", unreadable)
                if resealed is None:
                    continue
                result = await session.execute(
                    update(ProxyFunction)
                    .where(ProxyFunction.id == function_id, ProxyFunction.token_ciphertext == ciphertext)
                    .values(token_ciphertext=resealed, updated_at=ProxyFunction.updated_at)
                )
                done += _rowcount(result)
            await session.commit()


def _reseal(keyring: KeyRing, ciphertext: str, context: str, where: str, unreadable: list[str]) -> str | None:
    try:
        plain = keyring.open(ciphertext, context=context)
    except MissingSecretKey:
        raise
    except SecretKeyError:
        unreadable.append(where)
        return None
    return keyring.seal(plain, context=context)


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


# --- the key file -----------------------------------------------------------------------------


def key_file_path(key_file: str, sqlite_file: Path | None) -> Path | None:
    """Where :func:`functions.keyfile.load_keyring` looks for the key file (None: nowhere)."""
    if key_file:
        return Path(key_file)
    return sqlite_file.with_name(sqlite_file.name + ".keys") if sqlite_file is not None else None


def next_key_id(existing: list[str] | set[str], now: datetime | None = None) -> str:
    """A key id that sorts after every existing one (the ring seals with the greatest)."""
    candidate = default_key_id(now)
    top = max(existing, default="")
    if candidate > top:
        return candidate
    # top + anything sorts after top, hence after every other id too.
    candidate = f"{top}-{candidate[1:]}"
    if not KEY_ID.match(candidate):
        raise SecretKeyError(
            f"cannot make a key id greater than {top!r} within 32 characters: add a key with a greater id by hand"
        )
    return candidate


def add_key_to_file(path: Path, now: datetime | None = None) -> str:
    """Append a fresh key, with an id greater than the others, to the key file; returns its id.

    The file is rewritten atomically with mode 0600 (comments other than the header are not kept)."""
    if not path.exists():
        raise SecretKeyError(f"there is no key file at {path}: nothing to rotate from")
    keys = read_key_file(path)
    key_id = next_key_id(set(keys), now)
    write_key_file(path, {**keys, key_id: new_key_text()})
    return key_id
