"""Everything a request needs that lives as long as the process: built by the lifespan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from billing.counters import CounterStore
from billing.metering import Meter
from gateway.catalog import CatalogModel
from gateway.settings import Settings
from keys.service import KeyResolver
from providers.base import ChatAdapter


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class GatewayState:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    counters: CounterStore
    meter: Meter
    keys: KeyResolver
    catalog: dict[str, CatalogModel]
    adapters: dict[str, ChatAdapter]
    now: Callable[[], datetime] = field(default=utc_now)
