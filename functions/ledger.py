"""The invocation ledger: every proxy-function call logged, and priced when the operator says so.

:class:`FunctionLedger` implements :class:`functions.invocations.InvocationLedger` for the
``/fn`` runtime, which calls :meth:`~FunctionLedger.admit` after its rate-limit check,
:meth:`~FunctionLedger.finish` exactly once for every call it admitted, and
:meth:`~FunctionLedger.refused` for a call refused before admission that still counts in the
log (429 rate limited, 402 no credits).

**The log.** Each call becomes one :class:`~functions.models.FunctionInvocation` row, written
behind the request through the meter's settlement streams, never by the request itself: the
call puts a *record* (:mod:`billing.records`) on its account's stream (one Redis script call,
pipelined with the request's others) and the settlement writer inserts it with its next batch,
in the same transaction as the settlements around it, once per request id (``ON CONFLICT DO
NOTHING``): a replayed or re-claimed batch, or a buffer rewritten after Redis lost its data,
inserts nothing twice. On the embedded store (no Redis) a free call's row is likewise left to
the background writer; a priced one is written before answering, as every settlement there is.

**The price.** ``function_invocation_credits`` (decimal credits, ``"0"`` = free). When it is
set, :meth:`~FunctionLedger.admit` reserves it on the account with the meter, exactly as a
``/v1`` call reserves its worst case (a hold, idempotent per request id, released by whoever
settles or, if the process dies, by the hold's expiry), and refuses the call with
:class:`~functions.invocations.InvocationRefused` (402) when the balance cannot hold it.
:meth:`~FunctionLedger.finish` settles it. PRODUCT.md charges ``/v1`` only for work the provider
did; the same here, the price is charged when the target answered:

=========================  ================  ===========================================
outcome                    ``error_type``    charged
=========================  ================  ===========================================
target answered < 500      ``""``            the price
target answered 5xx, or    ``target_error``  the price (the call was forwarded and
its stream broke                             answered)
target unreachable         ``unreachable``   nothing (502: no work was done)
no answer in time          ``timeout``       nothing (the runtime's 504: no answer came)
stream stalled after the   ``timeout``       the price (the status is the target's: it
target answered                              had answered)
refused before admit       ``rate_limited``  nothing, and nothing was held
                           ``payment_required``
=========================  ================  ===========================================

The status tells the runtime's own answers from the target's: a ``timeout`` with 504 is the
runtime's (no answer came), with any other status the target's (a stream that stalled midway);
a ``""`` error type with a status of 500 or more is an answer the runtime made itself. Both are
free.

A priced call's settlement is a usage record with ``model`` = ``fn/<slug>``, ``provider`` =
``fn`` and ``upstream_model`` = the function's id, no key and no tokens: it shows in
``/api/usage/`` and the ledger (the debit's reason is that label) apart from every model's
spending, and reconcile checks it like any other debit. Free calls leave no usage record: the
invocation log is their record.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import msgspec
from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from billing.errors import OutOfBudget
from billing.ledger import Settlement
from billing.metering import Meter, Reservation
from billing.money import format_credits
from billing.records import Record, RecordRefused
from billing.shielding import shielded
from functions.config import ResolvedFunction
from functions.invocations import ErrorType, InvocationRefused, InvocationTicket
from functions.models import FunctionInvocation
from providers.base import Usage

__all__ = [
    "FUNCTION_PROVIDER",
    "INVOCATION_RECORDS",
    "MAX_ORIGIN",
    "FunctionLedger",
    "Invocation",
    "InvocationRecords",
    "Ticket",
    "clean_origin",
    "usage_label",
]

log = logging.getLogger("tollway.functions")

KIND = "fn"
#: The usage record's ``provider`` for a priced invocation (its ``model`` is ``fn/<slug>``).
FUNCTION_PROVIDER = "fn"
MAX_ORIGIN = 300
_INT32_MAX = 2**31 - 1
# Control characters (C0, DEL, C1) and lone surrogates: not storable (Postgres refuses NUL) and
# not showable; an origin is a header anyone can send.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def clean_origin(origin: str) -> str:
    """The ``Origin`` as stored: control characters removed, at most :data:`MAX_ORIGIN` characters."""
    return _UNSAFE.sub("", origin)[:MAX_ORIGIN]


def usage_label(function: ResolvedFunction) -> str:
    """The ``model`` of a priced invocation's usage record."""
    return f"{FUNCTION_PROVIDER}/{function.slug}"


class Invocation(msgspec.Struct, frozen=True, kw_only=True):
    """One call as buffered in the stream (the record's body); the request and account ids are
    the record's own."""

    function_id: str
    project_id: int
    environment_id: int
    status: int
    latency_ms: int
    error_type: str
    origin: str
    credits_micro: int
    requested_at: datetime


@dataclass(slots=True)
class Ticket:
    """An admitted call: its id, when it was admitted and, when priced, its hold."""

    request_id: str
    admitted_at: datetime
    reservation: Reservation | None = None
    finished: bool = False


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Invocation)
_invocations = cast(Table, FunctionInvocation.__table__)
_INSERT = {
    "postgresql": postgresql.insert(_invocations)
    .on_conflict_do_nothing(index_elements=["request_id"])
    .returning(_invocations.c.request_id),
    "sqlite": sqlite.insert(_invocations)
    .on_conflict_do_nothing(index_elements=["request_id"])
    .returning(_invocations.c.request_id),
}


class InvocationRecords:
    """The record kind the settlement writer stores invocations with (:mod:`billing.records`)."""

    name = KIND

    async def write(self, connection: AsyncConnection, records: Sequence[Record]) -> int:
        rows: dict[str, dict[str, Any]] = {}
        for record in records:
            try:
                call = _decoder.decode(record.body)
            except msgspec.DecodeError as error:
                raise RecordRefused(f"not an invocation: {error}") from error
            rows.setdefault(record.request_id, _row(record, call))  # a duplicate in the batch: the first wins
        result = await connection.execute(_INSERT[connection.dialect.name], list(rows.values()))
        return len(result.all())


def _row(record: Record, call: Invocation) -> dict[str, Any]:
    return {
        "request_id": record.request_id,
        "account_id": record.account_id,
        "project_id": call.project_id,
        "environment_id": call.environment_id,
        "function_id": call.function_id,
        "status": min(max(call.status, 0), 999),
        "latency_ms": min(max(call.latency_ms, 0), _INT32_MAX),
        "error_type": call.error_type[:32],
        "origin": clean_origin(call.origin),
        "credits_micro": call.credits_micro,
        # SQLite stores the wall time without its zone: always UTC, so times compare as text.
        "requested_at": call.requested_at.astimezone(UTC),
    }


INVOCATION_RECORDS = InvocationRecords()


def _utc_now() -> datetime:
    return datetime.now(UTC)


class FunctionLedger:
    """Logs every call of every proxy function and, when priced, reserves and settles its credits;
    one per process, shared by all requests."""

    def __init__(self, meter: Meter, *, price_micro: int = 0, now: Callable[[], datetime] = _utc_now) -> None:
        self._meter = meter
        self._price_micro = price_micro
        self._now = now
        meter.register(INVOCATION_RECORDS)

    @property
    def price_micro(self) -> int:
        return self._price_micro

    async def admit(self, function: ResolvedFunction, request_id: str) -> Ticket:
        """Hold the price of the call (when priced). Raises :class:`InvocationRefused` (402) when
        the account cannot hold it, and ``billing.errors.BillingUnavailable`` (503) when the
        credit counters cannot answer: a priced call fails closed."""
        now = self._now()
        if not self._price_micro:
            return Ticket(request_id, now)
        try:
            reservation = await self._meter.reserve(function.account_id, self._price_micro, request_id, now=now)
        except OutOfBudget as error:
            raise InvocationRefused(
                f"Insufficient credits: a call costs {format_credits(self._price_micro)} credits and "
                f"{format_credits(error.available_micro)} are available"
            ) from error
        return Ticket(request_id, now, reservation)

    async def finish(
        self,
        ticket: InvocationTicket,
        function: ResolvedFunction,
        *,
        status: int,
        latency_ms: int,
        error_type: ErrorType,
        origin: str,
    ) -> None:
        """Log the call and settle its hold (the price if the target answered, else nothing);
        buffered, never written here; once per ticket, and completed even if the calling task
        is being cancelled. Never raises (but for a ticket this ledger did not issue: a bug)."""
        if not isinstance(ticket, Ticket):
            raise TypeError(f"not a ticket of this ledger: {ticket!r}")
        if ticket.finished:
            log.error("invocation %s finished twice; the second is ignored", ticket.request_id)
            return
        ticket.finished = True
        reservation = ticket.reservation
        charged = reservation is not None and _target_answered(status, error_type)
        cost = self._price_micro if charged else 0
        call = _invocation(function, ticket.admitted_at, status, latency_ms, error_type, origin, cost)
        settlement = None
        if reservation is not None:
            settlement = Settlement(
                request_id=ticket.request_id,
                account_id=function.account_id,
                key_id=None,
                model=usage_label(function),
                provider=FUNCTION_PROVIDER,
                upstream_model=function.id,
                usage=Usage(),
                cost_micro=cost,
                latency_ms=call.latency_ms,
                status_code=call.status,
                error_code=error_type.value,
            )
        record = _record(function, ticket.request_id, call, settlement)
        with shielded():
            try:
                if reservation is not None:
                    await self._meter.settle(reservation, record)
                else:
                    await self._meter.record(record)
            except Exception:  # the meter never raises for these; a bug must not fail the call
                log.exception("could not log invocation %s", ticket.request_id)

    async def refused(
        self, function: ResolvedFunction, *, request_id: str, status: int, error_type: ErrorType, origin: str
    ) -> None:
        """Log a call refused before admission (429, 402): free, nothing held. Never raises."""
        call = _invocation(function, self._now(), status, 0, error_type, origin, 0)
        with shielded():
            try:
                await self._meter.record(_record(function, request_id, call, None))
            except Exception:
                log.exception("could not log refused invocation %s", request_id)


def _target_answered(status: int, error_type: ErrorType) -> bool:
    """Whether the target did the work (see the module's table)."""
    if error_type == ErrorType.TARGET_ERROR:
        return True
    if error_type == ErrorType.NONE:
        return status < 500
    if error_type == ErrorType.TIMEOUT:
        return status != 504
    return False


def _invocation(
    function: ResolvedFunction,
    at: datetime,
    status: int,
    latency_ms: int,
    error_type: ErrorType,
    origin: str,
    cost: int,
) -> Invocation:
    return Invocation(
        function_id=function.id,
        project_id=function.project_id,
        environment_id=function.environment_id,
        status=min(max(status, 0), 999),
        latency_ms=min(max(latency_ms, 0), _INT32_MAX),
        error_type=error_type.value,
        origin=clean_origin(origin),
        credits_micro=cost,
        requested_at=at,
    )


def _record(function: ResolvedFunction, request_id: str, call: Invocation, settlement: Settlement | None) -> Record:
    return Record(
        kind=KIND,
        request_id=request_id,
        account_id=function.account_id,
        body=msgspec.Raw(_encoder.encode(call)),
        settlement=settlement,
    )
