"""Granting and refunding credits: the one place that moves a balance outside a request.

The database is the truth and the counter store mirrors it (:mod:`billing.mirror`). A grant
written to the database alone left the mirror stale until the account's next request: the
credits page showed the old ``available`` and reconcile reported drift. So the CLI and the
admin API both call :func:`grant`, which commits, then voids every refresh that read the old
balance and sets the mirror from the new one.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.accounts import grant_credits
from billing.counters import CounterStore, CounterStoreUnavailable
from billing.errors import DATABASE_ERRORS
from billing.mirror import database_balance_changed
from billing.models import LedgerEntry, LedgerKind

log = logging.getLogger("tollway.billing")


async def grant(
    sessionmaker: async_sessionmaker[AsyncSession],
    counters: CounterStore | None,
    prefix: str,
    account_id: int,
    amount_micro: int,
    *,
    reason: str = "",
    idempotency_key: str | None = None,
    kind: LedgerKind = LedgerKind.GRANT,
) -> LedgerEntry:
    """Grant (or refund, or correct) credits and bring the counters' mirror along; returns the
    ledger entry (the first one, for a repeated idempotency key).

    ``counters`` is the store the gateway processes reserve against, ``None`` when no other
    process can be reached (the embedded store of a running gateway lives in its process: it
    picks the grant up on its next refresh). Raises :class:`AccountNotFound` and
    :class:`IdempotencyConflict`; a mirror that cannot be reached is left to its next refresh.
    """
    async with sessionmaker() as session:
        entry = await grant_credits(
            session, account_id, amount_micro, reason=reason, idempotency_key=idempotency_key, kind=kind
        )
    if counters is not None:
        await sync_after_change(sessionmaker, counters, prefix, account_id)
    return entry


async def sync_after_change(
    sessionmaker: async_sessionmaker[AsyncSession], counters: CounterStore, prefix: str, account_id: int
) -> None:
    """After a committed balance change no settlement carried: the mirror follows now, or (if
    the counters or the database cannot answer) on its next periodic refresh."""
    try:
        await database_balance_changed(counters, sessionmaker, prefix, account_id)
    except CounterStoreUnavailable:
        log.warning("credit counters unreachable: account %d's mirror follows on its next refresh", account_id)
    except DATABASE_ERRORS:
        log.warning("credits database unreachable: account %d's mirror follows on its next refresh", account_id)


# The sign-up grant's idempotency key: one per account (keys are per account), so however often
# the grant is retried for an account, it is granted once.
SIGNUP_KEY = "signup-credits"
SIGNUP_REASON = "sign-up credits"


async def grant_signup_credits(
    sessionmaker: async_sessionmaker[AsyncSession],
    counters: CounterStore | None,
    prefix: str,
    account_id: int,
    amount_micro: int,
) -> LedgerEntry | None:
    """The ``signup_credits`` a new account gets once (``None`` when the setting is 0).

    Called where a customer's account is made (the admin API's and the CLI's account creation),
    never for the bootstrap account, whose opening credits are ``bootstrap_credits``. Through
    :func:`grant` with a fixed idempotency key: a retry returns the first entry."""
    if amount_micro <= 0:
        return None
    return await grant(
        sessionmaker, counters, prefix, account_id, amount_micro, reason=SIGNUP_REASON, idempotency_key=SIGNUP_KEY
    )
