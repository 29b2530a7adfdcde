"""One test file at a time across pytest-xdist workers, for the stress tests that start several
``tollway serve`` processes and fire hundreds of concurrent calls at them
(tests/integration/test_two_processes.py, test_redis_cluster.py). Run side by side on two
workers, four gateways, three Redis nodes and 300 concurrent calls share two cores, and calls
wait past their 30 s client timeout: not a fault of the code under test, so the files take
turns. Without xdist the lock is free.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def alone_among_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    # Every worker's basetemp (…/popen-gwN) lives in the run's common directory.
    path = tmp_path_factory.getbasetemp().parent / "stress-tests.lock"
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
