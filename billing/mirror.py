"""The balance mirror in the counter store, and how to bring it back to the database's value.

Per account one hash (``account_key(prefix, id, "balance")``) holds:

===========  =====================================================================
``bal``      the balance reservations check against: database balance − ``pend``
``held``     the sum of open reservations
``pend``     what the account's settlement stream holds that the database has not taken
``gen``      bumped by everything that moves ``bal`` or ``pend`` (a settlement, an expiry,
             a writer's acknowledgement, a grant): the guard of every refresh
``rs``       a random mark written with ``bal`` by every refresh and re-sync: a writer that
             finds it unchanged across its batch knows no refresh set ``bal`` in between
===========  =====================================================================

A refresh reads ``gen`` and ``pend``, then the database balance, then sets ``bal`` only if
``gen`` did not move. The one movement the guard cannot see is a writer's commit (the database
balance drops before the writer's ack takes the same amount off ``pend``): a refresh that lands
between the two sets ``bal`` low by that batch. So every writer re-syncs the mirrors of the
accounts it wrote after its ack (only those whose ``rs`` moved since its previous look: no
refresh set the others' ``bal`` while the batch was between commit and ack), and a grant bumps
``gen`` after its commit and re-syncs: the mirror converges without waiting for the account's
next request.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterable

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.counters import Adjust, CounterStore, account_key
from billing.models import Account

log = logging.getLogger("tollway.billing")

BALANCE = "bal"
HELD = "held"
GENERATION = "gen"
PENDING = "pend"
REFRESHED = "rs"

# Built once: a statement built per call leaves SQLAlchemy's reference cycles (two BindParameters
# with their labels and sets) for the collector, which a writer re-syncing every round piled up
# faster than a serving process's rare collections took them (+13 MiB a worker in a 2-worker soak).
_BALANCES = select(Account.id, Account.balance_micro).where(Account.id.in_(bindparam("ids", expanding=True)))


def refresh_mark() -> int:
    """A fresh value for ``rs``: random, so that no two refreshes (in any process, before or
    after the counter store lost its data) write the same one."""
    return secrets.randbits(48)


def balance_key(prefix: str, account_id: int) -> str:
    return account_key(prefix, account_id, "balance")


async def resync_mirrors(
    store: CounterStore,
    sessionmaker: async_sessionmaker[AsyncSession],
    prefix: str,
    account_ids: Iterable[int],
    *,
    attempts: int = 5,
    mark: int | None = None,
) -> set[int]:
    """Set each loaded mirror to database balance − pending, under the generation guard, with
    one database query for all of them; returns the accounts whose mirror was set, which now
    carry ``mark`` (default: a fresh one) as their ``rs``.

    A mirror that is not loaded is left alone: the request path loads it, after rewriting what
    the counter store may have lost. Raises what the store or the database raise."""
    todo = sorted(set(account_ids))
    done: set[int] = set()
    mark = refresh_mark() if mark is None else mark
    for _attempt in range(attempts):
        # The generation and the pending sum first, then the balance (see the module docstring).
        fields = await asyncio.gather(*(store.get_all(balance_key(prefix, account_id)) for account_id in todo))
        loaded = {account_id: seen for account_id, seen in zip(todo, fields, strict=True) if BALANCE in seen}
        if not loaded:
            break
        async with sessionmaker() as session:
            balances = {
                int(account_id): int(balance)
                for account_id, balance in await session.execute(_BALANCES, {"ids": list(loaded)})
            }
        targets = [account_id for account_id in loaded if account_id in balances]
        applied = await asyncio.gather(
            *(
                store.set_if(
                    balance_key(prefix, account_id),
                    {BALANCE: balances[account_id] - loaded[account_id].get(PENDING, 0), REFRESHED: mark},
                    GENERATION,
                    loaded[account_id].get(GENERATION),
                )
                for account_id in targets
            )
        )
        done.update(account_id for account_id, ok in zip(targets, applied, strict=True) if ok)
        todo = [account_id for account_id, ok in zip(targets, applied, strict=True) if not ok]
        if not todo:
            break
    return done


async def database_balance_changed(
    store: CounterStore, sessionmaker: async_sessionmaker[AsyncSession], prefix: str, account_id: int
) -> None:
    """Call after committing a change to an account's database balance that no settlement
    carried (a grant, a refund, a replayed settlement): void every refresh that read the old
    balance, then set the mirror from the new one."""
    key = balance_key(prefix, account_id)
    await store.adjust([Adjust(key, GENERATION, 1)])
    await resync_mirrors(store, sessionmaker, prefix, [account_id])
