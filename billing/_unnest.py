"""The settlement writer's Postgres statements, run on the asyncpg connection under SQLAlchemy's.

A writer round used to send a multi-row ``INSERT ... VALUES`` built by SQLAlchemy: its SQL text
changed with the batch size, so asyncpg prepared it again (a server round trip and ~100 KiB
per text), and SQLAlchemy spent a fifth of the round building its parameters. Here each table
gets one fixed statement whatever the batch size, ``INSERT ... SELECT * FROM unnest($1::text[],
$2::int8[], ...)``, that asyncpg prepares once per connection and binds column arrays to.

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

from sqlalchemy import BigInteger, Boolean, Column, DateTime, Integer, String, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

_preparer = postgresql.dialect().identifier_preparer  # type: ignore[no-untyped-call]


def _element_type(column: Column[Any]) -> str:
    """The Postgres array element type a column's values are bound as."""
    kind = column.type
    if isinstance(kind, String):
        # text, not varchar(n): an explicit cast to varchar(n) truncates a long value silently,
        # where the insert's own assignment to the column refuses it (22001), as it always did.
        return "text"
    if isinstance(kind, BigInteger):
        return "int8"
    if isinstance(kind, Integer):
        return "int4"
    if isinstance(kind, Boolean):
        return "bool"
    if isinstance(kind, DateTime) and kind.timezone:
        return "timestamptz"
    raise TypeError(f"no array type for {column.table.name}.{column.name} ({kind!r})")


def unnest_insert(table: Table, columns: Sequence[str], *, suffix: str = "") -> str:
    """``INSERT INTO table (columns) SELECT * FROM unnest($1::type[], ...) suffix``: one SQL text
    for any number of rows, each parameter one column's values. Names and types come from the
    model's table, so the statement cannot drift from it (a missing column fails at import)."""
    picked = [table.c[name] for name in columns]
    names = ", ".join(_preparer.format_column(column) for column in picked)
    arrays = ", ".join(f"${number}::{_element_type(column)}[]" for number, column in enumerate(picked, 1))
    # Only the model's names go into the text; every value is a bound parameter.
    statement = f"INSERT INTO {_preparer.format_table(table)} ({names}) SELECT * FROM unnest({arrays})"  # noqa: S608
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
