"""Accounts and credit grants, written to Postgres (or SQLite) as ledger movements.

A balance only ever changes together with a ledger row in the same transaction, so
``balance == sum(ledger)`` holds for every account and reconciliation can prove it.
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from billing.errors import AccountNotFound
from billing.models import Account, AccountStatus, LedgerEntry, LedgerKind


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
        await _move_credits(session, account.id, LedgerKind.GRANT, credits_micro, "opening credits", None)
    await session.commit()
    await session.refresh(account)
    return account


async def grant_credits(
    session: AsyncSession,
    account_id: int,
    amount_micro: int,
    *,
    reason: str = "",
    idempotency_key: str | None = None,
    kind: LedgerKind = LedgerKind.GRANT,
) -> LedgerEntry:
    """Add (or, for a negative correction, remove) credits; commits.

    With an ``idempotency_key`` a repeated call returns the first entry instead of granting
    twice, so an operator's retried request is safe.
    """
    if idempotency_key is not None:
        existing = await session.scalar(
            select(LedgerEntry).where(LedgerEntry.kind == kind.value, LedgerEntry.request_id == idempotency_key)
        )
        if existing is not None:
            return existing
    entry = await _move_credits(session, account_id, kind, amount_micro, reason, idempotency_key)
    try:
        await session.commit()
    except IntegrityError:
        # A concurrent call with the same idempotency key won the race; return its entry.
        await session.rollback()
        existing = await session.scalar(
            select(LedgerEntry).where(LedgerEntry.kind == kind.value, LedgerEntry.request_id == idempotency_key)
        )
        if existing is None:
            raise
        return existing
    return entry


async def _move_credits(
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
