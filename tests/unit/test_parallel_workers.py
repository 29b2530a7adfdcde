"""The test suite's own isolation under pytest-xdist (``scripts/test`` runs ``-n 2``): each worker
its own Redis database, so no worker empties or scans another's keys."""

from __future__ import annotations

import os

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
