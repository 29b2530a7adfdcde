"""The operator's price overrides: stored in the database, applied to every process's catalogue.

A change bumps a generation counter in the counter store; each process looks at it every
``CHECK_EVERY_S`` in the background (never on the request path) and rebuilds its catalogue
when it moved, so a new price reaches every gateway within a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.counters import Adjust, CounterStore
from billing.models import ModelPriceOverride
from billing.pricing import UsdPrices
from gateway.catalog import build_catalog
from gateway.state import GatewayState

CHECK_EVERY_S = 2.0
_FIELD = "gen"
log = logging.getLogger("tollway.prices")


def generation_key(prefix: str) -> str:
    return f"{prefix}catalog"


async def load_overrides(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, UsdPrices]:
    async with sessionmaker() as session:
        rows = (await session.scalars(select(ModelPriceOverride))).all()
    return {row.slug: _stored(row.prices) for row in rows}


def _stored(prices: dict[str, Any]) -> UsdPrices:
    """An override as stored; rows written before prices were decimals hold "" for unset."""
    return msgspec.convert({k: v for k, v in prices.items() if v != ""}, UsdPrices)


async def store_override(state: GatewayState, slug: str, fields: UsdPrices | None) -> None:
    """Save (or, with ``None``, remove) an override, then apply it here and announce it."""
    async with state.sessionmaker() as session:
        row = await session.get(ModelPriceOverride, slug)
        if fields is None:
            if row is not None:
                await session.delete(row)
        elif row is None:
            session.add(ModelPriceOverride(slug=slug, prices=msgspec.to_builtins(fields)))
        else:
            row.prices = msgspec.to_builtins(fields)
        await session.commit()
    await reload_catalogue(state)
    await state.counters.adjust([Adjust(generation_key(state.settings.redis_prefix), _FIELD, 1)])


async def reload_catalogue(state: GatewayState) -> None:
    state.catalog = build_catalog(state.settings, await load_overrides(state.sessionmaker))


@contextlib.asynccontextmanager
async def follow_price_changes(state: GatewayState, counters: CounterStore) -> AsyncIterator[None]:
    """Run the background check for the lifetime of the app."""

    async def watch() -> None:
        seen = await counters.get(generation_key(state.settings.redis_prefix), _FIELD)
        while True:
            await asyncio.sleep(CHECK_EVERY_S)
            try:
                current = await counters.get(generation_key(state.settings.redis_prefix), _FIELD)
                if current != seen:
                    await reload_catalogue(state)
                    seen = current
            except Exception:  # the database or counters being down must not end the watcher
                log.warning("could not check for price changes; will retry", exc_info=True)

    task = asyncio.create_task(watch())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
