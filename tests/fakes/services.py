"""Where the test suite finds Postgres and Redis, and which backends it runs."""

from __future__ import annotations

import os

POSTGRES_ADMIN_URL = os.environ.get("TOLLWAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TOLLWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BACKENDS = [b for b in os.environ.get("TOLLWAY_TEST_BACKENDS", "sqlite,postgres").split(",") if b]
UNDER_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
