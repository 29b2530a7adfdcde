"""Cloning an environment's contents into a new one (``POST …/environments/`` with ``clone_from``).

Variables are re-sealed, not copied: the sealing context names the environment, so a
ciphertext copied as it is would not open in its new row. Proxy functions are copied with a
new UUID (their public URL) and a new token (sealed, and stored as its SHA-256), the same slug
(unique per environment, and the environment is new), and their secret mappings pointing at the
copied variables. Every other column is copied as it is, so a column added to
:class:`~functions.models.ProxyFunction` is cloned without a change here.
"""

from __future__ import annotations

import copy
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from functions.crypto import KeyRing
from functions.models import Environment, ProxyFunction, Variable
from functions.sealing import new_token, open_variable, require_ring, seal_variable

__all__ = ["copy_contents"]


# Columns a cloned function does not take from its source: who it is, where, and its token.
_NOT_CLONED = frozenset(
    {"id", "environment_id", "token_ciphertext", "token_sha256", "created_by", "created_at", "updated_at"}
)


async def copy_contents(
    session: AsyncSession, keyring: KeyRing | None, source: Environment, target: Environment, *, actor: str
) -> tuple[int, int]:
    """Copy ``source``'s variables (re-sealed: the sealing context names the environment) and
    functions (new UUID, new token, the same slug, mappings pointing at the copies). Returns
    how many of each were copied."""
    variables = list(
        await session.scalars(
            select(Variable)
            .where(Variable.account_id == source.account_id, Variable.environment_id == source.id)
            .order_by(Variable.id)
        )
    )
    functions = list(
        await session.scalars(
            select(ProxyFunction)
            .where(ProxyFunction.account_id == source.account_id, ProxyFunction.environment_id == source.id)
            .order_by(ProxyFunction.created_at, ProxyFunction.id)
        )
    )
    if not variables and not functions:
        return 0, 0
    ring = require_ring(keyring)
    copies: dict[int, Variable] = {}
    for variable in variables:
        value = open_variable(ring, variable)
        copies[variable.id] = Variable(
            account_id=target.account_id,
            environment_id=target.id,
            key=variable.key,
            value_ciphertext=seal_variable(ring, target.account_id, target.id, variable.key, value),
            is_secret=variable.is_secret,
            description=variable.description,
        )
    session.add_all(copies.values())
    await session.flush()
    new_ids = {old_id: copy_.id for old_id, copy_ in copies.items()}
    for function in functions:
        session.add(_cloned_function(ring, function, target, new_ids, actor=actor))
    await session.flush()
    return len(variables), len(functions)


def _cloned_function(
    ring: KeyRing, function: ProxyFunction, target: Environment, new_ids: dict[int, int], *, actor: str
) -> ProxyFunction:
    function_id = str(uuid.uuid4())
    _token, sealed, digest = new_token(ring, target.account_id, function_id)
    values = {
        column.key: copy.deepcopy(getattr(function, column.key))
        for column in ProxyFunction.__table__.columns
        if column.key not in _NOT_CLONED
    }
    # A mapping to a variable outside the source environment cannot resolve in the copy either:
    # it is kept as it is, so the copy is visibly unresolved rather than silently secretless.
    values["secret_mappings"] = [
        {**item, "variable_id": new_ids.get(int(item["variable_id"]), item["variable_id"])}
        if isinstance(item, dict) and "variable_id" in item
        else item
        for item in function.secret_mappings or []
    ]
    return ProxyFunction(
        **values,
        id=function_id,
        environment_id=target.id,
        token_ciphertext=sealed,
        token_sha256=digest,
        created_by=actor,
    )
