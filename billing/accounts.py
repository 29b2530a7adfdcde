"""Accounts and credit grants, written to Postgres (or SQLite) as ledger movements.

A balance only ever changes together with a ledger row in the same transaction, so
``balance == sum(ledger)`` holds for every account and reconciliation can prove it.
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from billing.errors import AccountNotFound, IdempotencyConflict
from billing.models import Account, AccountStatus, LedgerEntry, LedgerKind
from billing.money import format_credits


class AccountExists(ValueError):
    """An account with that name exists already."""


async def create_account(session: AsyncSession, name: str, *, email: str = "", credits_micro: int = 0) -> Account:
    """Create an account, granting its opening credits through the ledger; commits."""
    account = Account(name=name, email=email, status=AccountStatus.ACTIVE.value, balance_micro=0)
    session.add(account)
    try:
        await session.flush()
    except IntegrityError as error:
        await session.rollback()
        raise AccountExists(f"an account named {name!r} exists already") from error
    if credits_micro:
        await move_credits(session, account.id, LedgerKind.GRANT, credits_micro, "opening credits", None)
    await session.commit()
    await session.refresh(account)
    return account


_OPERATOR_KINDS = (LedgerKind.GRANT.value, LedgerKind.REFUND.value)


async def grant_credits(
    session: AsyncSession,
    account_id: int,
    amount_micro: int,
    *,
    reason: str = "",
    idempotency_key: str | None = None,
    kind: LedgerKind = LedgerKind.GRANT,
) -> LedgerEntry:
    """Add (or, for a negative correction, remove) credits; commits. Only the database: use
    :func:`billing.grants.grant` so the counters' mirror follows.

    With an ``idempotency_key`` a repeated call returns the first entry instead of granting
    twice, so an operator's retried request is safe. Keys are the account's own: another
    account may use the same key for its own grant. A key reused with a different amount,
    reason or kind raises :class:`IdempotencyConflict`.
    """
    if idempotency_key is not None:
        existing = await _entry_for_key(session, account_id, idempotency_key)
        if existing is not None:
            return _same_or_conflict(existing, amount_micro, reason, kind)
    entry = await move_credits(session, account_id, kind, amount_micro, reason, idempotency_key)
    try:
        await session.commit()
    except IntegrityError:
        # A concurrent call with the same idempotency key won the race; answer as it did.
        await session.rollback()
        existing = None if idempotency_key is None else await _entry_for_key(session, account_id, idempotency_key)
        if existing is None:
            raise
        return _same_or_conflict(existing, amount_micro, reason, kind)
    return entry


async def _entry_for_key(session: AsyncSession, account_id: int, idempotency_key: str) -> LedgerEntry | None:
    # Grants and refunds share the operator's keys: a key first used for one is not reused
    # silently for the other. Debits (request ids) are a different namespace.
    return await session.scalar(
        select(LedgerEntry)
        .where(
            LedgerEntry.account_id == account_id,
            LedgerEntry.kind.in_(_OPERATOR_KINDS),
            LedgerEntry.request_id == idempotency_key,
        )
        .order_by(LedgerEntry.id)
        .limit(1)
    )


def _same_or_conflict(existing: LedgerEntry, amount_micro: int, reason: str, kind: LedgerKind) -> LedgerEntry:
    if (existing.amount_micro, existing.reason, existing.kind) != (amount_micro, reason, kind.value):
        raise IdempotencyConflict(
            f"idempotency key already used for this account's {existing.kind} of "
            f"{format_credits(existing.amount_micro)} credits with other parameters; use a new key"
        )
    return existing


async def move_credits(
    session: AsyncSession,
    account_id: int,
    kind: LedgerKind,
    amount_micro: int,
    reason: str,
    request_id: str | None,
) -> LedgerEntry:
    """Change the balance and append the matching ledger row, inside the caller's transaction."""
    balance_after = await session.scalar(
        update(Account)
        .where(Account.id == account_id)
        .values(balance_micro=Account.balance_micro + amount_micro)
        .returning(Account.balance_micro)
    )
    if balance_after is None:
        raise AccountNotFound(f"no account with id {account_id}")
    entry = LedgerEntry(
        account_id=account_id,
        kind=kind.value,
        amount_micro=amount_micro,
        balance_after_micro=balance_after,
        request_id=request_id,
        reason=reason,
    )
    session.add(entry)
    await session.flush()
    return entry


async def get_account(session: AsyncSession, account_id: int) -> Account:
    account = await session.get(Account, account_id)
    if account is None:
        raise AccountNotFound(f"no account with id {account_id}")
    return account


async def list_accounts(session: AsyncSession) -> list[Account]:
    return list(await session.scalars(select(Account).order_by(Account.id)))


async def count_accounts(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Account)) or 0)


async def account_balance(session: AsyncSession, account_id: int) -> int:
    balance = await session.scalar(select(Account.balance_micro).where(Account.id == account_id))
    if balance is None:
        raise AccountNotFound(f"no account with id {account_id}")
    return int(balance)


async def set_account_status(session: AsyncSession, account_id: int, status: AccountStatus) -> tuple[Account, str]:
    """Change an account's status; returns the account and its previous status. Does not commit."""
    account = await get_account(session, account_id)
    previous = account.status
    account.status = status.value
    await session.flush()
    return account, previous
