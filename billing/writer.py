"""The write-behind writer: settlements go from the counter store's streams into the database.

Settling is one atomic step in the counter store (:mod:`billing.reservations`): release the
hold, lower the mirror, and buffer the settlement in the account's stream, adding its cost to
``pend`` (what the stream holds that the database has not taken). The request never waits for
the database: a writer in each process drains the streams in batches, one transaction per
batch, idempotently on the request id, and acknowledging an entry takes its cost off ``pend``
exactly once. So at every moment ``bal = database balance − pend`` (less while a writer is
between commit and ack); after its ack each writer re-syncs the mirrors it wrote
(:mod:`billing.mirror`). The embedded store dies with the process, so there the request writes
its own settlement through the same buffer before it returns.

A batch the database refuses for one entry's data (not an outage) is split until the entry is
alone; the rest is written and the entry is parked (:mod:`billing.parking`), so one bad string
never stops the writes of every other account.

The streams also carry *records* (:mod:`billing.records`): rows of another domain (a proxy
function's invocation) written behind the request in the same batch transaction, with the
settlement of their cost when they have one. Their owner registers their kind
(:meth:`SettlementWriter.register`). A record that cost nothing is not money: the embedded store
leaves it to the background writer instead of writing it before the request answers.

Entry points: :meth:`SettlementWriter.buffer` (the request path hands a settlement over),
:meth:`SettlementWriter.write_pending` (one round), :meth:`SettlementWriter.running` (the
background task for the app's lifetime), :meth:`SettlementWriter.settled` (read your writes).
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

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from billing.counters import Adjust, CounterStore, CounterStoreUnavailable, Enqueue, QueuedSettlement
from billing.errors import DATABASE_ERRORS, BillingUnavailable
from billing.layout import CounterKeys
from billing.ledger import Settlement
from billing.mirror import GENERATION, PENDING, REFRESHED, refresh_mark, resync_mirrors
from billing.parking import Refused, describe, is_refusal, park
from billing.records import Entry, RecordKind, RecordRefused, decode_entry, encode_entry, write_entries

log = logging.getLogger("tollway.billing")

_WRITE_BATCH = 500  # settlements per stream per writer round
_KEEP_UNWRITTEN_S = 120.0  # how long a process remembers what it buffered (see replay_unwritten)
_REMEMBERED_MARKS = 10_000  # accounts whose refresh mark a writer keeps (beyond: re-sync, then relearn)
_STREAM_ACCOUNT = re.compile(r"\{a(\d+)\}:settled$")
# What a batch may fail with for one entry's data rather than an outage (see billing.parking).
_REFUSABLE: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, RecordRefused)


def writer_name() -> str:
    """A consumer name unique to this process, so writers never take each other's entries."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class SettlementWriter:
    """Buffers this process's settlements and drains the streams into the database; one per process."""

    def __init__(
        self,
        store: CounterStore,
        engine: AsyncEngine,
        sessionmaker: async_sessionmaker[AsyncSession],
        keys: CounterKeys,
        *,
        claim_idle_s: float = 30.0,
        consumer: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._engine = engine
        self._sessionmaker = sessionmaker
        self._keys = keys
        self._clock = clock
        # Age of the oldest settlement of the last batch written (read by the gateway's metrics).
        self.lag_s: float | None = None
        self._claim_idle_ms = int(claim_idle_s * 1000)
        self.consumer = consumer or writer_name()
        # Accounts whose streams this process fed since its writer last drained them.
        self._dirty: set[int] = set()
        self._wake = asyncio.Event()
        self._drain_lock = asyncio.Lock()
        # What this process buffered and no writer here has written yet: if Redis loses its
        # data, these are rewritten from memory (request id → (monotonic time, data)).
        self._unwritten: dict[str, tuple[float, bytes]] = {}
        self._kinds: dict[str, RecordKind] = {}
        # Per account, the mirror's refresh mark (billing.mirror) as this writer last saw it
        # after an ack: unchanged at the next ack, no refresh set the mirror during that batch.
        self._marks: dict[int, int] = {}

    def register(self, kind: RecordKind) -> None:
        """Have this writer store records of ``kind`` (before it starts: a record of a kind it
        does not know is parked)."""
        self._kinds[kind.name] = kind

    # -- handing settlements over (the request path) ------------------------------------------

    def enqueue(self, entry: Entry, *, only_if_held: bool = False) -> Enqueue:
        """The stream entry that buffers ``entry`` (a settlement or a record), for a release to
        append atomically."""
        return Enqueue(
            stream=self._keys.stream(entry.account_id),
            pending_key=self._keys.balance(entry.account_id),
            pending_field=PENDING,
            data=encode_entry(entry),
            cost=entry.cost_micro,
            only_if_held=only_if_held,
        )

    async def buffer(self, entry: Entry, holds_key: str, *, if_held: list[Adjust], always: list[Adjust]) -> None:
        """Release the hold and buffer the entry in one atomic step, then hand it to a writer;
        never raises."""
        enqueue = self.enqueue(entry)
        request_id = entry.request_id
        try:
            await self._store.release(holds_key, request_id, if_held=if_held, always=always, enqueue=enqueue)
        except CounterStoreUnavailable:
            # The counters cannot take it: write it to the database ourselves. The hold (if
            # any) stays until it expires; the mirror is re-read from the database then.
            log.exception("counters unavailable: writing a settlement directly", extra={"request_id": request_id})
            await self._write_directly([entry])
            return
        money = isinstance(entry, Settlement) or entry.settlement is not None
        await self.buffered(entry.account_id, request_id, enqueue.data, money=money)

    async def buffered(self, account_id: int, request_id: str, data: bytes, *, money: bool = True) -> None:
        """An entry of ``account_id`` entered its stream: have it written. ``money``: it bills or
        records a metered request (every settlement), as opposed to a record that cost nothing."""
        self._dirty.add(account_id)
        if not self._store.durable:
            if not money:
                # Nothing owed rides on it: the background writer takes it within a moment
                # (a crash before then loses a log row, never a debit).
                self._wake.set()
                return
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

    def mark(self, account_id: int) -> None:
        """Have the next round drain the account's stream (whoever fed it)."""
        self._dirty.add(account_id)

    # -- writing to the database -------------------------------------------------------------

    async def _commit(self, entries: list[Entry], unreadable: Sequence[Refused] = ()) -> int:
        """Write the lot, idempotent on request ids; returns how many rows were new. One
        transaction unless the database refuses an entry's data: then the rest is written and the
        entries it refuses are parked. Raises ``DATABASE_ERRORS`` for an outage (nothing is parked)."""
        refused = list(unreadable)
        try:
            written = await self._write_batch(entries)
        except _REFUSABLE as error:
            if not is_refusal(error):
                raise
            written, more = await self._isolate(entries)
            refused += more
        if refused:
            await self._park(refused)
        return written

    async def _write_batch(self, entries: Sequence[Entry]) -> int:
        async with self._engine.begin() as connection:
            return await write_entries(connection, entries, self._kinds)

    async def _isolate(self, entries: Sequence[Entry]) -> tuple[int, list[Refused]]:
        """Bisect a refused batch: halves that the database takes are written, and an entry
        refused on its own is returned to be parked (log2(n) extra transactions per bad entry)."""
        middle = len(entries) // 2
        written, refused = 0, []
        for half in (entries[:middle], entries[middle:]):
            if not half:
                continue
            try:
                written += await self._write_batch(half)
                continue
            except _REFUSABLE as error:
                if not is_refusal(error):
                    raise
                if len(half) == 1:
                    entry = half[0]
                    refused.append(
                        Refused(
                            entry.account_id, entry.request_id, entry.cost_micro, encode_entry(entry), describe(error)
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

    async def _write_directly(self, entries: list[Entry]) -> None:
        try:
            await self._commit(entries)
        except DATABASE_ERRORS:
            # Neither store can take it: the one case a served request goes unrecorded;
            # reconcile shows the account's counters ahead of its ledger.
            for entry in entries:
                log.critical(
                    "settlement lost: database and counters both unavailable", extra={"request_id": entry.request_id}
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
            try:
                return await self._write_round(targets, claim_stale)
            except BaseException:
                # Failed or cancelled midway (a stopping writer cancels its round): what the
                # round claimed is still ours in the streams, and the next round, such as the
                # final drain on stop, must look there again.
                self._dirty.update(targets)
                raise

    async def _write_round(self, targets: list[int], claim_stale: bool) -> int:
        idle_ms = self._claim_idle_ms if claim_stale else None
        try:
            claims = await asyncio.gather(
                *(
                    self._store.claim_settlements(self._keys.stream(account_id), self.consumer, _WRITE_BATCH, idle_ms)
                    for account_id in targets
                )
            )
        except CounterStoreUnavailable as error:
            raise BillingUnavailable("the credit counters are unreachable") from error
        batches = [(account_id, entries) for account_id, entries in zip(targets, claims, strict=True) if entries]
        if not batches:
            return 0
        decoded: list[Entry] = []
        unreadable: list[Refused] = []
        for account_id, entries in batches:
            _decode_into(decoded, unreadable, account_id, entries)
        try:
            await self._commit(decoded, unreadable)
        except DATABASE_ERRORS as error:
            log.warning("database unavailable: %d settlements stay buffered", len(decoded))
            raise BillingUnavailable("the credits database is unreachable") from error
        try:
            await asyncio.gather(*(self._acknowledge(account_id, entries) for account_id, entries in batches))
        except CounterStoreUnavailable as error:
            # Written but not acknowledged: the next round writes them again, which writes nothing.
            raise BillingUnavailable("the credit counters are unreachable") from error
        self.lag_s = _batch_lag_s(batches)  # for the operator's metrics
        for entry in decoded:
            self._unwritten.pop(entry.request_id, None)
        for account_id, entries in batches:
            if len(entries) >= _WRITE_BATCH:
                self._dirty.add(account_id)  # there is more
        await self._resync([account_id for account_id, _entries in batches])
        return len(decoded) + len(unreadable)

    async def _acknowledge(self, account_id: int, entries: list[QueuedSettlement]) -> None:
        await self._store.ack_settlements(
            self._keys.stream(account_id), self._keys.balance(account_id), PENDING, entries, GENERATION
        )

    async def _resync(self, account_ids: list[int]) -> None:
        """After a commit and its ack: a refresh that read the pending sum before the commit and
        the balance after it set the mirror low by this batch; set it right now (see
        :mod:`billing.mirror`). Only where a refresh may have done so: an account whose refresh
        mark did not move since this writer's previous look (after its previous ack, before this
        commit) saw no refresh set its mirror in between, so its mirror is right and costs no
        database query. Best effort: the periodic refresh is the fallback."""
        try:
            marks = await asyncio.gather(
                *(self._store.get(self._keys.balance(account_id), REFRESHED) for account_id in account_ids)
            )
            stale = [
                account_id
                for account_id, mark in zip(account_ids, marks, strict=True)
                if mark is None or self._marks.get(account_id) != mark
            ]
            if not stale:
                return
            for account_id in stale:
                self._marks.pop(account_id, None)
            mark = refresh_mark()
            done = await resync_mirrors(self._store, self._sessionmaker, self._keys.prefix, stale, mark=mark)
            if len(self._marks) + len(done) > _REMEMBERED_MARKS:
                self._marks.clear()
            self._marks.update(dict.fromkeys(done, mark))
        except CounterStoreUnavailable:
            log.warning("could not re-sync the balance mirrors after a write; the next refresh will")
        except DATABASE_ERRORS:
            log.warning("could not re-sync the balance mirrors after a write; the next refresh will")

    async def replay_unwritten(self) -> None:
        """Redis lost its data, and with it whatever its streams held: rewrite what this process
        buffered and has not seen written (idempotent, so what was written stays once).

        Raises :class:`BillingUnavailable` when the database cannot take them."""
        if not self._unwritten:
            return
        # Encoded by this process from a settlement or a record: always readable.
        entries = [decode_entry(data) for _at, data in self._unwritten.values()]
        try:
            written = await self._commit(entries)
        except DATABASE_ERRORS as error:
            raise BillingUnavailable("the credits database is unreachable; try again shortly") from error
        self._unwritten.clear()
        log.warning("the counters lost their data: %d settlements rewritten from memory", written)

    # -- finding and waiting for work --------------------------------------------------------

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
        stream = self._keys.stream(account_id)
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

    @contextlib.asynccontextmanager
    async def running(
        self, *, poll_s: float = 1.0, batch_window_s: float = 0.02, scan_s: float = 30.0
    ) -> AsyncIterator[None]:
        """Drain the settlement streams into the database in the background while open.

        A round starts when a settlement is buffered (after ``batch_window_s``, so that one
        transaction carries many), or every ``poll_s``. Every ``scan_s`` the writer also looks
        for streams this process did not feed and takes entries a dead writer claimed
        ``claim_idle_s`` ago: a process killed after buffering, or mid-batch, loses nothing.
        """
        task = asyncio.create_task(self._loop(poll_s, batch_window_s, scan_s))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # A graceful stop writes what it buffered; what it cannot write stays in the streams
            # (with Redis) for the next writer.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.write_pending(), 5.0)

    async def _loop(self, poll_s: float, batch_window_s: float, scan_s: float) -> None:
        clock = time.monotonic
        next_scan = clock()
        while True:
            started = clock()
            claim_stale = started >= next_scan
            try:
                if claim_stale:
                    next_scan = clock() + scan_s
                    await self.discover_buffers()
                await self.write_pending(claim_stale=claim_stale)
            except BillingUnavailable as error:
                log.warning("settlement writer waits: %s", error)
                await asyncio.sleep(poll_s)
                continue
            except Exception:  # nothing may end the writer
                log.exception("settlement writer round failed; retrying")
                await asyncio.sleep(poll_s)
                continue
            if not self.has_buffered:
                await self.wait_for_buffered(poll_s)
                await asyncio.sleep(batch_window_s)
            elif (rest := started + batch_window_s - clock()) > 0:
                # More came in during the round: still one round per window, or at low load
                # every settlement (arriving while the previous round runs) paid for its own.
                await asyncio.sleep(rest)


def _batch_lag_s(batches: Sequence[tuple[int, list[QueuedSettlement]]]) -> float | None:
    """How long the oldest entry of a written batch waited: Redis stream ids start with the
    milliseconds they were added at; other stores' ids say nothing (``None``)."""
    oldest = None
    for _account_id, entries in batches:
        head = entries[0].entry_id.partition("-")[0] if entries else ""
        if head.isdigit() and (oldest is None or int(head) < oldest):
            oldest = int(head)
    return None if oldest is None else max(0.0, time.time() - oldest / 1000)


def _decode_into(
    decoded: list[Entry], unreadable: list[Refused], account_id: int, entries: list[QueuedSettlement]
) -> None:
    for entry in entries:
        try:
            decoded.append(decode_entry(entry.data))
        except msgspec.DecodeError as error:
            # Not ours to guess at, and not to be dropped either: parked with its bytes, so
            # an operator sees it in reconcile, and acknowledged so it cannot block its stream.
            unreadable.append(
                Refused(account_id, f"unreadable:{account_id}:{entry.entry_id}", entry.cost, entry.data, str(error))
            )
