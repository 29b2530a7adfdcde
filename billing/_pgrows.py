"""The settlement writer's Postgres statements, run on the asyncpg connection under SQLAlchemy's.

A writer round used to send a multi-row ``INSERT ... VALUES`` built by SQLAlchemy: its SQL text
changed with the batch size, so asyncpg prepared it again (a server round trip and ~100 KiB
per text), and SQLAlchemy spent a fifth of the round building its parameters. Here each table
gets one fixed statement whatever the batch size, ``INSERT ... SELECT (r->>0), (r->>1)::int8,
... FROM jsonb_array_elements($1::text::jsonb) AS r``, that asyncpg prepares once per
connection, its one parameter the rows encoded by msgspec as a JSON array of arrays.

Why JSON and not ``unnest($1::text[], $2::int8[], ...)`` with one array per column: asyncpg's
array encoder asks ``isinstance(element, Iterable)`` and ``Sized`` of every element (a
Python-level ABC check each), which made the unnest statement cost 2.1 M instructions a round
of 8 and 8.9 M a round of 64 under callgrind, against 1.1 M and 2.7 M for the JSON text (and
3.4 M and 14.1 M for the multi-row insert before, on an engine that also pinged). The JSON is
parsed by Postgres, and a value out of a column's range or a NUL in text is refused there, with
SQLSTATE class 22 as before.

The statements run in the caller's transaction (:class:`Driver` starts SQLAlchemy's lazy
``BEGIN`` on the same connection if no statement did yet), and asyncpg's errors are raised as
the SQLAlchemy errors the same statement would have raised through SQLAlchemy: a refusal is
still a ``DataError``/``IntegrityError``/``DBAPIError`` with its SQLSTATE
(:func:`billing.parking.is_refusal`), an outage a ``DBAPIError`` that invalidated the
connection, so the pool never hands the dead one out again.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, cast

import msgspec
from sqlalchemy import BigInteger, Boolean, Column, DateTime, Integer, String, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection

_preparer = postgresql.dialect().identifier_preparer  # type: ignore[no-untyped-call]


def _adapter_supported() -> bool:
    """The parts of SQLAlchemy's asyncpg adapter :class:`Driver` relies on (not public API): a
    SQLAlchemy that changed them makes the writer take SQLAlchemy's own path, not fail."""
    try:
        from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection as adapter
    except ImportError:
        return False
    return all(hasattr(adapter, name) for name in ("_start_transaction", "_handle_exception", "_transaction"))


ADAPTER_SUPPORTED = _adapter_supported()
_encoder = msgspec.json.Encoder()


def _cast(column: Column[Any]) -> str:
    """The cast that turns a row's JSON text field into the column's value."""
    kind = column.type
    if isinstance(kind, String):
        # None: text already. Not varchar(n): an explicit cast to varchar(n) truncates a long
        # value silently, where the insert's own assignment to the column refuses it (22001).
        return ""
    if isinstance(kind, BigInteger):
        return "::int8"
    if isinstance(kind, Integer):
        return "::int4"
    if isinstance(kind, Boolean):
        return "::bool"
    if isinstance(kind, DateTime) and kind.timezone:
        return "::timestamptz"
    raise TypeError(f"no cast for {column.table.name}.{column.name} ({kind!r})")


def json_insert(table: Table, columns: Sequence[str], *, suffix: str = "") -> str:
    """``INSERT INTO table (columns) SELECT (r->>0)::type, ... FROM jsonb_array_elements($1)
    AS r suffix``: one SQL text for any number of rows, bound to one parameter, the rows as a
    JSON array of arrays (:meth:`Driver.insert`). Names and types come from the model's table,
    so the statement cannot drift from it (a column that is not there fails at import)."""
    picked = [table.c[name] for name in columns]
    names = ", ".join(_preparer.format_column(column) for column in picked)
    fields = ", ".join(f"(r->>{number}){_cast(column)}" for number, column in enumerate(picked))
    # Only the model's names go into the text; the rows are the one bound parameter. $1 is text
    # for asyncpg (no json codec in between), jsonb for Postgres (parsed once, fields by index).
    statement = (
        f"INSERT INTO {_preparer.format_table(table)} ({names}) "  # noqa: S608
        f"SELECT {fields} FROM jsonb_array_elements($1::text::jsonb) AS r"
    )
    return f"{statement} {suffix}" if suffix else statement


class Driver:
    """The asyncpg connection under an :class:`AsyncConnection`, in that connection's transaction.

    Obtain with :meth:`of`; ``fetch`` and ``fetchrow`` are asyncpg's, with its errors raised as
    SQLAlchemy's (see the module docstring)."""

    __slots__ = ("_adapted", "_connection", "_driver")

    def __init__(self, connection: AsyncConnection, adapted: Any, driver: Any) -> None:
        self._connection = connection
        self._adapted = adapted  # SQLAlchemy's DBAPI adapter around the asyncpg connection
        self._driver = driver

    @classmethod
    async def of(cls, connection: AsyncConnection) -> Driver:
        if not connection.in_transaction():
            # What SQLAlchemy's autobegin does before a statement of its own: without it, a
            # "commit as you go" connection's commit() would find nothing to commit.
            await connection.begin()
        pooled = await connection.get_raw_connection()
        adapted: Any = pooled.dbapi_connection
        driver = cls(connection, adapted, pooled.driver_connection)
        # SQLAlchemy's asyncpg adapter sends BEGIN lazily, before the first statement it runs,
        # and commits or rolls back only a transaction it started: start it here, its way, if
        # no statement of this transaction went through SQLAlchemy yet.
        if adapted._transaction is None and not adapted.autocommit:
            handling = sys.exc_info()[1]
            try:
                await adapted._start_transaction()
            except Exception as error:
                raise await driver._wrapped("BEGIN", error, handling) from error
        return driver

    async def insert(self, statement: str, rows: Sequence[Sequence[object]]) -> list[Any]:
        """Run a :func:`json_insert` statement for ``rows`` (values in its columns' order);
        returns what it returns."""
        try:
            data = _encoder.encode(rows).decode()
        except (TypeError, ValueError, OverflowError) as error:
            # A value JSON cannot carry: refused as SQLAlchemy refuses a parameter it cannot bind.
            raise StatementError(str(error), statement, None, error) from error
        return await self.fetch(statement, data)

    async def fetch(self, statement: str, *args: object) -> list[Any]:
        handling = sys.exc_info()[1]
        try:
            return cast(list[Any], await self._driver.fetch(statement, *args))
        except Exception as error:
            raise await self._wrapped(statement, error, handling) from error

    async def fetchrow(self, statement: str, *args: object) -> Any:
        handling = sys.exc_info()[1]
        try:
            return await self._driver.fetchrow(statement, *args)
        except Exception as error:
            raise await self._wrapped(statement, error, handling) from error

    async def _wrapped(self, statement: str, error: Exception, handling: BaseException | None = None) -> BaseException:
        """``error`` as SQLAlchemy raises it for a statement of its own: translated to the
        adapter's DBAPI error (which keeps the SQLSTATE), wrapped as ``DBAPIError`` or the
        subclass that names it, the connection invalidated when it is gone.

        ``handling``: the exception the caller was handling when it called (the writer retries
        the halves of a refused batch inside its ``except``). asyncpg raises in the caller's
        frames, so Python chains that exception under asyncpg's as its context, and
        :func:`billing.parking.is_refusal`, which walks the chain, would read an outage there
        as the earlier refusal. SQLAlchemy's own statements run in a greenlet of their own and
        never chain it; neither does this."""
        _unchain(error, handling)
        translated: Exception = error
        try:
            self._adapted._handle_exception(error)  # always raises: the DBAPI-level error
        except Exception as dbapi_error:
            translated = dbapi_error
        dialect = self._connection.dialect
        gone = bool(dialect.is_disconnect(translated, self._adapted, None))  # type: ignore[arg-type]
        if gone:
            await self._connection.invalidate(translated)
        return DBAPIError.instance(
            statement,
            None,
            translated,
            dialect.loaded_dbapi.Error,
            connection_invalidated=gone,
            dialect=dialect,
        )


def _unchain(error: BaseException, handling: BaseException | None) -> None:
    """Cut ``error``'s chain where it reaches ``handling``."""
    if handling is None:
        return
    current: BaseException | None = error
    for _ in range(16):
        if current is None:
            return
        if current.__context__ is handling:
            current.__context__ = None
        if current.__cause__ is handling:
            current.__cause__ = None
        current = current.__cause__ or current.__context__
