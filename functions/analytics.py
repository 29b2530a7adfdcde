"""Invocation analytics: what a project's proxy functions were asked to do, read from the log.

Every figure is computed by the database from ``function_invocations`` (the rows the invocation
ledger writes behind each call, :mod:`functions.ledger`), for one account's project, optionally
narrowed to one environment or one function, over the last ``days`` days (1–90):

==================  ==========================================================================
``series``          calls per UTC day, or per hour when ``days`` ≤ 2, every bucket present
                    (zeros included); ``errors`` counts the calls answered 4xx or 5xx
``status_classes``  calls by status class: 2xx, 3xx, 4xx, 5xx, other (a 429 or 402 refusal is
                    a 4xx)
``latency_ms``      p50 and p95 of the calls that were forwarded (refusals, which never reached
                    the target, are left out), by the nearest-rank definition: the smallest
                    latency with at least p % of the calls at or below it. Postgres computes it
                    with ``percentile_disc`` (that very definition), SQLite by ordering and
                    picking the row at rank ⌈p·n⌉: the same value on both, exact
``top_functions``   the 5 functions with the most calls, with their name and slug (``null`` for a
                    function deleted since: its history stays)
``error_types``     calls by ``error_type`` (timeout, target_error, unreachable, rate_limited…)
``month``           this calendar month's invocations (UTC), per function of the scope, for the
                    scope and for the whole account: the calls admitted past the rate limit and
                    the credit check, the ones an operator's price applies to
==================  ==========================================================================

Retention: the log is meant to be kept 90 days (:data:`RETENTION_DAYS`);
``tollway functions prune-invocations --older-than-days 90`` deletes what is older
(:func:`prune_invocations`), per account, in bounded batches.

Speed: each query is one indexed range scan of the window, never of the whole log:
(project_id, requested_at), (environment_id, requested_at) or (function_id, requested_at) for
the scope, (account_id, requested_at) for the account's month (migration 0010). The series, the
status classes and the error types come from one scan (grouped by bucket, class and error type).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple, cast

import msgspec
from sqlalchemy import ColumnElement, CursorResult, Integer, case, delete, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from billing.models import Account
from functions.errors import EnvironmentNotFound, ProjectNotFound
from functions.invocations import ErrorType
from functions.models import Environment, FunctionInvocation, Project, ProxyFunction

__all__ = [
    "DEFAULT_DAYS",
    "MAX_DAYS",
    "RETENTION_DAYS",
    "Analytics",
    "Scope",
    "project_analytics",
    "prune_invocations",
]

DEFAULT_DAYS = 30
MAX_DAYS = 90
RETENTION_DAYS = 90
TOP_FUNCTIONS = 5
HOURLY_UP_TO_DAYS = 2
_PRUNE_BATCH = 5_000
# Calls refused before they were admitted: logged, but neither forwarded nor invoiced.
_REFUSED = (ErrorType.RATE_LIMITED.value, ErrorType.PAYMENT_REQUIRED.value)
_CALL = FunctionInvocation


class Bucket(msgspec.Struct):
    start: str  # ISO 8601, UTC: the bucket's first instant
    calls: int
    errors: int


class StatusClasses(msgspec.Struct):
    s2xx: int = msgspec.field(default=0, name="2xx")
    s3xx: int = msgspec.field(default=0, name="3xx")
    s4xx: int = msgspec.field(default=0, name="4xx")
    s5xx: int = msgspec.field(default=0, name="5xx")
    other: int = 0


class Latency(msgspec.Struct):
    p50: int | None  # milliseconds; null without a forwarded call
    p95: int | None
    calls: int  # how many calls they are computed over


class FunctionCalls(msgspec.Struct):
    function_id: str
    name: str | None  # null: the function was deleted since
    slug: str | None
    environment_id: int
    calls: int


class ErrorCount(msgspec.Struct):
    error_type: str
    calls: int


class Month(msgspec.Struct):
    period: str  # "2026-11"
    invocations: int  # in the scope asked for
    account_invocations: int  # every project of the account
    functions: list[FunctionCalls]


class Analytics(msgspec.Struct):
    project_id: int
    environment_id: int | None
    function_id: str | None
    days: int
    granularity: Literal["hour", "day"]
    since: str
    until: str
    calls: int
    series: list[Bucket]
    status_classes: StatusClasses
    latency_ms: Latency
    top_functions: list[FunctionCalls]
    error_types: list[ErrorCount]
    month: Month
    retention_days: int = RETENTION_DAYS


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose calls: one account's project, optionally one environment or one function of it."""

    account_id: int
    project_id: int
    environment_id: int | None = None
    function_id: str | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = [_CALL.account_id == self.account_id, _CALL.project_id == self.project_id]
        if self.environment_id is not None:
            where.append(_CALL.environment_id == self.environment_id)
        if self.function_id is not None:
            where.append(_CALL.function_id == self.function_id)
        return where


class _Counted(NamedTuple):
    function_id: str
    environment_id: int
    calls: int


@dataclass(frozen=True, slots=True)
class _Window:
    since: datetime
    until: datetime
    step: timedelta

    @property
    def hourly(self) -> bool:
        return self.step == timedelta(hours=1)

    def starts(self) -> list[datetime]:
        count = int((self.until - self.since) / self.step)
        return [self.since + i * self.step for i in range(count)]


def _window(now: datetime, days: int) -> _Window:
    """Whole buckets, the last one holding ``now``: ``days`` days, or ``days × 24`` hours."""
    now = now.astimezone(UTC)
    if days <= HOURLY_UP_TO_DAYS:
        step = timedelta(hours=1)
        current = now.replace(minute=0, second=0, microsecond=0)
        return _Window(current - (days * 24 - 1) * step, current + step, step)
    step = timedelta(days=1)
    current = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return _Window(current - (days - 1) * step, current + step, step)


def _month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def _check_scope(session: AsyncSession, scope: Scope) -> None:
    project = await session.scalar(
        select(Project.id).where(Project.id == scope.project_id, Project.account_id == scope.account_id)
    )
    if project is None:  # another account's looks the same as none at all
        raise ProjectNotFound(f"project {scope.project_id} not found", param="project_id")
    if scope.environment_id is not None:
        environment = await session.scalar(
            select(Environment.id).where(
                Environment.id == scope.environment_id,
                Environment.project_id == scope.project_id,
                Environment.account_id == scope.account_id,
            )
        )
        if environment is None:
            raise EnvironmentNotFound(
                f"environment {scope.environment_id} not found in project {scope.project_id}", param="environment_id"
            )


async def project_analytics(session: AsyncSession, scope: Scope, *, days: int, now: datetime) -> Analytics:
    """The analytics of the module's table. Raises :class:`~functions.errors.ProjectNotFound` or
    :class:`~functions.errors.EnvironmentNotFound` (404) for a project, or an environment of it,
    that is not the account's, and ``ValueError`` for ``days`` out of 1–90."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}")
    await _check_scope(session, scope)
    window = _window(now, days)
    where = [*scope.conditions(), _CALL.requested_at >= window.since, _CALL.requested_at < window.until]
    postgres = session.get_bind().dialect.name == "postgresql"
    breakdown = await _breakdown(session, where, window, postgres)
    top = await _counts_by_function(session, where, limit=TOP_FUNCTIONS)
    month_start = _month_start(now)
    month_where = [
        *scope.conditions(),
        _CALL.requested_at >= month_start,
        _CALL.error_type.not_in(_REFUSED),
    ]
    month_functions = await _counts_by_function(session, month_where)
    account_month = await session.scalar(
        select(func.count()).where(
            _CALL.account_id == scope.account_id,
            _CALL.requested_at >= month_start,
            _CALL.error_type.not_in(_REFUSED),
        )
    )
    names = await _names(session, scope.account_id, {counted.function_id for counted in [*top, *month_functions]})
    return Analytics(
        project_id=scope.project_id,
        environment_id=scope.environment_id,
        function_id=scope.function_id,
        days=days,
        granularity="hour" if window.hourly else "day",
        since=window.since.isoformat(),
        until=window.until.isoformat(),
        calls=sum(bucket.calls for bucket in breakdown.series),
        series=breakdown.series,
        status_classes=breakdown.status_classes,
        latency_ms=await _latency(session, [*where, _CALL.error_type.not_in(_REFUSED)], postgres),
        top_functions=[_function_calls(names, counted) for counted in top],
        error_types=breakdown.error_types,
        month=Month(
            period=month_start.strftime("%Y-%m"),
            invocations=sum(counted.calls for counted in month_functions),
            account_invocations=int(account_month or 0),
            functions=[_function_calls(names, counted) for counted in month_functions],
        ),
    )


_STATUS_CLASS = case(
    (_CALL.status.between(200, 299), "2xx"),
    (_CALL.status.between(300, 399), "3xx"),
    (_CALL.status.between(400, 499), "4xx"),
    (_CALL.status.between(500, 599), "5xx"),
    else_="other",
)
_ERROR_CLASSES = frozenset({"4xx", "5xx"})


class _Breakdown(NamedTuple):
    series: list[Bucket]
    status_classes: StatusClasses
    error_types: list[ErrorCount]


async def _breakdown(
    session: AsyncSession, where: Sequence[ColumnElement[bool]], window: _Window, postgres: bool
) -> _Breakdown:
    """Calls per bucket, per status class and per error type, from one scan of the window
    (grouped by all three: at most buckets × 5 × error types rows)."""
    bucket: Any
    if postgres:
        bucket = func.date_trunc("hour" if window.hourly else "day", func.timezone("UTC", _CALL.requested_at))
    else:
        # SQLite keeps the UTC wall time as text ("2026-11-30 18:30:00.123456").
        bucket = func.strftime("%Y-%m-%d %H:00:00" if window.hourly else "%Y-%m-%d 00:00:00", _CALL.requested_at)
    bucket, klass = bucket.label("bucket"), _STATUS_CLASS.label("class")
    rows = await session.execute(
        select(bucket, klass, _CALL.error_type, func.count()).where(*where).group_by(bucket, klass, _CALL.error_type)
    )
    calls: Counter[datetime] = Counter()
    errors: Counter[datetime] = Counter()
    classes: Counter[str] = Counter()
    error_types: Counter[str] = Counter()
    for start, name, error_type, count in rows:
        moment = (start if isinstance(start, datetime) else datetime.fromisoformat(str(start))).replace(tzinfo=UTC)
        calls[moment] += int(count)
        classes[str(name)] += int(count)
        if name in _ERROR_CLASSES:
            errors[moment] += int(count)
        if error_type:
            error_types[str(error_type)] += int(count)
    return _Breakdown(
        series=[Bucket(start=start.isoformat(), calls=calls[start], errors=errors[start]) for start in window.starts()],
        status_classes=StatusClasses(
            s2xx=classes["2xx"], s3xx=classes["3xx"], s4xx=classes["4xx"], s5xx=classes["5xx"], other=classes["other"]
        ),
        # Most first, then by name.
        error_types=[
            ErrorCount(error_type=name, calls=count)
            for name, count in sorted(error_types.items(), key=lambda item: (-item[1], item[0]))
        ],
    )


def nearest_rank(percent: int, count: int) -> int:
    """The 1-based rank of the p-th percentile among ``count`` ordered values: ⌈p·n/100⌉ (≥ 1)."""
    return max(1, (percent * count + 99) // 100)


async def _latency(session: AsyncSession, where: Sequence[ColumnElement[bool]], postgres: bool) -> Latency:
    if postgres:
        fractions = postgresql.array([0.5, 0.95])
        row = (
            await session.execute(
                select(
                    func.percentile_disc(fractions).within_group(_CALL.latency_ms).cast(postgresql.ARRAY(Integer)),
                    func.count(),
                ).where(*where)
            )
        ).one()
        values, count = row
        if not count:
            return Latency(p50=None, p95=None, calls=0)
        return Latency(p50=int(values[0]), p95=int(values[1]), calls=int(count))
    count = int(await session.scalar(select(func.count()).where(*where)) or 0)
    if not count:
        return Latency(p50=None, p95=None, calls=0)
    picked = []
    for percent in (50, 95):
        picked.append(
            await session.scalar(
                select(_CALL.latency_ms)
                .where(*where)
                .order_by(_CALL.latency_ms)
                .limit(1)
                .offset(nearest_rank(percent, count) - 1)
            )
        )
    return Latency(p50=int(picked[0] or 0), p95=int(picked[1] or 0), calls=count)


async def _counts_by_function(
    session: AsyncSession, where: Sequence[ColumnElement[bool]], *, limit: int | None = None
) -> list[_Counted]:
    calls = func.count().label("calls")
    # A function lives in one environment: grouping by both costs nothing and keeps the
    # environment of a function deleted since.
    query = (
        select(_CALL.function_id, _CALL.environment_id, calls)
        .where(*where)
        .group_by(_CALL.function_id, _CALL.environment_id)
        .order_by(calls.desc(), _CALL.function_id)
    )
    if limit is not None:
        query = query.limit(limit)
    return [
        _Counted(str(function_id), int(environment_id), int(count))
        for function_id, environment_id, count in await session.execute(query)
    ]


async def _names(session: AsyncSession, account_id: int, function_ids: set[str]) -> dict[str, tuple[str, str]]:
    """The name and slug of each function that still exists (this account's only)."""
    if not function_ids:
        return {}
    rows = await session.execute(
        select(ProxyFunction.id, ProxyFunction.name, ProxyFunction.slug).where(
            ProxyFunction.account_id == account_id, ProxyFunction.id.in_(sorted(function_ids))
        )
    )
    return {str(id_): (str(name), str(slug)) for id_, name, slug in rows}


def _function_calls(names: dict[str, tuple[str, str]], counted: _Counted) -> FunctionCalls:
    name, slug = names.get(counted.function_id, (None, None))
    return FunctionCalls(
        function_id=counted.function_id,
        name=name,
        slug=slug,
        environment_id=counted.environment_id,
        calls=counted.calls,
    )


async def prune_invocations(session: AsyncSession, *, older_than: datetime) -> int:
    """Delete invocation rows from before ``older_than``, account by account in batches of
    5,000 (each its own transaction, so a big backlog never holds one long lock); returns how
    many. Uses the (account_id, requested_at) index."""
    deleted = 0
    for account_id in list(await session.scalars(select(Account.id).order_by(Account.id))):
        while True:
            batch = (
                select(_CALL.id)
                .where(_CALL.account_id == account_id, _CALL.requested_at < older_than)
                .limit(_PRUNE_BATCH)
                .scalar_subquery()
            )
            result = cast(CursorResult[Any], await session.execute(delete(_CALL).where(_CALL.id.in_(batch))))
            await session.commit()
            count = int(result.rowcount or 0)
            deleted += count
            if count < _PRUNE_BATCH:
                break
    return deleted
