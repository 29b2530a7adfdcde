"""Sealing and opening the values management writes: variable values and function tokens.

One place that turns the key ring's exceptions into the management API's errors
(:mod:`functions.errors`), so a missing ring, a missing key and a tampered value answer the
same way wherever they are met, and no message ever carries the value itself.
"""

from __future__ import annotations

import hashlib
import secrets

from functions.crypto import KeyRing, MissingSecretKey, SecretKeyError, token_context, variable_context
from functions.errors import SecretKeyMissing, SecretsUnavailable, SecretUnreadable
from functions.models import Variable

__all__ = ["new_token", "open_variable", "require_ring", "seal_variable"]

TOKEN_BYTES = 32  # 64 hex characters, as envmanager's tokens


def require_ring(keyring: KeyRing | None) -> KeyRing:
    """The ring, or the 503 naming the setting to configure."""
    if keyring is None:
        raise SecretsUnavailable()
    return keyring


def seal_variable(keyring: KeyRing | None, account_id: int, environment_id: int, key: str, value: str) -> str:
    return require_ring(keyring).seal(value, context=variable_context(account_id, environment_id, key))


def open_variable(keyring: KeyRing | None, variable: Variable) -> str:
    ring = require_ring(keyring)
    try:
        return ring.open(
            variable.value_ciphertext,
            context=variable_context(variable.account_id, variable.environment_id, variable.key),
        )
    except MissingSecretKey as error:
        raise SecretKeyMissing(str(error)) from error
    except SecretKeyError as error:
        raise SecretUnreadable(f"variable {variable.id} does not open: {error}") from error


def new_token(keyring: KeyRing | None, account_id: int, function_id: str) -> tuple[str, str, str]:
    """A fresh function token: (plaintext, ciphertext, sha256 hex). The plaintext is for the
    caller to show once or drop; only the other two are stored."""
    ring = require_ring(keyring)
    token = secrets.token_hex(TOKEN_BYTES)
    sealed = ring.seal(token, context=token_context(account_id, function_id))
    return token, sealed, hashlib.sha256(token.encode("ascii")).hexdigest()
