"""Where the key ring comes from: the operator's configured keys, else a key file.

Configured keys (``function_secret_keys``, or ``TOLLWAY_FUNCTION_SECRET_KEYS`` as JSON) win. Without
them, a key file is used: ``function_secret_key_file`` if set, else one next to the SQLite
database of the embedded default. A missing key file is created (mode 0600) with one fresh key
and the caller is told, so it can say once that the file must be backed up with the database:
losing it loses every secret. A Postgres deployment with neither gets no key ring, and proxy
functions refuse to store secrets until the operator configures one.

File format: one ``<key id>=<base64 key>`` per line; ``#`` starts a comment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from functions.crypto import KeyRing, SecretKeyError, new_key_text

__all__ = ["KeyRingSource", "load_keyring", "read_key_file", "write_key_file"]


class KeyRingSource:
    """What :func:`load_keyring` found: the ring (or None) and whether it made a new key file."""

    def __init__(self, ring: KeyRing | None, created_file: Path | None = None, path: Path | None = None) -> None:
        self.ring = ring
        self.created_file = created_file
        self.path = path


def read_key_file(path: Path) -> dict[str, str]:
    keys: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key_id, sep, value = text.partition("=")
        if not sep:
            raise SecretKeyError(f"{path}:{number}: expected <key id>=<base64 key>")
        keys[key_id.strip()] = value.strip()
    return keys


def write_key_file(path: Path, keys: Mapping[str, str]) -> None:
    """Write atomically with mode 0600 from the first byte (never world-readable, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write("# Tollway secret key ring: back this file up with the database; without it no secret opens.\n")
        for key_id, value in keys.items():
            handle.write(f"{key_id}={value}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def default_key_id(now: datetime | None = None) -> str:
    return "k" + (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")


def load_keyring(configured: Mapping[str, str], key_file: str, sqlite_file: Path | None) -> KeyRingSource:
    if configured:
        return KeyRingSource(KeyRing.from_texts(configured))
    path = Path(key_file) if key_file else (sqlite_file.with_name(sqlite_file.name + ".keys") if sqlite_file else None)
    if path is None:
        return KeyRingSource(None)
    if path.exists():
        return KeyRingSource(KeyRing.from_texts(read_key_file(path)), path=path)
    write_key_file(path, {default_key_id(): new_key_text()})
    return KeyRingSource(KeyRing.from_texts(read_key_file(path)), created_file=path, path=path)
