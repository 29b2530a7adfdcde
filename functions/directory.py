"""The in-process cache of resolved proxy functions: the runtime's only way to find one.

A request finds its function here without touching the database: an entry is loaded once
(concurrent requests for the same id share that one load) and trusted for ``ttl_s`` (at most
1 s, the settings refuse more), so a change made by another process (a regenerated token, a
disabled function, a new secret value) is seen everywhere within a second; the process that
made the change calls :meth:`forget` and sees it at once. Unknown ids are cached as absent
too, so a flood of random ids costs one query per id per second, and ids that are not UUIDs
never reach the database at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from functions.config import Injection, ResolvedFunction, SecretMapping, apply_template
from functions.crypto import KeyRing, SecretKeyError, token_context, variable_context
from functions.models import HttpMethod, InjectAs, ProxyFunction, Variable

log = logging.getLogger("tollway.functions")
_MAX_ENTRIES = 100_000


def canonical_function_id(text: str) -> str | None:
    """The id in its stored form (lower-case, hyphenated UUID), or None if it is not one."""
    if len(text) != 36:
        return None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


def resolve(row: ProxyFunction, variables: dict[int, Variable], keyring: KeyRing | None) -> ResolvedFunction:
    """Open the row's secrets and apply their templates; a mapping that cannot be opened marks
    the function unresolved (the runtime refuses it with 500) instead of sending it without."""
    injections: list[Injection] = []
    unresolved = False
    for item in row.secret_mappings:
        mapping = SecretMapping(
            variable_id=int(item["variable_id"]),
            inject_as=InjectAs(item["inject_as"]),
            key=str(item["key"]),
            template=str(item.get("template") or ""),
        )
        variable = variables.get(mapping.variable_id)
        if variable is None or keyring is None:
            unresolved = True
            continue
        try:
            value = keyring.open(
                variable.value_ciphertext,
                context=variable_context(variable.account_id, variable.environment_id, variable.key),
            )
        except SecretKeyError:
            log.error("proxy function %s: variable %s does not open", row.id, variable.id)
            unresolved = True
            continue
        injections.append(
            Injection(
                inject_as=mapping.inject_as,
                key=mapping.key,
                value=apply_template(mapping.template, value),
                variable_key=variable.key,
                template=mapping.template,
            )
        )
    return ResolvedFunction(
        id=row.id,
        account_id=row.account_id,
        project_id=row.project_id,
        environment_id=row.environment_id,
        name=row.name,
        slug=row.slug,
        enabled=row.enabled,
        target_url=row.target_url,
        method=HttpMethod(row.method),
        headers={str(k): str(v) for k, v in row.headers.items()},
        injections=tuple(injections),
        allowed_origins=tuple(str(origin) for origin in row.allowed_origins),
        pass_through_body=row.pass_through_body,
        body_template=row.body_template,
        rate_limit_per_minute=row.rate_limit_per_minute,
        forward_path=row.forward_path,
        forward_query=row.forward_query,
        timeout_s=row.timeout_ms / 1000,
        token_sha256=bytes.fromhex(row.token_sha256),
        unresolved=unresolved,
    )


async def load_function(session: AsyncSession, function_id: str, keyring: KeyRing | None) -> ResolvedFunction | None:
    row = await session.get(ProxyFunction, function_id)
    if row is None:
        return None
    wanted = {int(item["variable_id"]) for item in row.secret_mappings}
    variables: dict[int, Variable] = {}
    if wanted:
        # Only this function's own account and environment: a mapping naming another
        # tenant's (or environment's) variable resolves to nothing, never to its value.
        found = await session.scalars(
            select(Variable).where(
                Variable.id.in_(wanted),
                Variable.account_id == row.account_id,
                Variable.environment_id == row.environment_id,
            )
        )
        variables = {variable.id: variable for variable in found}
    return resolve(row, variables, keyring)


def token_of(row: ProxyFunction, keyring: KeyRing) -> str:
    """The function's token in clear, for Copy Token and the code generators (never logged)."""
    return keyring.open(row.token_ciphertext, context=token_context(row.account_id, row.id))


class FunctionDirectory:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        keyring: KeyRing | None,
        *,
        ttl_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        loader: Callable[[str], Awaitable[ResolvedFunction | None]] | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._load = loader or self._load_from_database
        self._keyring = keyring
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[str, tuple[float, ResolvedFunction | None]] = {}
        self._loading: dict[str, asyncio.Future[ResolvedFunction | None]] = {}
        # Bumped by forget(): a load that started before a change must not cache what it read.
        self._generation: dict[str, int] = {}

    async def _load_from_database(self, function_id: str) -> ResolvedFunction | None:
        async with self._sessionmaker() as session:
            return await load_function(session, function_id, self._keyring)

    @property
    def keyring(self) -> KeyRing | None:
        """None when the operator configured no key ring (Postgres without keys): functions still
        run, but a secret cannot be stored or opened."""
        return self._keyring

    async def get(self, function_id: str) -> ResolvedFunction | None:
        canonical = canonical_function_id(function_id)
        if canonical is None:
            return None
        entry = self._entries.get(canonical)
        now = self._clock()
        if entry is not None and now - entry[0] < self._ttl_s:
            return entry[1]
        loading = self._loading.get(canonical)
        if loading is None:
            loading = asyncio.get_running_loop().create_future()
            self._loading[canonical] = loading
            generation = self._generation.get(canonical, 0)
            try:
                found = await self._load(canonical)
            except BaseException as error:
                if self._loading.get(canonical) is loading:
                    del self._loading[canonical]
                if not loading.done():
                    loading.set_exception(error)
                    loading.exception()  # retrieved: waiters get it, nobody logs "never retrieved"
                raise
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.clear()
            if self._generation.get(canonical, 0) == generation:
                self._entries[canonical] = (now, found)
            if self._loading.get(canonical) is loading:
                del self._loading[canonical]
            loading.set_result(found)
            return found
        return await asyncio.shield(loading)

    def forget(self, function_id: str) -> None:
        """Called by the process that changed the function: its next request reloads, and a load
        already in flight (which may have read the old row) is neither cached nor shared."""
        self._entries.pop(function_id, None)
        self._loading.pop(function_id, None)
        self._generation[function_id] = self._generation.get(function_id, 0) + 1
        if len(self._generation) >= _MAX_ENTRIES:
            self._generation.clear()  # bounded; losing counts only risks one stale cache fill

    def forget_all(self) -> None:
        self._entries.clear()
        self._loading.clear()
        self._generation.clear()
