"""Redis Cluster URLs with several seeds (billing/counters/redis.py): the first seed as a plain
URL with everything else of the URL kept, the others as nodes, and bad ones refused by the
settings without the URL (and its password) in the message."""

from __future__ import annotations

import pytest

from billing.counters.redis import cluster_seeds
from gateway.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    ("url", "first", "others"),
    [
        ("redis+cluster://10.0.0.5:7000", "redis://10.0.0.5:7000", []),
        ("redis+cluster://cache", "redis://cache:6379", []),
        (
            "redis+cluster://10.0.0.5:7000,10.0.0.6:7001, cache-3",
            "redis://10.0.0.5:7000",
            [("10.0.0.6", 7001), ("cache-3", 6379)],
        ),
        (
            "rediss+cluster://tollway:s3cret@[fd00::5]:7000,[fd00::6]:7000/0?ssl_cert_reqs=required",
            "rediss://tollway:s3cret@[fd00::5]:7000/0?ssl_cert_reqs=required",
            [("fd00::6", 7000)],
        ),
        ("redis+cluster://:pw@a:1,b:2?health_check_interval=5", "redis://:pw@a:1?health_check_interval=5", [("b", 2)]),
    ],
)
def test_cluster_seeds_first_as_a_url_and_the_rest_as_nodes(
    url: str, first: str, others: list[tuple[str, int]]
) -> None:
    assert cluster_seeds(url) == (first, others)


@pytest.mark.parametrize(
    "url",
    ["redis+cluster://:s3cret@a:7000,:7001", "redis+cluster://:s3cret@a:7000,b:port", "redis+cluster://:s3cret@"],
)
def test_a_bad_seed_is_refused_without_echoing_the_url(url: str) -> None:
    with pytest.raises(SettingsError, match="redis_url: a Redis Cluster seed") as refused:
        load_settings(env={"TOLLWAY_REDIS_URL": url})
    assert "s3cret" not in str(refused.value)


def test_several_seeds_still_have_only_database_0() -> None:
    with pytest.raises(SettingsError, match="only database 0"):
        load_settings(env={"TOLLWAY_REDIS_URL": "redis+cluster://a:7000,b:7000/2"})
    assert load_settings(env={"TOLLWAY_REDIS_URL": "redis+cluster://a:7000,b:7000/0"}).uses_redis
