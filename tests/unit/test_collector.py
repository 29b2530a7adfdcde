"""The collector's tuning (gateway/collector.py): only a serving process's app applies it, once
it started; a test's app (create_app) leaves the process's collector alone."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from gateway.app import create_app, serving_app
from gateway.collector import (
    FULL_COLLECTION_EVERY,
    MIDDLE_COLLECTION_EVERY,
    YOUNG_COLLECTION_EVERY,
    settle_heap,
)
from gateway.settings import Settings


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_settle_heap_freezes_what_startup_built_and_spaces_collections(restored_collector: None) -> None:
    settle_heap()
    assert gc.get_freeze_count() > 10_000  # the imports' functions, classes and dicts at least
    assert gc.get_threshold() == (YOUNG_COLLECTION_EVERY, MIDDLE_COLLECTION_EVERY, FULL_COLLECTION_EVERY)
    assert YOUNG_COLLECTION_EVERY > 700  # CPython's default young threshold: far rarer than it


def test_only_the_serving_app_tunes_the_collector() -> None:
    assert settle_heap in serving_app(Settings()).on_startup
    assert settle_heap not in create_app(Settings()).on_startup
