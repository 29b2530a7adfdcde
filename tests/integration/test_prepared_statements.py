"""Each pooled Postgres connection keeps a small LRU of prepared statements (gateway/db.py):
the write-behind's multi-row inserts are a new statement per batch size, and the default of
100 per connection grew a soak's RSS without end in sight (bench/RESULTS.md)."""

from __future__ import annotations

from sqlalchemy import text

from gateway.db import PREPARED_STATEMENTS_PER_CONNECTION, create_engine


async def test_prepared_statements_cache_is_bounded_per_connection(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        async with engine.connect() as connection:
            for rows in range(1, PREPARED_STATEMENTS_PER_CONNECTION * 3):
                values = ", ".join(f"({n})" for n in range(rows))  # a new SQL text per row count
                await connection.execute(text(f"SELECT * FROM (VALUES {values}) AS t(n)"))
            raw = await connection.get_raw_connection()
            cache = raw.dbapi_connection._prepared_statement_cache  # type: ignore[union-attr]
            assert cache.capacity == PREPARED_STATEMENTS_PER_CONNECTION
            # SQLAlchemy's LRU prunes back to its capacity once half as many again are cached.
            assert PREPARED_STATEMENTS_PER_CONNECTION <= len(cache) <= PREPARED_STATEMENTS_PER_CONNECTION * 3 // 2
    finally:
        await engine.dispose()
