"""What the runtime needs of one proxy function, resolved once and cached in the process.

:class:`ResolvedFunction` is built from the database row by :mod:`functions.directory` with its
secrets already opened and their templates applied, so a request does no database read and no
decryption. It is the contract between the directory (which builds it), the runtime (which
serves ``/fn/{id}`` from it) and the code generators (which turn it into a platform file).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import msgspec

from functions.models import HttpMethod, InjectAs

__all__ = ["Injection", "ResolvedFunction", "SecretMapping", "apply_template"]

VALUE_PLACEHOLDER = "${value}"


class SecretMapping(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One stored mapping: which variable goes where (the JSON items of ``secret_mappings``)."""

    variable_id: int
    inject_as: InjectAs
    key: str
    template: str = ""


def apply_template(template: str, value: str) -> str:
    """The first ``${value}`` replaced (envmanager's rule); an empty template means the raw value."""
    return template.replace(VALUE_PLACEHOLDER, value, 1) if template else value


class Injection(msgspec.Struct, frozen=True):
    """One secret ready to inject: its final text (template applied) under ``key``.

    ``variable_key`` is the variable's name (``STRIPE_SECRET_KEY``): the code generators read
    the secret from an environment variable of that name instead of embedding ``value``.
    """

    inject_as: InjectAs
    key: str
    value: str
    variable_key: str
    template: str = ""


class ResolvedFunction(msgspec.Struct, frozen=True):
    id: str
    account_id: int
    project_id: int
    environment_id: int
    name: str
    slug: str
    enabled: bool
    target_url: str
    method: HttpMethod
    headers: dict[str, str]
    injections: tuple[Injection, ...]
    allowed_origins: tuple[str, ...]
    pass_through_body: bool
    body_template: Any | None
    rate_limit_per_minute: int | None
    forward_path: bool
    forward_query: bool
    timeout_s: float
    token_sha256: bytes
    # A mapping whose variable is gone or cannot be opened: the runtime answers 500
    # "Failed to resolve proxy configuration" (envmanager §4 step 13) instead of calling
    # the target without its secret.
    unresolved: bool = False

    def token_matches(self, presented: str) -> bool:
        """Constant-time: compare digests, so the stored token's length leaks nothing either."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(digest, self.token_sha256)
