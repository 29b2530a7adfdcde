"""Managing proxy functions: create (blank or from a template), read, list, change, delete.

Every query filters on the caller's ``account_id``: another account's function, environment or
variable is "not found", never "forbidden". Each change commits with its audit event in one
transaction; the event holds header *names*, mappings without templates and whether a body
template is set, never a header value, a secret or a token (values may hold credentials).

The token is ``secrets.token_hex(32)``, stored sealed under the key ring (for Copy Token and the
code generators) and as its SHA-256 (what the runtime compares). It leaves this module only in
the answer to a create, a regeneration or :func:`copy_token`. After a change the caller (the
HTTP controller) calls ``FunctionDirectory.forget(id)`` so its own process sees it at once;
other processes see it within ``function_cache_ttl_s``.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from functions.crypto import KeyRing, SecretKeyError
from functions.directory import canonical_function_id, token_of
from functions.errors import EnvironmentNotFound, FunctionExists, FunctionNotFound, InvalidFunction, SecretsUnavailable
from functions.function_views import audit_view, utc
from functions.models import Environment, HttpMethod, InjectAs, ProxyFunction, Variable
from functions.sealing import new_token
from functions.templates import FunctionTemplate, get_template
from functions.validation import (
    FunctionCreate,
    FunctionRules,
    FunctionUpdate,
    MappingIn,
    check_body_mappings,
    check_body_template,
    check_headers,
    check_mappings_shape,
    check_name,
    check_origins,
    check_target_url,
    check_timeout,
)
from keys.audit import record_event

__all__ = [
    "DEFAULT_ORIGINS",
    "FunctionPage",
    "copy_token",
    "create_function",
    "delete_function",
    "get_environment",
    "get_function",
    "list_functions",
    "regenerate_token",
    "set_enabled",
    "update_function",
]

# envmanager's form and templates start every function open to any origin; the docs then advise
# listing the real ones for production. ``[]`` (sent explicitly) refuses every caller.
DEFAULT_ORIGINS = ("*",)
DUPLICATE_NAME = "A proxy function with this name already exists"
NO_KEY_RING = (
    "proxy functions need a secret key ring to seal their tokens: set function_secret_keys "
    "(TOLLWAY_FUNCTION_SECRET_KEYS) or function_secret_key_file"
)
_Mapping = tuple[int, InjectAs, str, str]  # variable_id, inject_as, key, template


# -- lookups -----------------------------------------------------------------------------------


async def get_environment(session: AsyncSession, account_id: int, environment_id: int) -> Environment:
    environment = await session.scalar(
        select(Environment).where(Environment.id == environment_id, Environment.account_id == account_id)
    )
    if environment is None:
        raise EnvironmentNotFound(f"no environment with id {environment_id}")
    return environment


async def get_function(session: AsyncSession, account_id: int, function_id: str) -> ProxyFunction:
    """A function of this account; a malformed id or another account's function is not found."""
    canonical = canonical_function_id(function_id)
    row = None
    if canonical is not None:
        row = await session.scalar(
            select(ProxyFunction).where(ProxyFunction.id == canonical, ProxyFunction.account_id == account_id)
        )
    if row is None:
        raise FunctionNotFound(
            f"no proxy function with id {canonical}" if canonical else "no proxy function with this id"
        )
    return row


async def _check_slug_free(session: AsyncSession, environment_id: int, slug: str, function_id: str) -> None:
    clash = await session.scalar(
        select(ProxyFunction.id).where(
            ProxyFunction.environment_id == environment_id,
            ProxyFunction.slug == slug,
            ProxyFunction.id != function_id,
        )
    )
    if clash is not None:
        raise FunctionExists(DUPLICATE_NAME, param="name")


async def _check_variables(session: AsyncSession, row: ProxyFunction, mappings: list[_Mapping]) -> None:
    """Each mapped variable must be of the function's own account and environment; one that is
    not (absent, another environment's, another tenant's) gets the same answer."""
    wanted = {variable_id for variable_id, _kind, _key, _template in mappings}
    if not wanted:
        return
    found = set(
        await session.scalars(
            select(Variable.id).where(
                Variable.id.in_(wanted),
                Variable.account_id == row.account_id,
                Variable.environment_id == row.environment_id,
            )
        )
    )
    for index, (variable_id, _kind, _key, _template) in enumerate(mappings):
        if variable_id not in found:
            raise InvalidFunction(
                f"secret_mappings[{index}].variable_id: no variable {variable_id} in this function's environment",
                param="secret_mappings",
            )


# -- building the fields -----------------------------------------------------------------------


def _mappings_from(items: list[MappingIn], template: FunctionTemplate | None) -> list[_Mapping]:
    """Mapping rows as sent; from a template, the hint at the same position fills what is left out."""
    hints = template.secret_hints if template is not None else ()
    mappings: list[_Mapping] = []
    for index, item in enumerate(items):
        hint = hints[index] if index < len(hints) else None
        where = f"secret_mappings[{index}]"
        if item.variable_id is None:
            suggests = hint.variable_name_hint if hint else ""
            suggestion = f" (the template suggests {suggests})" if suggests else ""
            raise InvalidFunction(f"{where}.variable_id: pick a variable{suggestion}", param="secret_mappings")
        inject_as = item.inject_as if item.inject_as is not msgspec.UNSET else (hint.inject_as if hint else None)
        if inject_as is None:
            raise InvalidFunction(f"{where}.inject_as is required: header, body or query", param="secret_mappings")
        key = item.key if item.key is not msgspec.UNSET else (hint.key if hint else "")
        text = item.template if item.template is not msgspec.UNSET else (hint.template if hint else "")
        mappings.append((item.variable_id, InjectAs(inject_as), key, text))
    return mappings


def _stored(mappings: list[_Mapping]) -> list[dict[str, Any]]:
    return [
        {"variable_id": variable_id, "inject_as": kind.value, "key": key, "template": text}
        for variable_id, kind, key, text in mappings
    ]


def _hint_list(template: FunctionTemplate) -> str:
    return ", ".join(hint.variable_name_hint or hint.key for hint in template.secret_hints)


def _create_fields(data: FunctionCreate, rules: FunctionRules) -> tuple[dict[str, Any], list[_Mapping]]:
    """Every column of a new function: what was sent, else the template's, else the default."""
    template: FunctionTemplate | None = None
    if data.template is not msgspec.UNSET:
        template = get_template(data.template)
        if template is None:
            raise InvalidFunction(f"template: no template {data.template[:64]!r}", param="template")

    def pick(name: str, from_template: Any, default: Any) -> Any:
        value = getattr(data, name)
        if value is not msgspec.UNSET:
            return value
        return from_template if template is not None else default

    t = template
    name = pick("name", t.name if t else None, None)
    if name is None:
        raise InvalidFunction("name: is required (or create from a template)", param="name")
    target_url = pick("target_url", t.target_url if t else None, None)
    if target_url is None:
        raise InvalidFunction("target_url: is required (or create from a template)", param="target_url")
    if data.secret_mappings is not msgspec.UNSET:
        mappings = _mappings_from(data.secret_mappings, template)
    elif template is not None and template.secret_hints:
        raise InvalidFunction(
            f"secret_mappings: the template {template.slug!r} needs a variable for each secret hint "
            f'({_hint_list(template)}): send secret_mappings [{{"variable_id": …}}] in that order, '
            "or [] to add them later",
            param="secret_mappings",
        )
    else:
        mappings = []
    fields = {
        "name": name,
        "description": pick("description", t.description if t else "", ""),
        "enabled": pick("enabled", True, True),
        "target_url": target_url,
        "method": HttpMethod(pick("method", t.method if t else HttpMethod.POST, HttpMethod.POST)),
        "headers": pick("headers", dict(t.headers) if t else {}, {}),
        "allowed_origins": pick("allowed_origins", list(DEFAULT_ORIGINS), list(DEFAULT_ORIGINS)),
        "pass_through_body": pick("pass_through_body", t.pass_through_body if t else True, True),
        "body_template": pick("body_template", t.body_template if t else None, None),
        "rate_limit_per_minute": pick("rate_limit_per_minute", None, None),
        "forward_path": pick("forward_path", False, False),
        "forward_query": pick("forward_query", False, False),
        "timeout_ms": pick("timeout_ms", rules.max_timeout_ms, rules.max_timeout_ms),
        "template_id": template.slug if template is not None else "",
    }
    return fields, mappings


def _validated(fields: dict[str, Any], rules: FunctionRules) -> dict[str, Any]:
    """The rules of :mod:`functions.validation` on the columns being written (any subset)."""
    checked = dict(fields)
    if "name" in fields:
        checked["slug"] = check_name(fields["name"])
    if "target_url" in fields:
        check_target_url(fields["target_url"], rules.allowed_hosts)
    if "headers" in fields:
        checked["headers"] = check_headers(fields["headers"])
    if "allowed_origins" in fields:
        checked["allowed_origins"] = check_origins(fields["allowed_origins"])
    if "body_template" in fields:
        checked["body_template"] = check_body_template(fields["body_template"])
    if "timeout_ms" in fields:
        check_timeout(fields["timeout_ms"], rules)
    if "method" in fields:
        checked["method"] = HttpMethod(fields["method"]).value
    return checked


def _new_token(keyring: KeyRing | None, account_id: int, function_id: str) -> tuple[str, str, str]:
    """(token, sealed, sha256 hex), minted by :func:`functions.sealing.new_token` (as clones are);
    without a ring the 503 says it is the function's token that cannot be sealed."""
    if keyring is None:
        raise SecretsUnavailable(NO_KEY_RING)
    return new_token(keyring, account_id, function_id)


async def _commit_unique(session: AsyncSession) -> None:
    """Commit; a slug taken by a concurrent writer between the check and here is the same 409."""
    try:
        await session.commit()
    except IntegrityError as error:
        await session.rollback()
        raise FunctionExists(DUPLICATE_NAME, param="name") from error


# -- changes -----------------------------------------------------------------------------------


async def create_function(
    session: AsyncSession,
    account_id: int,
    environment_id: int,
    data: FunctionCreate,
    rules: FunctionRules,
    keyring: KeyRing | None,
    now: datetime,
    *,
    actor: str,
) -> tuple[ProxyFunction, str]:
    """Create a function; returns the row and its token (shown in this answer). Commits."""
    environment = await get_environment(session, account_id, environment_id)
    fields, mappings = _create_fields(data, rules)
    columns = _validated(fields, rules)
    check_mappings_shape(mappings)
    check_body_mappings(mappings, HttpMethod(columns["method"]), columns["body_template"])
    function_id = str(uuid.uuid4())
    token, sealed, digest = _new_token(keyring, account_id, function_id)
    row = ProxyFunction(
        id=function_id,
        account_id=account_id,
        project_id=environment.project_id,
        environment_id=environment.id,
        secret_mappings=_stored(mappings),
        token_ciphertext=sealed,
        token_sha256=digest,
        created_by=actor,
        created_at=now,
        updated_at=now,
        **columns,
    )
    await _check_slug_free(session, environment.id, row.slug, function_id)
    await _check_variables(session, row, mappings)
    session.add(row)
    record_event(
        session,
        account_id=account_id,
        actor=actor,
        action="function.created",
        target_type="function",
        target_id=function_id,
        after=audit_view(row),
    )
    await _commit_unique(session)
    await session.refresh(row)
    return row, token


def _update_fields(data: FunctionUpdate) -> tuple[dict[str, Any], list[_Mapping] | None]:
    fields: dict[str, Any] = {}
    for name in data.__struct_fields__:
        value = getattr(data, name)
        if value is msgspec.UNSET or name == "secret_mappings":
            continue
        if value is None and name == "description":
            value = ""
        fields[name] = value
    mappings = None if data.secret_mappings is msgspec.UNSET else _mappings_from(data.secret_mappings, None)
    return fields, mappings


async def update_function(
    session: AsyncSession,
    account_id: int,
    function_id: str,
    data: FunctionUpdate,
    rules: FunctionRules,
    now: datetime,
    *,
    actor: str,
) -> ProxyFunction:
    """Apply a partial update (only the fields sent); audited when anything changed. Commits."""
    row = await get_function(session, account_id, function_id)
    fields, mappings = _update_fields(data)
    columns = _validated(fields, rules)
    if mappings is not None:
        check_mappings_shape(mappings)
        columns["secret_mappings"] = _stored(mappings)
    final_mappings = mappings if mappings is not None else _loaded_mappings(row)
    check_body_mappings(
        final_mappings,
        HttpMethod(columns.get("method", row.method)),
        columns.get("body_template", row.body_template),
    )
    if "slug" in columns:
        await _check_slug_free(session, row.environment_id, columns["slug"], row.id)
    if mappings is not None:
        await _check_variables(session, row, mappings)
    changed = {column: value for column, value in columns.items() if getattr(row, column) != value}
    if not changed:
        return row
    before = audit_view(row)
    for column, value in changed.items():
        setattr(row, column, value)
    row.updated_at = now
    after = audit_view(row)
    if set(changed) - {"enabled"}:
        record_event(
            session,
            account_id=account_id,
            actor=actor,
            action="function.updated",
            target_type="function",
            target_id=row.id,
            before=before,
            after={**after, "changed": sorted(set(changed) - {"slug"})},
        )
    if "enabled" in changed:
        _record_toggle(session, row, actor, previous=before["enabled"])
    await _commit_unique(session)
    await session.refresh(row)
    return row


def _loaded_mappings(row: ProxyFunction) -> list[_Mapping]:
    return [
        (int(m["variable_id"]), InjectAs(m["inject_as"]), str(m["key"]), str(m.get("template") or ""))
        for m in row.secret_mappings
    ]


def _record_toggle(session: AsyncSession, row: ProxyFunction, actor: str, *, previous: bool) -> None:
    record_event(
        session,
        account_id=row.account_id,
        actor=actor,
        action="function.enabled" if row.enabled else "function.disabled",
        target_type="function",
        target_id=row.id,
        before={"name": row.name, "slug": row.slug, "enabled": previous},
        after={"name": row.name, "slug": row.slug, "enabled": row.enabled},
    )


async def set_enabled(
    session: AsyncSession, account_id: int, function_id: str, enabled: bool, now: datetime, *, actor: str
) -> ProxyFunction:
    """Enable or disable at once; audited only when it changes. Commits."""
    row = await get_function(session, account_id, function_id)
    if row.enabled == enabled:
        return row
    row.enabled = enabled
    row.updated_at = now
    _record_toggle(session, row, actor, previous=not enabled)
    await session.commit()
    await session.refresh(row)
    return row


async def regenerate_token(
    session: AsyncSession,
    account_id: int,
    function_id: str,
    keyring: KeyRing | None,
    now: datetime,
    *,
    actor: str,
) -> tuple[ProxyFunction, str]:
    """A new token; the old one stops matching as soon as this commits. Commits."""
    row = await get_function(session, account_id, function_id)
    token, sealed, digest = _new_token(keyring, account_id, row.id)
    row.token_ciphertext, row.token_sha256 = sealed, digest
    row.updated_at = now
    record_event(
        session,
        account_id=account_id,
        actor=actor,
        action="function.token_regenerated",
        target_type="function",
        target_id=row.id,
        after={"name": row.name, "slug": row.slug},
    )
    await session.commit()
    await session.refresh(row)
    return row, token


async def delete_function(session: AsyncSession, account_id: int, function_id: str, *, actor: str) -> str:
    """Delete; returns the canonical id (for the directory to forget). Commits."""
    row = await get_function(session, account_id, function_id)
    record_event(
        session,
        account_id=account_id,
        actor=actor,
        action="function.deleted",
        target_type="function",
        target_id=row.id,
        before=audit_view(row),
    )
    await session.delete(row)
    await session.commit()
    return row.id


def copy_token(row: ProxyFunction, keyring: KeyRing | None) -> str:
    """The token in clear (Copy Token: every role of the account may); ``row`` from :func:`get_function`."""
    if keyring is None:
        raise SecretsUnavailable(NO_KEY_RING)
    try:
        return token_of(row, keyring)
    except SecretKeyError as error:
        # Names a missing key id at most; never the ciphertext or anything it opens to.
        raise SecretsUnavailable(f"the function's token cannot be opened: {error}") from error


# -- listing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionPage:
    functions: list[ProxyFunction]
    next_cursor: str | None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BAD_CURSOR = "cursor: not a cursor this list gave (use next_cursor as it is)"
_MICROSECOND = timedelta(microseconds=1)


def _cursor_of(row: ProxyFunction) -> str:
    micros = (utc(row.created_at) - _EPOCH) // _MICROSECOND  # exact: no float on the way
    return base64.urlsafe_b64encode(f"{micros}:{row.id}".encode()).decode("ascii").rstrip("=")


def _parse_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        micros_text, function_id = text.split(":", 1)
        micros = int(micros_text)
        moment = _EPOCH + micros * _MICROSECOND
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError, OSError):
        raise InvalidFunction(_BAD_CURSOR, param="cursor") from None
    if canonical_function_id(function_id) != function_id:
        raise InvalidFunction(_BAD_CURSOR, param="cursor")
    return moment, function_id


async def list_functions(
    session: AsyncSession,
    account_id: int,
    environment_id: int,
    *,
    q: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> FunctionPage:
    """One environment's functions, newest first, ``limit`` at a time; ``q`` matches the name or
    the target URL, ignoring case. ``next_cursor`` continues the list (None at its end)."""
    await get_environment(session, account_id, environment_id)
    query = select(ProxyFunction).where(
        ProxyFunction.account_id == account_id, ProxyFunction.environment_id == environment_id
    )
    if q:
        needle = q.lower()
        query = query.where(
            or_(
                func.lower(ProxyFunction.name).contains(needle, autoescape=True),
                func.lower(ProxyFunction.target_url).contains(needle, autoescape=True),
            )
        )
    if cursor:
        moment, last_id = _parse_cursor(cursor)
        query = query.where(
            or_(
                ProxyFunction.created_at < moment,
                and_(ProxyFunction.created_at == moment, ProxyFunction.id < last_id),
            )
        )
    rows = list(
        await session.scalars(query.order_by(ProxyFunction.created_at.desc(), ProxyFunction.id.desc()).limit(limit + 1))
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return FunctionPage(rows, _cursor_of(rows[-1]) if more and rows else None)
