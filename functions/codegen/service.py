"""Download Code for one function of the caller's account: load it, check it, generate the file."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from functions.codegen.errors import FunctionNotFound, SecretsUnavailable
from functions.codegen.render import DEFAULT_MAX_BODY_BYTES, GeneratedCode, generate, platform_of
from functions.crypto import KeyRing
from functions.directory import canonical_function_id, load_function

__all__ = ["function_code"]


async def function_code(
    session: AsyncSession,
    account_id: int,
    function_id: str,
    platform_name: str,
    keyring: KeyRing | None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> GeneratedCode:
    """The file for ``platform_name``; another account's function is a 404 like a missing one.

    The function is resolved as the runtime resolves it (:func:`load_function`), so the code
    maps exactly the variables the hosted function injects; their values are opened on the way
    but only their keys reach the file."""
    platform = platform_of(platform_name)
    canonical = canonical_function_id(function_id)
    function = await load_function(session, canonical, keyring) if canonical is not None else None
    if function is None or function.account_id != account_id:
        raise FunctionNotFound(f"no proxy function {function_id[:64]!r} in this account")
    if function.unresolved and keyring is None:
        raise SecretsUnavailable("no secret keys are configured (function_secret_keys), so its secrets cannot be read")
    return generate(function, platform, max_body_bytes=max_body_bytes)
