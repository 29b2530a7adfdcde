"""The test suite's own machinery: isolation under pytest-xdist (``scripts/test`` runs ``-n 2``),
each worker its own Redis database, so no worker empties or scans another's keys; and the one
verifying SSL context httpx clients share (``tests/fakes/ssl_contexts.py``)."""

from __future__ import annotations

import os
import ssl

import httpx
import pytest

from tests.fakes import services


@pytest.mark.parametrize(
    ("url", "worker", "expected"),
    [
        ("redis://127.0.0.1:6379/0", None, "redis://127.0.0.1:6379/0"),
        ("redis://127.0.0.1:6379/0", "gw0", "redis://127.0.0.1:6379/0"),
        ("redis://127.0.0.1:6379/0", "gw1", "redis://127.0.0.1:6379/1"),
        ("redis://127.0.0.1:6379/12", "gw1", "redis://127.0.0.1:6379/13"),
        ("redis://127.0.0.1:6379", "gw1", "redis://127.0.0.1:6379/1"),
        ("redis://:pw@cache:6380/3?protocol=3", "gw2", "redis://:pw@cache:6380/5?protocol=3"),
    ],
)
def test_each_worker_gets_its_own_redis_database(url: str, worker: str | None, expected: str) -> None:
    assert services.worker_redis_url(url, worker) == expected


def test_a_redis_url_without_a_database_number_is_refused_under_xdist() -> None:
    with pytest.raises(ValueError, match="database number"):
        services.worker_redis_url("redis://127.0.0.1:6379/zero", "gw1")


def test_this_worker_uses_its_own_redis_database() -> None:
    given = os.environ.get("TOLLWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    assert services.worker_redis_url(given, os.environ.get("PYTEST_XDIST_WORKER")) == services.REDIS_URL


def _context(client: httpx.Client) -> ssl.SSLContext:
    context = client._transport._pool._ssl_context  # type: ignore[attr-defined]
    assert isinstance(context, ssl.SSLContext)
    return context


def test_httpx_clients_share_one_context_that_still_verifies() -> None:
    with httpx.Client() as first, httpx.Client() as second, httpx.Client(verify=False) as lax:
        assert _context(first) is _context(second)
        assert _context(first).verify_mode == ssl.CERT_REQUIRED and _context(first).check_hostname
        assert _context(lax) is not _context(first) and _context(lax).verify_mode == ssl.CERT_NONE
