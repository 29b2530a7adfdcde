"""The variables of an environment: list (masked), create, update, delete, reveal.

Every value is stored sealed under the key ring (:mod:`functions.crypto`), secret or not; a
secret is shown as ``••••••••`` everywhere except :func:`reveal_variable`, which owners and
admins call explicitly and which is audited. Neither a value nor a ciphertext ever reaches an
answer's other fields, an error message or an audit entry.

``is_secret`` is fixed at creation (envmanager.md §2): :class:`VariableUpdate` has no such field.
A change to a variable's value changes what the functions that map it inject, and deleting it
leaves them unresolved (the runtime answers 500 rather than calling without the secret): both
return the ids of those functions, for the directory to forget.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from billing.bounds import NO_NUL, Description
from functions.crypto import KeyRing
from functions.errors import VariableExists, VariableNotFound
from functions.models import ProxyFunction, Variable
from functions.projects import environment_of, iso
from functions.sealing import open_variable, require_ring, seal_variable
from keys.audit import record_event

__all__ = [
    "MASK",
    "MAX_VALUE_CHARS",
    "VariableCreate",
    "VariableKey",
    "VariableRead",
    "VariableRevealed",
    "VariableUpdate",
    "VariableValue",
    "create_variable",
    "delete_variable",
    "functions_mapping",
    "list_variables",
    "reveal_variable",
    "update_variable",
    "variable_by_key",
]

MASK = "••••••••"
MAX_VALUE_CHARS = 64 * 1024
# A variable is read as an environment variable by the generated code: the shell's name rules.
VariableKey = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_]*\Z")]
# No NUL: no platform can hold one in an environment variable.
VariableValue = Annotated[str, msgspec.Meta(max_length=MAX_VALUE_CHARS, pattern=NO_NUL)]


class VariableCreate(msgspec.Struct, forbid_unknown_fields=True):
    key: VariableKey
    value: VariableValue
    is_secret: bool = True
    description: Description = ""


class VariableUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Partial: a field left out stays as it is. ``key`` and ``is_secret`` cannot change."""

    value: VariableValue | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET


class VariableRead(msgspec.Struct):
    """``value``: the mask for a secret, the value itself for a plain variable."""

    id: int
    environment_id: int
    key: str
    value: str
    is_secret: bool
    description: str
    created_at: str
    updated_at: str


class VariableRevealed(msgspec.Struct):
    id: int
    key: str
    value: str


def _read(variable: Variable, keyring: KeyRing | None) -> VariableRead:
    return VariableRead(
        id=variable.id,
        environment_id=variable.environment_id,
        key=variable.key,
        value=MASK if variable.is_secret else open_variable(keyring, variable),
        is_secret=variable.is_secret,
        description=variable.description,
        created_at=iso(variable.created_at),
        updated_at=iso(variable.updated_at),
    )


def _audit_view(variable: Variable) -> dict[str, Any]:
    """What the audit trail says of a variable: never its value, secret or not."""
    return {
        "key": variable.key,
        "environment_id": variable.environment_id,
        "is_secret": variable.is_secret,
        "description": variable.description,
    }


async def _variable(session: AsyncSession, account_id: int, variable_id: int) -> Variable:
    variable = await session.scalar(
        select(Variable).where(Variable.account_id == account_id, Variable.id == variable_id)
    )
    if variable is None:
        raise VariableNotFound(f"variable {variable_id} not found")
    return variable


async def variable_by_key(session: AsyncSession, account_id: int, environment_id: int, key: str) -> Variable | None:
    return await session.scalar(
        select(Variable).where(
            Variable.account_id == account_id, Variable.environment_id == environment_id, Variable.key == key
        )
    )


async def functions_mapping(session: AsyncSession, variable: Variable) -> list[str]:
    """The ids of the functions of the variable's environment that inject it."""
    rows = await session.execute(
        select(ProxyFunction.id, ProxyFunction.secret_mappings).where(
            ProxyFunction.account_id == variable.account_id,
            ProxyFunction.environment_id == variable.environment_id,
        )
    )
    return [function_id for function_id, mappings in rows if any(_maps(item, variable.id) for item in mappings or [])]


def _maps(item: Any, variable_id: int) -> bool:
    if not isinstance(item, dict):
        return False
    try:
        return int(item.get("variable_id", 0)) == variable_id
    except (TypeError, ValueError):
        return False


async def list_variables(
    session: AsyncSession, keyring: KeyRing | None, account_id: int, environment_id: int
) -> list[VariableRead]:
    environment = await environment_of(session, account_id, environment_id)
    rows = await session.scalars(
        select(Variable)
        .where(Variable.account_id == account_id, Variable.environment_id == environment.id)
        .order_by(Variable.key)
    )
    return [_read(variable, keyring) for variable in rows]


async def create_variable(
    session: AsyncSession,
    keyring: KeyRing | None,
    account_id: int,
    environment_id: int,
    data: VariableCreate,
    *,
    actor: str,
) -> VariableRead:
    require_ring(keyring)
    environment = await environment_of(session, account_id, environment_id)
    exists = VariableExists(f"this environment has a variable {data.key!r} already", param="key")
    taken = await session.scalar(
        select(Variable.id).where(
            Variable.account_id == account_id, Variable.environment_id == environment.id, Variable.key == data.key
        )
    )
    if taken is not None:
        raise exists
    variable = Variable(
        account_id=account_id,
        environment_id=environment.id,
        key=data.key,
        value_ciphertext=seal_variable(keyring, account_id, environment.id, data.key, data.value),
        is_secret=data.is_secret,
        description=data.description,
    )
    session.add(variable)
    try:
        await session.flush()
        record_event(
            session,
            account_id=account_id,
            actor=actor,
            action="variable.created",
            target_type="variable",
            target_id=variable.id,
            after=_audit_view(variable),
        )
        await session.commit()
    except IntegrityError as error:  # a concurrent create of the same key won
        await session.rollback()
        raise exists from error
    return _read(variable, keyring)


async def update_variable(
    session: AsyncSession,
    keyring: KeyRing | None,
    account_id: int,
    variable_id: int,
    data: VariableUpdate,
    *,
    actor: str,
) -> tuple[VariableRead, list[str]]:
    """Re-seal a new value and/or change the description. Returns the variable and the ids of
    the functions that map it (to forget: they inject the old value until then)."""
    variable = await _variable(session, account_id, variable_id)
    if not isinstance(data.value, msgspec.UnsetType):
        require_ring(keyring)
    before = _audit_view(variable)
    value_changed = False
    if not isinstance(data.value, msgspec.UnsetType):
        variable.value_ciphertext = seal_variable(
            keyring, account_id, variable.environment_id, variable.key, data.value
        )
        value_changed = True
    if not isinstance(data.description, msgspec.UnsetType):
        variable.description = data.description
    mapped = await functions_mapping(session, variable)
    if value_changed or before != _audit_view(variable):
        record_event(
            session,
            account_id=account_id,
            actor=actor,
            action="variable.updated",
            target_type="variable",
            target_id=variable.id,
            before=before,
            after={**_audit_view(variable), "value_changed": value_changed},
        )
        await session.commit()
        await session.refresh(variable)
    return _read(variable, keyring), mapped


async def delete_variable(session: AsyncSession, account_id: int, variable_id: int, *, actor: str) -> list[str]:
    """Delete; the functions that mapped it turn unresolved. Returns their ids, to forget."""
    variable = await _variable(session, account_id, variable_id)
    mapped = await functions_mapping(session, variable)
    record_event(
        session,
        account_id=account_id,
        actor=actor,
        action="variable.deleted",
        target_type="variable",
        target_id=variable.id,
        before={**_audit_view(variable), "mapped_by": mapped},
    )
    await session.execute(delete(Variable).where(Variable.account_id == account_id, Variable.id == variable.id))
    await session.commit()
    return mapped


async def reveal_variable(
    session: AsyncSession, keyring: KeyRing | None, account_id: int, variable_id: int, *, actor: str
) -> VariableRevealed:
    """The value in clear, for owners and admins; the audit entry says who looked, not what they saw."""
    require_ring(keyring)
    variable = await _variable(session, account_id, variable_id)
    value = open_variable(keyring, variable)
    record_event(
        session,
        account_id=account_id,
        actor=actor,
        action="variable.revealed",
        target_type="variable",
        target_id=variable.id,
        after={"key": variable.key, "environment_id": variable.environment_id, "is_secret": variable.is_secret},
    )
    await session.commit()
    return VariableRevealed(id=variable.id, key=variable.key, value=value)
