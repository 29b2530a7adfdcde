"""Settlements the database refuses: tell a bad entry from an outage, and set it aside.

A batch of settlements is one transaction. If the database is unreachable the whole batch
waits and is retried; but if it refuses one entry's *data* (text it cannot store, a number out
of range, an account that no longer exists), retrying can never succeed, and before this module
that one entry stopped every account's writes on the process (and on any process that took its
streams over). Such an entry is parked: stored as it was buffered, with the database's reason,
in ``parked_settlements``, where ``tollway billing reconcile`` reports it (and fails) until an
operator replays it with ``tollway billing replay-parked``.

Refusals are told apart by type, never by message: SQLAlchemy's ``DataError`` and
``IntegrityError``, or a driver error carrying SQLSTATE class 22 (data exception) or 23
(integrity constraint violation): asyncpg's errors reach us wrapped as a plain ``DBAPIError``;
and a record no registered kind can store (:class:`billing.records.RecordRefused`).
Everything else (connection loss, timeouts, serialization failures, a missing table) is an
outage: the batch stays buffered.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import msgspec
from sqlalchemy import Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection

from billing.models import ParkedSettlement, utcnow
from billing.records import Entry, RecordKind, RecordRefused, decode_entry, write_entries

log = logging.getLogger("tollway.billing")

_REFUSED_SQLSTATE_CLASSES = frozenset({"22", "23"})
_ERROR_CHARS = 2000

_parked = cast(Table, ParkedSettlement.__table__)
_INSERT_PARKED = {
    "postgresql": postgresql.insert(_parked).on_conflict_do_nothing(index_elements=["request_id"]),
    "sqlite": sqlite.insert(_parked).on_conflict_do_nothing(index_elements=["request_id"]),
}


class Refused(msgspec.Struct, frozen=True):
    """One buffered entry the database refused, as it will be parked."""

    account_id: int
    request_id: str
    cost_micro: int
    data: bytes
    error: str


def is_refusal(error: BaseException) -> bool:
    """Whether the database refused the data itself (retrying the same rows cannot succeed),
    as opposed to being unreachable or failing for a reason of its own (retry later)."""
    if isinstance(error, (DataError, IntegrityError, RecordRefused)):
        return True
    if isinstance(error, DBAPIError):
        return any(_sqlstate(cause)[:2] in _REFUSED_SQLSTATE_CLASSES for cause in _causes(error.orig))
    if isinstance(error, StatementError):
        # Failed while binding parameters, before reaching the database: a value of the wrong
        # shape for its column (a connection problem is never raised this way).
        return isinstance(error.orig, (ValueError, TypeError, OverflowError))
    return False


def _causes(error: BaseException | None) -> Iterator[BaseException]:
    seen = 0
    while error is not None and seen < 5:
        yield error
        seen += 1
        driver = getattr(error, "driver_exception", None)
        error = driver if isinstance(driver, BaseException) else (error.__cause__ or error.__context__)


def _sqlstate(error: BaseException) -> str:
    for name in ("sqlstate", "pgcode"):
        value = getattr(error, name, None)
        if isinstance(value, str):
            return value
    return ""


def describe(error: BaseException) -> str:
    """The database's reason, named by the driver's own error type, without the statement and
    its parameters (a batch's worth)."""
    start = error.orig if isinstance(error, StatementError) and error.orig is not None else error
    deepest = list(_causes(start))[-1]
    return f"{type(deepest).__name__}: {deepest}"[:_ERROR_CHARS]


def _text(value: str) -> str:
    # Whatever the database refused must not be refused again on its way into this table.
    return value.replace("\x00", "\\u0000")


async def park(connection: AsyncConnection, refused: Sequence[Refused]) -> None:
    """Store refused entries in the caller's transaction, once per request id, and raise the
    alarm for each. Its hold was released and its cost taken off the mirror when it was served:
    until it is replayed the database has not debited it, and reconcile fails."""
    if not refused:
        return
    now = utcnow()
    rows: list[dict[str, Any]] = [
        {
            "account_id": entry.account_id,
            "request_id": _text(entry.request_id)[:200],
            "cost_micro": entry.cost_micro,
            "data": _text(entry.data.decode("utf-8", "backslashreplace")),
            "error": _text(entry.error),
            "created_at": now,
        }
        for entry in refused
    ]
    await connection.execute(_INSERT_PARKED[connection.dialect.name], rows)
    for entry in refused:
        log.critical(
            "settlement parked: the database refused it (%s); account %d is not debited %d micro-credits "
            "until it is replayed (tollway billing replay-parked)",
            entry.error,
            entry.account_id,
            entry.cost_micro,
            extra={"request_id": _text(entry.request_id)[:200]},
        )


class ParkedNotFound(LookupError):
    """No parked settlement with that id."""


async def replay_parked(
    connection: AsyncConnection,
    parked_id: int,
    data: bytes | None = None,
    kinds: Mapping[str, RecordKind] | None = None,
) -> Entry:
    """Write a parked settlement or record (as parked, or as corrected in ``data``) and forget
    it, in the caller's transaction; returns what was written. ``kinds``: the record kinds that
    can be written (:mod:`billing.records`). Idempotent on its request id, like every settlement:
    one already written is not debited again. Raises :class:`ParkedNotFound`,
    ``msgspec.ValidationError``/``DecodeError`` for data that is not a settlement or a record,
    :class:`~billing.records.RecordRefused` for a record of an unknown kind, and the database's
    refusal if the cause is not fixed yet (nothing is changed then)."""
    row = (await connection.execute(select(_parked.c.data).where(_parked.c.id == parked_id))).first()
    if row is None:
        raise ParkedNotFound(f"no parked settlement with id {parked_id}")
    entry = decode_entry(data if data is not None else str(row[0]).encode())
    await write_entries(connection, [entry], kinds or {})
    await connection.execute(delete(_parked).where(_parked.c.id == parked_id))
    return entry
