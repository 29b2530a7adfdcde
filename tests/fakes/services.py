"""Where the test suite finds Postgres and Redis, and which backends it runs."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

POSTGRES_ADMIN_URL = os.environ.get("TOLLWAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def worker_redis_url(url: str, worker: str | None) -> str:
    """The Redis database of one pytest-xdist worker: the URL's database plus the worker's number
    (``gw0`` the URL's own, ``gw1`` the next), so parallel workers never share a database and a
    test that empties "its" database never empties another worker's. Without xdist, the URL as
    given. CI's ``redis://127.0.0.1:6379/0`` with ``-n 2`` uses databases 0 and 1."""
    if not worker or not worker.startswith("gw"):
        return url
    parts = urlsplit(url)
    database = parts.path.strip("/") or "0"
    if not database.isdigit():
        raise ValueError(f"TOLLWAY_TEST_REDIS_URL: no database number in {url}")
    return urlunsplit(parts._replace(path=f"/{int(database) + int(worker.removeprefix('gw'))}"))


REDIS_URL = worker_redis_url(
    os.environ.get("TOLLWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"), os.environ.get("PYTEST_XDIST_WORKER")
)
BACKENDS = [b for b in os.environ.get("TOLLWAY_TEST_BACKENDS", "sqlite,postgres").split(",") if b]
UNDER_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
