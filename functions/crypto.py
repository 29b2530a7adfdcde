"""Secrets at rest: AES-256-GCM under an operator key ring.

A ciphertext is ``v1:<key id>:<base64url(nonce ‖ ciphertext+tag)>``: it names the key that
sealed it, so keys can rotate (``tollway secrets rotate`` re-seals everything under the newest)
while old ciphertexts stay readable as long as their key is in the ring. The associated data
binds a ciphertext to its account and purpose, so a value copied into another tenant's row (or
from a variable into a token column) fails to open instead of decrypting.

A ciphertext whose key is missing raises :class:`MissingSecretKey` naming the key id: a secret
must never silently become empty.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "KEY_BYTES",
    "KeyRing",
    "MissingSecretKey",
    "SecretKeyError",
    "UnreadableSecret",
    "new_key_text",
    "token_context",
    "variable_context",
]

KEY_BYTES = 32
_NONCE_BYTES = 12
_VERSION = "v1"
KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


class SecretKeyError(Exception):
    """The key ring cannot be used (a malformed key or key id); the message says which."""


class MissingSecretKey(SecretKeyError):
    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"a stored secret is sealed with key id {key_id!r}, which is not in the key ring "
            "(function_secret_keys / TOLLWAY_FUNCTION_SECRET_KEYS or the key file): restore that key"
        )
        self.key_id = key_id


class UnreadableSecret(SecretKeyError):
    """The ciphertext is malformed or was tampered with (or moved to another row)."""


def new_key_text() -> str:
    """A fresh 256-bit key, base64url, as the key file and the config hold it."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def _decode_key(key_id: str, text: str) -> bytes:
    if not KEY_ID.match(key_id):
        raise SecretKeyError(f"key id {key_id!r}: use 1-32 letters, digits, '_', '-' or '.'")
    try:
        raw = base64.urlsafe_b64decode(text.strip().encode("ascii") + b"=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError, UnicodeEncodeError) as error:
        raise SecretKeyError(f"key {key_id!r} is not base64") from error
    if len(raw) != KEY_BYTES:
        raise SecretKeyError(f"key {key_id!r} must be {KEY_BYTES} bytes (base64 of 32 random bytes)")
    return raw


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The operator's keys by id; ``current`` seals, every key in the ring opens."""

    keys: Mapping[str, AESGCM]
    current: str

    @classmethod
    def from_texts(cls, texts: Mapping[str, str], current: str = "") -> KeyRing:
        """``texts`` = key id → base64 key; ``current`` defaults to the greatest id (sorted), so
        adding ``k2`` beside ``k1`` makes it the sealing key without another setting."""
        if not texts:
            raise SecretKeyError("the key ring is empty")
        keys = {key_id: AESGCM(_decode_key(key_id, text)) for key_id, text in texts.items()}
        chosen = current or max(keys)
        if chosen not in keys:
            raise SecretKeyError(f"the current key id {chosen!r} is not in the key ring")
        return cls(keys=keys, current=chosen)

    def seal(self, plaintext: str, *, context: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self.keys[self.current].encrypt(nonce, plaintext.encode("utf-8"), context.encode("utf-8"))
        return f"{_VERSION}:{self.current}:{base64.urlsafe_b64encode(nonce + sealed).decode('ascii')}"

    def key_id_of(self, ciphertext: str) -> str:
        parts = ciphertext.split(":", 2)
        if len(parts) != 3 or parts[0] != _VERSION:
            raise UnreadableSecret("not a Tollway secret ciphertext")
        return parts[1]

    def open(self, ciphertext: str, *, context: str) -> str:
        key_id = self.key_id_of(ciphertext)
        key = self.keys.get(key_id)
        if key is None:
            raise MissingSecretKey(key_id)
        try:
            blob = base64.urlsafe_b64decode(ciphertext.split(":", 2)[2].encode("ascii"))
            plain = key.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], context.encode("utf-8"))
        except (binascii.Error, ValueError, InvalidTag) as error:
            raise UnreadableSecret(f"a secret sealed with key {key_id!r} does not open (tampered or moved)") from error
        return plain.decode("utf-8")

    def needs_reseal(self, ciphertext: str) -> bool:
        return self.key_id_of(ciphertext) != self.current


def variable_context(account_id: int, environment_id: int, key: str) -> str:
    return f"variable:{account_id}:{environment_id}:{key}"


def token_context(account_id: int, function_id: str) -> str:
    return f"function-token:{account_id}:{function_id}"
