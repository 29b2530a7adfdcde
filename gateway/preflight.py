"""What ``tollway serve`` checks before it migrates, bootstraps or starts a worker.

Each failure here is one line an operator can act on (the CLI prints it without a traceback and
exits with :data:`STARTUP_FAILURE`), and each comes *before* anything irreversible: the port is
bound before the first run creates a key that is shown only once, so a port in use never eats
the key; the database and Redis are reached before migrations or the lifespan would fail deep
inside a driver with a traceback.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from gateway.settings import Settings, redacted, sqlite_path

__all__ = [
    "STARTUP_FAILURE",
    "StartupError",
    "bind_socket",
    "bind_sockets",
    "check_database",
    "check_redis",
    "database_location",
]

STARTUP_FAILURE = 3  # uvicorn's own exit code when a server cannot start
REACH_TIMEOUT_S = 10.0  # an address that drops packets must not hang the start for ever


class StartupError(Exception):
    """The server cannot start; the message says why in one line (no secret in it)."""


#: Linux spreads new connections over the listening sockets of a SO_REUSEPORT group; the BSDs
#: and macOS accept the option but give every connection to one socket, which would idle the
#: other workers, so they keep one socket shared by all.
SPREADS_CONNECTIONS = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind_sockets(settings: Settings) -> list[socket.socket]:
    """The server's listening sockets, bound now so a port in use is the first thing said: one,
    or with several workers on Linux one per worker (SO_REUSEPORT), so that the kernel spreads
    new connections over the workers instead of the first to wake taking them all.

    The port is first bound without SO_REUSEPORT: that fails if anything listens on it, another
    tollway's group of workers included (a group only admits sockets that ask to join it), so a
    second server never shares the port by accident.
    """
    sock = bind_socket(settings)
    if settings.workers == 1 or not SPREADS_CONNECTIONS:
        return [sock]
    sock.close()
    group: list[socket.socket] = []
    try:
        for _ in range(settings.workers):
            group.append(bind_socket(settings, reuse_port=True))
    except BaseException:
        for member in group:
            member.close()
        raise
    return group


def bind_socket(settings: Settings, *, reuse_port: bool = False) -> socket.socket:
    """A listening socket, bound now so a port in use is the first thing said.

    SO_REUSEADDR as uvicorn sets it (a restart need not wait for TIME_WAIT); on Linux it still
    refuses a port another process listens on. ``reuse_port``: one of a group of sockets on
    the port (:func:`bind_sockets`).
    """
    host, port = settings.host, settings.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except socket.gaierror as error:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: the host does not resolve ({error.strerror})") from None
    except OSError as error:
        sock.close()
        raise StartupError(_bind_failure(host, port, error)) from None
    # Listening at once holds the port: on Linux two sockets with SO_REUSEADDR may both bind one
    # port while neither listens, so a second `tollway serve` would get past this point.
    # Connections that arrive before the server starts wait in the backlog.
    sock.listen(2048)  # uvicorn's default backlog
    sock.set_inheritable(True)  # workers are spawned with it
    return sock


def _bind_failure(host: str, port: int, error: OSError) -> str:
    where = f"{host}:{port}"
    if error.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: the port is already in use (another tollway or server?); "
            "choose another with --port or TOLLWAY_PORT"
        )
    if error.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied (ports below 1024 need privileges)"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: {host} is not an address of this machine"
    return f"cannot listen on {where}: {error.strerror or error}"


def database_location(settings: Settings) -> str:
    """Where the data lives, safe to print: the SQLite file's absolute path, else the URL without
    its password."""
    path = sqlite_path(settings.database_url)
    if path is not None:
        return str(path.resolve())
    return str(redacted(settings)["database_url"])


def _reason(error: BaseException) -> str:
    """The driver's own first line, without SQLAlchemy's wrapping and its links."""
    if isinstance(error, TimeoutError):
        return f"no answer within {REACH_TIMEOUT_S:g} s"
    cause = getattr(error, "orig", None) or error.__cause__ or error
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0]


async def check_database(settings: Settings) -> None:
    """One round trip to the database (SQLite creates its file: only serve and migrate come here)."""
    from gateway.db import create_engine

    engine = create_engine(settings.database_url)
    try:
        async with asyncio.timeout(REACH_TIMEOUT_S), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (OSError, TimeoutError, SQLAlchemyError) as error:
        raise StartupError(f"cannot reach the database at {database_location(settings)}: {_reason(error)}") from None
    finally:
        await engine.dispose()


async def check_redis(settings: Settings) -> None:
    """One PING through the same store the gateway builds (so a cluster URL is checked as one)."""
    if not settings.uses_redis:
        return
    from redis.exceptions import RedisError

    from billing.counters import CounterStoreUnavailable, build_counter_store

    store = build_counter_store(settings.redis_url, settings.redis_prefix)
    try:
        async with asyncio.timeout(REACH_TIMEOUT_S):
            await store.ping()
    except (CounterStoreUnavailable, RedisError, OSError, TimeoutError) as error:
        where = redacted(settings)["redis_url"]
        raise StartupError(f"cannot reach Redis at {where}: {_reason(error)}") from None
    finally:
        await store.close()
