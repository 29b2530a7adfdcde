"""Reserve, then settle: the money path of every request.

The account balance is mirrored into the counter store (``bal``) next to the sum of open
reservations (``held``); a reservation is one atomic check ``held + amount <= bal`` across
every gateway process.

Settling is one atomic step in the counter store: release the hold, lower the mirror, and
buffer the settlement in the account's stream, adding its cost to ``pend`` (what the stream
holds that the database has not taken). The request never waits for the database: a writer
in each process drains the streams in batches, one transaction per batch, idempotently on the
request id, and acknowledging an entry takes its cost off ``pend`` exactly once. So at every
moment ``bal = database balance − pend`` (less while a writer is between commit and ack).

The mirror is refreshed from the database every few seconds as ``database balance − pend``,
through a generation guard (see :mod:`billing.mirror`): a refresh that raced a settlement or a
writer's acknowledgement is dropped, ``pend`` is read before the balance so the mirror can lag
low but never runs high, and each writer re-syncs the mirrors it wrote after its ack, so a low
mirror does not wait for the account's next request. The embedded store dies with the process,
so there the request writes its own settlement through the same buffer before it returns.

A batch the database refuses for one entry's data (not an outage) is split until the entry is
alone; the rest is written and the entry is parked (:mod:`billing.parking`), so one bad string
never stops the writes of every other account.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta

import msgspec
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from billing.accounts import account_balance
from billing.counters import (
    Adjust,
    ApplyResult,
    Check,
    CounterStore,
    CounterStoreUnavailable,
    Enqueue,
    Hold,
    QueuedSettlement,
    account_key,
    settlement_stream,
)
from billing.errors import (
    DATABASE_ERRORS,
    BillingError,
    BillingUnavailable,
    InsufficientCredits,
    RateLimitExceeded,
    SpendingLimitExceeded,
)
from billing.ledger import Settlement, write_settlements
from billing.mirror import BALANCE, GENERATION, HELD, PENDING, resync_mirrors
from billing.models import UsageRecord
from billing.money import format_credits
from billing.parking import Refused, describe, is_refusal, park
from billing.periods import period_end, period_id, period_start

log = logging.getLogger("tollway.billing")

__all__ = ["BALANCE", "GENERATION", "HELD", "PENDING", "KeyLimits", "Meter", "Reservation", "settlement_writer"]


class KeyLimits(msgspec.Struct, frozen=True):
    """A key's own limits for one request (a ``bt-`` token brings its parent's)."""

    key_id: int
    spending_limit_micro: int | None = None
    spending_period: str = "monthly"
    rpm_limit: int | None = None
    tpm_limit: int | None = None


class Reservation(msgspec.Struct, frozen=True):
    request_id: str
    account_id: int
    amount_micro: int
    spend_key: str = ""
    spend_ttl_ms: int = 0
    tpm_key: str = ""
    tokens: int = 0
    record: str = ""  # the hold record as written (checkpoints extend it)


_WINDOW_MS = 120_000  # a minute window's counter outlives its minute, then Redis drops it
_PERIOD_GRACE = timedelta(days=2)
_WRITE_BATCH = 500  # settlements per stream per writer round
_KEEP_UNWRITTEN_S = 120.0  # how long a process remembers what it buffered (see _replay_unwritten)
_STREAM_ACCOUNT = re.compile(r"\{a(\d+)\}:settled$")


def writer_name() -> str:
    """A consumer name unique to this process, so writers never take each other's entries."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Meter:
    """Reserves and settles credits for requests; one per process, shared by all requests."""

    def __init__(
        self,
        store: CounterStore,
        engine: AsyncEngine,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        prefix: str,
        refresh_s: float,
        reservation_ttl_s: float = 900.0,
        claim_idle_s: float = 30.0,
        consumer: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._sessionmaker = sessionmaker
        self._engine = engine
        self._prefix = prefix
        self._refresh_s = refresh_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._reservation_ttl_s = reservation_ttl_s
        self._refreshed_at: dict[int, float] = {}
        self._refreshing: dict[int, asyncio.Future[None]] = {}
        self._claim_idle_ms = int(claim_idle_s * 1000)
        self.consumer = consumer or writer_name()
        # Accounts whose streams this process fed since its writer last drained them.
        self._dirty: set[int] = set()
        self._wake = asyncio.Event()
        self._drain_lock = asyncio.Lock()
        # What this process buffered and no writer here has written yet: if Redis loses its
        # data, these are rewritten from memory (request id → (monotonic time, data)).
        self._unwritten: dict[str, tuple[float, bytes]] = {}

    def balance_key(self, account_id: int) -> str:
        return account_key(self._prefix, account_id, "balance")

    def holds_key(self, account_id: int) -> str:
        return account_key(self._prefix, account_id, "holds")

    def stream_key(self, account_id: int) -> str:
        return settlement_stream(self._prefix, account_id)

    def spend_key(self, account_id: int, key_id: int, period: str, now: datetime) -> str:
        return account_key(self._prefix, account_id, f"spend:{key_id}:{period_id(now, period)}")

    async def key_spend_micro(self, account_id: int, key_id: int, period: str, now: datetime) -> int:
        """What the key has spent (and holds) in the current period."""
        return await self._store.get(self.spend_key(account_id, key_id, period, now), "v") or 0

    async def reserve(
        self,
        account_id: int,
        amount_micro: int,
        request_id: str,
        *,
        limits: KeyLimits | None = None,
        tokens: int = 0,
        now: datetime | None = None,
    ) -> Reservation:
        """Steps 10–12 of the security chain in one atomic apply: the key's rate limits, its
        spending limit for the current period, then the account balance.

        Raises :class:`RateLimitExceeded`, :class:`SpendingLimitExceeded` or
        :class:`InsufficientCredits` naming the first limit that does not hold.
        """
        if self._clock() - self._refreshed_at.get(account_id, float("-inf")) > self._refresh_s:
            await self.refresh_balance(account_id)
        now = now or datetime.now(UTC)
        checks: list[Check] = []
        kinds: list[str] = []
        spend_key = tpm_key = ""
        if limits is not None:
            minute = int(now.timestamp()) // 60
            if limits.rpm_limit is not None:
                key = account_key(self._prefix, account_id, f"rpm:{limits.key_id}:{minute}")
                checks.append(Check(key, "n", 1, limit=limits.rpm_limit, ttl_ms=_WINDOW_MS))
                kinds.append("rpm")
            if limits.tpm_limit is not None:
                tpm_key = account_key(self._prefix, account_id, f"tpm:{limits.key_id}:{minute}")
                checks.append(Check(tpm_key, "n", tokens, limit=limits.tpm_limit, ttl_ms=_WINDOW_MS))
                kinds.append("tpm")
            spend_key = self.spend_key(account_id, limits.key_id, limits.spending_period, now)
            period_ttl = period_end(now, limits.spending_period) - now + _PERIOD_GRACE
            checks.append(
                Check(
                    spend_key,
                    "v",
                    amount_micro,
                    limit=limits.spending_limit_micro,
                    # Missing means a new period or lost counters: rebuilt from Postgres below.
                    must_exist=True,
                    ttl_ms=int(period_ttl.total_seconds() * 1000),
                )
            )
            kinds.append("spend")
        checks.append(Check(self.balance_key(account_id), HELD, amount_micro, limit_field=BALANCE))
        kinds.append("balance")
        # The hold's record outlives a crashed process: a later refresh finds it expired and
        # releases it (see sweep_expired), so no reservation holds credits forever.
        record = msgspec.json.encode(
            {
                "a": amount_micro,
                "e": int((self._wall_clock() + self._reservation_ttl_s) * 1000),
                "s": spend_key,
                "t": tpm_key,
                "k": tokens if tpm_key else 0,
            }
        ).decode()
        hold = Hold(self.holds_key(account_id), request_id, record)
        try:
            result = await self._store.apply(checks, hold)
            for _attempt in range(2):
                if result.ok or not result.missing:
                    break
                if kinds[result.failed] == "balance":
                    # The mirror was lost (a Redis restart): load it and try again.
                    await self.refresh_balance(account_id, force=True)
                elif kinds[result.failed] == "spend" and limits is not None:
                    await self._rebuild_spend(account_id, limits, spend_key, now, checks[result.failed].ttl_ms)
                result = await self._store.apply(checks, hold)
        except CounterStoreUnavailable as error:
            raise BillingUnavailable("the credit counters are unreachable; try again shortly") from error
        if not result.ok:
            raise _refusal(kinds[result.failed], result, amount_micro, now)
        return Reservation(
            request_id=request_id,
            account_id=account_id,
            amount_micro=amount_micro,
            spend_key=spend_key,
            spend_ttl_ms=next((c.ttl_ms for c, kind in zip(checks, kinds, strict=True) if kind == "spend"), 0),
            tpm_key=tpm_key,
            tokens=tokens,
            record=record,
        )

    async def settle(self, reservation: Reservation, settlement: Settlement) -> None:
        """Bill the real cost once and release the hold; never raises for a served request."""
        balance_key = self.balance_key(reservation.account_id)
        always = [Adjust(balance_key, BALANCE, -settlement.cost_micro), Adjust(balance_key, GENERATION, 1)]
        if reservation.spend_key:
            always.append(Adjust(reservation.spend_key, "v", settlement.cost_micro, ttl_ms=reservation.spend_ttl_ms))
        if reservation.tpm_key:
            used = settlement.usage.input_tokens + settlement.usage.output_tokens
            always.append(Adjust(reservation.tpm_key, "n", used))
        release = _release_of(
            balance_key, reservation.amount_micro, reservation.spend_key, reservation.tpm_key, reservation.tokens
        )
        await self._buffer(settlement, self.holds_key(reservation.account_id), if_held=release, always=always)

    async def record(self, settlement: Settlement) -> None:
        """Record a request that held no credits (refused before reserving); never raises."""
        await self._buffer(settlement, self.holds_key(settlement.account_id), if_held=[], always=[])

    def _enqueue(self, settlement: Settlement, *, only_if_held: bool = False) -> Enqueue:
        return Enqueue(
            stream=self.stream_key(settlement.account_id),
            pending_key=self.balance_key(settlement.account_id),
            pending_field=PENDING,
            data=msgspec.json.encode(settlement),
            cost=settlement.cost_micro,
            only_if_held=only_if_held,
        )

    async def _buffer(
        self, settlement: Settlement, holds_key: str, *, if_held: list[Adjust], always: list[Adjust]
    ) -> None:
        """Release the hold and buffer the settlement in one atomic step, then hand it to a writer."""
        enqueue = self._enqueue(settlement)
        request_id = settlement.request_id
        try:
            await self._store.release(holds_key, request_id, if_held=if_held, always=always, enqueue=enqueue)
        except CounterStoreUnavailable:
            # The counters cannot take it: write it to the database ourselves. The hold (if
            # any) stays until it expires; the mirror is re-read from the database then.
            log.exception("counters unavailable: writing a settlement directly", extra={"request_id": request_id})
            await self._write_directly([settlement])
            return
        await self._buffered(settlement.account_id, request_id, enqueue.data)

    async def _buffered(self, account_id: int, request_id: str, data: bytes) -> None:
        self._dirty.add(account_id)
        if not self._store.durable:
            # An in-process buffer dies with the process: write before answering. If the
            # database cannot take it now, the writer retries it in the background.
            with contextlib.suppress(BillingUnavailable):
                await self.write_pending(accounts=[account_id])
            return
        now = self._clock()
        self._unwritten[request_id] = (now, data)
        expired = []
        for oldest, (buffered_at, _data) in itertools.islice(self._unwritten.items(), 8):
            if now - buffered_at < _KEEP_UNWRITTEN_S:
                break
            expired.append(oldest)  # written by now, if not by our writer then by another's
        for oldest in expired:
            del self._unwritten[oldest]
        self._wake.set()

    async def _commit(self, settlements: list[Settlement], unreadable: Sequence[Refused] = ()) -> int:
        """Write the lot, idempotent on request ids; returns how many were new. One transaction
        unless the database refuses an entry's data: then the rest is written and the entries
        it refuses are parked. Raises ``DATABASE_ERRORS`` for an outage (nothing is parked)."""
        refused = list(unreadable)
        try:
            written = await self._write_batch(settlements)
        except DATABASE_ERRORS as error:
            if not is_refusal(error):
                raise
            written, more = await self._isolate(settlements)
            refused += more
        if refused:
            await self._park(refused)
        return written

    async def _write_batch(self, settlements: Sequence[Settlement]) -> int:
        async with self._engine.begin() as connection:
            return await write_settlements(connection, settlements)

    async def _isolate(self, settlements: Sequence[Settlement]) -> tuple[int, list[Refused]]:
        """Bisect a refused batch: halves that the database takes are written, and an entry
        refused on its own is returned to be parked (log2(n) extra transactions per bad entry)."""
        middle = len(settlements) // 2
        written, refused = 0, []
        for half in (settlements[:middle], settlements[middle:]):
            if not half:
                continue
            try:
                written += await self._write_batch(half)
                continue
            except DATABASE_ERRORS as error:
                if not is_refusal(error):
                    raise
                if len(half) == 1:
                    entry = half[0]
                    refused.append(
                        Refused(
                            entry.account_id,
                            entry.request_id,
                            entry.cost_micro,
                            msgspec.json.encode(entry),
                            describe(error),
                        )
                    )
                    continue
            more_written, more_refused = await self._isolate(half)
            written += more_written
            refused += more_refused
        return written, refused

    async def _park(self, refused: list[Refused]) -> None:
        try:
            async with self._engine.begin() as connection:
                await park(connection, refused)
        except DATABASE_ERRORS as error:
            if not is_refusal(error):
                raise
            # Not even its escaped text was taken: keep the bare facts, and the bytes in the log.
            log.critical("parking refused (%s); parking the bare facts: %r", describe(error), refused)
            bare = [
                Refused(entry.account_id, f"unstorable:{secrets.token_hex(8)}", entry.cost_micro, b"", "unstorable")
                for entry in refused
            ]
            async with self._engine.begin() as connection:
                await park(connection, bare)

    async def _write_directly(self, settlements: list[Settlement]) -> None:
        try:
            await self._commit(settlements)
        except DATABASE_ERRORS:
            # Neither store can take it: the one case a served request goes unrecorded;
            # reconcile shows the account's counters ahead of its ledger.
            for settlement in settlements:
                log.critical(
                    "settlement lost: database and counters both unavailable",
                    extra={"request_id": settlement.request_id},
                )

    async def write_pending(self, *, accounts: list[int] | None = None, claim_stale: bool = False) -> int:
        """One writer round: move the buffered settlements of ``accounts`` (default: those this
        process fed) into the database in one transaction, then acknowledge them; returns how
        many. ``claim_stale`` also takes entries another writer claimed and never acknowledged.

        Raises :class:`BillingUnavailable` when the database or the counters cannot answer; the
        entries stay buffered for the next round."""
        async with self._drain_lock:
            targets = sorted(self._dirty) if accounts is None else accounts
            # Forget them before reading: a settlement buffered after our read marks its
            # account again, so nothing waits for a round that never comes.
            self._dirty.difference_update(targets)
            idle_ms = self._claim_idle_ms if claim_stale else None
            try:
                claims = await asyncio.gather(
                    *(
                        self._store.claim_settlements(self.stream_key(account_id), self.consumer, _WRITE_BATCH, idle_ms)
                        for account_id in targets
                    )
                )
            except CounterStoreUnavailable as error:
                self._dirty.update(targets)
                raise BillingUnavailable("the credit counters are unreachable") from error
            batches = [(account_id, entries) for account_id, entries in zip(targets, claims, strict=True) if entries]
            if not batches:
                return 0
            settlements: list[Settlement] = []
            unreadable: list[Refused] = []
            for account_id, entries in batches:
                _decode_into(settlements, unreadable, account_id, entries)
            try:
                await self._commit(settlements, unreadable)
            except DATABASE_ERRORS as error:
                self._dirty.update(account_id for account_id, _entries in batches)
                log.warning("database unavailable: %d settlements stay buffered", len(settlements))
                raise BillingUnavailable("the credits database is unreachable") from error
            try:
                await asyncio.gather(*(self._acknowledge(account_id, entries) for account_id, entries in batches))
            except CounterStoreUnavailable as error:
                # Written but not acknowledged: the next round writes them again, which writes nothing.
                self._dirty.update(account_id for account_id, _entries in batches)
                raise BillingUnavailable("the credit counters are unreachable") from error
            for settlement in settlements:
                self._unwritten.pop(settlement.request_id, None)
            for account_id, entries in batches:
                if len(entries) >= _WRITE_BATCH:
                    self._dirty.add(account_id)  # there is more
            await self._resync([account_id for account_id, _entries in batches])
            return len(settlements) + len(unreadable)

    async def _acknowledge(self, account_id: int, entries: list[QueuedSettlement]) -> None:
        await self._store.ack_settlements(
            self.stream_key(account_id), self.balance_key(account_id), PENDING, entries, GENERATION
        )

    async def _resync(self, account_ids: list[int]) -> None:
        """After a commit and its ack: a refresh that read the pending sum before the commit and
        the balance after it set the mirror low by this batch; set it right now (see
        :mod:`billing.mirror`). Best effort: the periodic refresh is the fallback."""
        try:
            await resync_mirrors(self._store, self._sessionmaker, self._prefix, account_ids)
        except CounterStoreUnavailable:
            log.warning("could not re-sync the balance mirrors after a write; the next refresh will")
        except DATABASE_ERRORS:
            log.warning("could not re-sync the balance mirrors after a write; the next refresh will")

    async def discover_buffers(self) -> int:
        """Mark every account whose stream holds entries for this writer, including streams fed
        by processes that died before their writer drained them; returns how many."""
        try:
            streams = await self._store.settlement_streams()
        except CounterStoreUnavailable as error:
            raise BillingUnavailable("the credit counters are unreachable") from error
        found = {int(match.group(1)) for stream in streams if (match := _STREAM_ACCOUNT.search(stream))}
        self._dirty.update(found)
        return len(found)

    @property
    def has_buffered(self) -> bool:
        """Whether this process fed streams its writer has not drained yet."""
        return bool(self._dirty)

    async def wait_for_buffered(self, timeout_s: float) -> None:
        """Sleep until a settlement is buffered, or ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout_s)
        self._wake.clear()

    async def settled(self, account_id: int, *, timeout_s: float = 1.0) -> bool:
        """Write what the account's stream holds now, so that a read of its usage or balance that
        follows sees every request that finished before it; returns whether the stream emptied
        within ``timeout_s``. Entries another writer holds are waited for, not taken: a live
        writer acknowledges within milliseconds, and a dead one's wait for ``claim_idle_s``."""
        deadline = self._clock() + timeout_s
        stream = self.stream_key(account_id)
        while True:
            try:
                if not await self._store.queued_settlements(stream):
                    return True
                await self.write_pending(accounts=[account_id])
            except (BillingUnavailable, CounterStoreUnavailable):
                return False
            if self._clock() >= deadline:
                return False
            await asyncio.sleep(0.02)

    async def _replay_unwritten(self) -> None:
        """Redis lost its data, and with it whatever its streams held: rewrite what this process
        buffered and has not seen written (idempotent, so what was written stays once)."""
        if not self._unwritten:
            return
        # Encoded by this process from a Settlement: always readable.
        settlements = [msgspec.json.decode(data, type=Settlement) for _at, data in self._unwritten.values()]
        try:
            written = await self._commit(settlements)
        except DATABASE_ERRORS as error:
            raise BillingUnavailable("the credits database is unreachable; try again shortly") from error
        self._unwritten.clear()
        log.warning("the counters lost their data: %d settlements rewritten from memory", written)

    async def refresh_balance(self, account_id: int, *, force: bool = False) -> None:
        """Reload the mirrored balance from the database; concurrent callers share one query."""
        pending = self._refreshing.get(account_id)
        if pending is not None and not force:
            await asyncio.shield(pending)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._refreshing[account_id] = future
        try:
            await self._refresh(account_id)
            future.set_result(None)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # mark retrieved: the waiters re-raise it, not the loop
            raise
        finally:
            if self._refreshing.get(account_id) is future:
                del self._refreshing[account_id]

    async def _rebuild_spend(
        self, account_id: int, limits: KeyLimits, spend_key: str, now: datetime, ttl_ms: int
    ) -> None:
        """A key's spend counter for this period, from its usage records (0 in a new period)."""
        if BALANCE not in await self._store.get_all(self.balance_key(account_id)):
            # The counters lost their data, and with them what the streams held: rewrite what
            # this process buffered first (the refresh does), or the usage records miss it and
            # the rebuilt counter stays low.
            await self.refresh_balance(account_id, force=True)
        since = period_start(now, limits.spending_period)
        try:
            async with self._sessionmaker() as session:
                spent = await session.scalar(
                    select(func.coalesce(func.sum(UsageRecord.credits_micro), 0)).where(
                        UsageRecord.key_id == limits.key_id, UsageRecord.created_at >= since
                    )
                )
        except DATABASE_ERRORS as error:
            raise BillingUnavailable("the credits database is unreachable; try again shortly") from error
        if await self._store.set_if(spend_key, {"v": int(spent or 0)}, "v", None):
            await self._store.adjust([Adjust(spend_key, "v", 0, ttl_ms=ttl_ms)])

    async def checkpoint(self, reservation: Reservation, so_far: Settlement) -> None:
        """Remember what a stream has cost so far, so that if its process dies the expiry bills
        this instead of nothing; never raises."""
        record = msgspec.json.decode(reservation.record)
        record["p"] = msgspec.to_builtins(so_far)
        try:
            await self._store.update_hold(
                self.holds_key(reservation.account_id), reservation.request_id, msgspec.json.encode(record).decode()
            )
        except CounterStoreUnavailable:
            log.warning("could not checkpoint a stream", extra={"request_id": reservation.request_id})

    async def sweep_expired(self, account_id: int) -> int:
        """Release the holds of reservations nobody settled in time (their process died); returns
        how many. Settling later still bills the request; it just finds no hold to release."""
        now_ms = int(self._wall_clock() * 1000)
        released = 0
        holds_key = self.holds_key(account_id)
        for request_id, raw in (await self._store.holds(holds_key)).items():
            try:
                record = msgspec.json.decode(raw)
                expired = int(record["e"]) <= now_ms
            except (msgspec.DecodeError, KeyError, TypeError, ValueError):
                expired, record = True, {"a": 0, "s": "", "t": "", "k": 0}
            if not expired:
                continue
            back = _release_of(
                self.balance_key(account_id),
                int(record.get("a", 0)),
                str(record.get("s", "")),
                str(record.get("t", "")),
                int(record.get("k", 0)),
            )
            enqueue = served = None
            if record.get("p"):
                # A stream that checkpointed: bill what it had generated, in the same step that
                # releases the hold, so only the winner of a race with a late settle bills it.
                served = msgspec.convert(record["p"], Settlement)
                enqueue = self._enqueue(served, only_if_held=True)
                back += [
                    Adjust(self.balance_key(account_id), BALANCE, -served.cost_micro),
                    Adjust(self.balance_key(account_id), GENERATION, 1),
                ]
                if record.get("s"):
                    back.append(Adjust(str(record["s"]), "v", served.cost_micro))
            if await self._store.release(holds_key, request_id, if_held=back, always=[], enqueue=enqueue):
                released += 1
                log.warning("released an expired reservation", extra={"request_id": request_id})
                if served is not None and enqueue is not None:
                    await self._buffered(account_id, request_id, enqueue.data)
        return released

    async def _refresh(self, account_id: int) -> None:
        try:
            await self.sweep_expired(account_id)
        except CounterStoreUnavailable as error:
            raise BillingUnavailable("the credit counters are unreachable; try again shortly") from error
        key = self.balance_key(account_id)
        # A settlement between our read of the generation and our write voids the write;
        # under steady traffic a few attempts always find a quiet moment.
        for _attempt in range(5):
            try:
                # One read of the generation and the pending sum, before the balance query: a
                # writer that commits and acknowledges in between makes the mirror low, not high.
                fields = await self._store.get_all(key)
                if BALANCE not in fields:
                    await self._replay_unwritten()
                async with self._sessionmaker() as session:
                    balance = await account_balance(session, account_id)
                applied = await self._store.set_if(
                    key, {BALANCE: balance - fields.get(PENDING, 0)}, GENERATION, fields.get(GENERATION)
                )
            except CounterStoreUnavailable as error:
                raise BillingUnavailable("the credit counters are unreachable; try again shortly") from error
            except DATABASE_ERRORS as error:
                if BALANCE not in fields:
                    raise BillingUnavailable("the credits database is unreachable; try again shortly") from error
                # The mirror only ever falls between refreshes (grants wait for the database to
                # come back), so spending against it stays within what the account has.
                log.warning("credits database unavailable: spending against the mirrored balance")
                self._refreshed_at[account_id] = self._clock()
                return
            if applied:
                self._refreshed_at[account_id] = self._clock()
                return

    async def available_micro(self, account_id: int) -> int:
        """Balance minus open reservations, as the next reservation would see it."""
        if self._clock() - self._refreshed_at.get(account_id, float("-inf")) > self._refresh_s:
            await self.refresh_balance(account_id)
        fields = await self._store.get_all(self.balance_key(account_id))
        return fields.get(BALANCE, 0) - fields.get(HELD, 0)


def _release_of(balance_key: str, amount_micro: int, spend_key: str, tpm_key: str, tokens: int) -> list[Adjust]:
    """What taking a reservation added, to be taken back exactly once."""
    back = [Adjust(balance_key, HELD, -amount_micro)]
    if spend_key:
        back.append(Adjust(spend_key, "v", -amount_micro))
    if tpm_key:
        back.append(Adjust(tpm_key, "n", -tokens))
    return back


def _refusal(kind: str, result: ApplyResult, amount_micro: int, now: datetime) -> BillingError:
    if kind in ("rpm", "tpm"):
        unit = "requests" if kind == "rpm" else "tokens"
        return RateLimitExceeded(
            f"rate limit exceeded: this key allows {result.cap} {unit} per minute",
            retry_after_s=60 - now.second,
        )
    available = max(0, (result.cap or 0) - (result.value or 0))
    if kind == "spend":
        return SpendingLimitExceeded(
            f"spending limit reached: this request may cost up to {format_credits(amount_micro)} credits and "
            f"{format_credits(available)} remain in this key's limit for the period",
            available_micro=available,
        )
    return InsufficientCredits(
        f"insufficient credits: this request may cost up to {format_credits(amount_micro)} "
        f"credits and {format_credits(available)} are available",
        available_micro=available,
    )


def _decode_into(
    settlements: list[Settlement], unreadable: list[Refused], account_id: int, entries: list[QueuedSettlement]
) -> None:
    for entry in entries:
        try:
            settlements.append(msgspec.json.decode(entry.data, type=Settlement))
        except msgspec.DecodeError as error:
            # Not ours to guess at, and not to be dropped either: parked with its bytes, so
            # an operator sees it in reconcile, and acknowledged so it cannot block its stream.
            unreadable.append(
                Refused(account_id, f"unreadable:{account_id}:{entry.entry_id}", entry.cost, entry.data, str(error))
            )


@contextlib.asynccontextmanager
async def settlement_writer(
    meter: Meter, *, poll_s: float = 1.0, batch_window_s: float = 0.02, scan_s: float = 30.0
) -> AsyncIterator[None]:
    """Drain the settlement streams into the database in the background for the app's lifetime.

    A round starts when a settlement is buffered (after ``batch_window_s``, so that one
    transaction carries many), or every ``poll_s``. Every ``scan_s`` the writer also looks for
    streams this process did not feed and takes entries a dead writer claimed ``claim_idle_s``
    ago: a process killed after buffering, or mid-batch, loses nothing.
    """

    async def loop() -> None:
        clock = time.monotonic
        next_scan = clock()
        while True:
            claim_stale = clock() >= next_scan
            try:
                if claim_stale:
                    next_scan = clock() + scan_s
                    await meter.discover_buffers()
                await meter.write_pending(claim_stale=claim_stale)
            except BillingUnavailable as error:
                log.warning("settlement writer waits: %s", error)
                await asyncio.sleep(poll_s)
                continue
            except Exception:  # nothing may end the writer
                log.exception("settlement writer round failed; retrying")
                await asyncio.sleep(poll_s)
                continue
            if not meter.has_buffered:
                await meter.wait_for_buffered(poll_s)
                await asyncio.sleep(batch_window_s)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # A graceful stop writes what it buffered; what it cannot write stays in the streams
        # (with Redis) for the next writer.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(meter.write_pending(), 5.0)
