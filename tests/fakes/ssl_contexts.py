"""One verifying SSL context for every httpx client the tests make, instead of one per client.

``httpx.get``/``post`` build a client per call, and every client without its own transport
builds ``ssl.create_default_context(cafile=certifi.where())``: parsing the CA bundle costs
~35 ms of CPU, more than the loopback request itself. The suite makes thousands of them (every
module-level httpx call, every ``openai`` SDK client, every gateway lifespan's webhook client),
all talking plain http to 127.0.0.1. Sharing one context is what a long-lived client does
anyway: the context is the same (certifi's CAs, hostname checks, CERT_REQUIRED), only built once.
A client given its own ``verify=`` context, a path, ``False`` or a ``cert`` gets what it asked
for; the shared contexts are kept per ``trust_env`` and ``SSL_CERT_FILE``/``SSL_CERT_DIR``, so a
test that changes those gets the context they name.
"""

from __future__ import annotations

import functools
import os
import ssl
from typing import Any

import httpx._transports.default as _transports
from httpx._config import create_ssl_context as _create_ssl_context


@functools.cache
def _verifying_context(trust_env: bool, cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    return _create_ssl_context(trust_env=trust_env)  # reads the two variables the key holds


def _shared_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> ssl.SSLContext:
    if verify is True and cert is None:
        return _verifying_context(trust_env, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    return _create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)


_NAME = "create_ssl_context"  # the name httpx's transports call (imported, not re-exported)


def share_verifying_ssl_context() -> None:
    """Install the shared context for httpx's transports (idempotent)."""
    installed = getattr(_transports, _NAME)
    if installed is _shared_ssl_context:
        return
    # An httpx that no longer builds its context here would make this a silent no-op: say so.
    assert installed is _create_ssl_context, "httpx no longer builds its SSL context in _transports.default"
    setattr(_transports, _NAME, _shared_ssl_context)
