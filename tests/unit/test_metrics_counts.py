"""The request path's own counters and histograms (gateway/metrics.py): bucket edges, sum and
count, and that a scrape shows what prometheus-client's Counter and Histogram would have shown
for the same increments (they are the exposition's reference; only the counting moved)."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from billing.ledger import Settlement
from gateway.metrics import CounterValues, CountsCollector, HistogramValues, Telemetry
from gateway.request_id import CURRENT
from keys.service import KeyIdentity
from providers.base import Usage

BOUNDS = (0.005, 0.01, 0.25, 300.0)
LABELS = ("route", "model")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(families: list[Metric], *, created: bool = False) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families
        for s in family.samples
        if created or not s.name.endswith("_created")
    }


def buckets(family: Metric, labels: dict[str, str]) -> dict[str, float]:
    return {
        s.labels["le"]: s.value
        for s in family.samples
        if s.name.endswith("_bucket") and {k: v for k, v in s.labels.items() if k != "le"} == labels
    }


def one(family: Metric, name: str) -> float:
    (value,) = [s.value for s in family.samples if s.name == name]
    return value


def test_a_value_on_a_bound_counts_in_that_bucket_and_past_the_last_only_in_inf() -> None:
    values = HistogramValues("h", "A histogram.", LABELS, BOUNDS)
    for value in (0.005, 0.0050001, 0.01, 300.0, 300.5, 1e9, 0.0):
        values.observe(("/v1/x", "m"), value)
    family = values.family(created=False)
    assert buckets(family, {"route": "/v1/x", "model": "m"}) == {
        "0.005": 2.0,  # 0.0 and exactly 0.005: Prometheus buckets are "less than or equal"
        "0.01": 4.0,  # 0.0050001 and exactly 0.01, cumulative
        "0.25": 4.0,
        "300.0": 5.0,  # exactly 300
        "+Inf": 7.0,  # 300.5 and 1e9 are in no finite bucket
    }
    assert one(family, "h_count") == 7.0
    assert one(family, "h_sum") == pytest.approx(0.005 + 0.0050001 + 0.01 + 300.0 + 300.5 + 1e9)
    assert not [s for s in family.samples if s.name == "h_created"]


def test_each_label_tuple_is_its_own_series_with_a_created_time() -> None:
    values = HistogramValues("h", "A histogram.", LABELS, BOUNDS)
    values.observe(("/v1/a", "m"), 0.2)
    values.cell(("/v1/b", "m"))  # made, never observed: shown as zeros
    family = values.family(created=True)
    assert buckets(family, {"route": "/v1/b", "model": "m"}) == dict.fromkeys(
        ("0.005", "0.01", "0.25", "300.0", "+Inf"), 0.0
    )
    assert buckets(family, {"route": "/v1/a", "model": "m"})["0.25"] == 1.0
    created = [s for s in family.samples if s.name == "h_created"]
    assert [s.labels for s in created] == [{"route": "/v1/a", "model": "m"}, {"route": "/v1/b", "model": "m"}]
    assert all(math.isfinite(s.value) and s.value > 1e9 for s in created)  # a Unix time


def test_counter_values_add_up_per_label_tuple() -> None:
    values = CounterValues("c", "A counter.", ("model", "direction"))
    values.cell(("m", "input"))[0] += 21
    values.cell(("m", "input"))[0] += 4
    values.cell(("m", "output"))[0] += 1
    family = values.family(created=True)
    assert samples([family]) == {
        ("c_total", (("direction", "input"), ("model", "m"))): 25.0,
        ("c_total", (("direction", "output"), ("model", "m"))): 1.0,
    }
    assert len([s for s in family.samples if s.name == "c_created"]) == 2


def test_scrape_equals_prometheus_clients_own_counter_and_histogram() -> None:
    """The same increments through prometheus-client's classes and through ours render the same
    text, apart from the _created times."""
    reference = CollectorRegistry()
    counter = Counter("c", "A counter.", ["model", "direction"], registry=reference)
    histogram = Histogram("h", "A histogram.", list(LABELS), buckets=BOUNDS, registry=reference)
    ours_counter = CounterValues("c", "A counter.", ("model", "direction"))
    ours_histogram = HistogramValues("h", "A histogram.", LABELS, BOUNDS)
    ours = CollectorRegistry()
    ours.register(CountsCollector(ours_counter, ours_histogram))
    for labels, value in [
        (("/v1/a", "m"), 0.01),
        (("/v1/b", "n"), 7.5),
        (("/v1/a", "m"), 400.0),
        (("/v1/a", "m"), -1.0),
    ]:
        histogram.labels(*labels).observe(value)
        ours_histogram.observe(labels, value)
    for labels, amount in [(("m", "input"), 3), (("m", "output"), 0), (("n", "input"), 5), (("m", "input"), 2)]:
        counter.labels(*labels).inc(amount)
        ours_counter.cell(labels)[0] += amount

    def parsed(registry: CollectorRegistry) -> list[tuple[str, str, str, Samples]]:
        text = generate_latest(registry).decode()
        return [
            (f.name, f.type, f.documentation, samples([f]))
            for f in text_string_to_metric_families(text)
            if not f.name.endswith("_created")
        ]

    assert parsed(ours) == parsed(reference)
    assert parsed(ours)  # not two empty renders


def test_telemetry_finished_counts_one_request() -> None:
    telemetry = Telemetry(metrics=True)
    settlement = Settlement(
        request_id="req_1",
        account_id=1,
        key_id=1,
        model="fake/gpt",
        provider="fake",
        upstream_model="gpt",
        usage=Usage(input_tokens=21, output_tokens=5),
        cost_micro=6150,
        latency_ms=5,  # exactly the first bound, 0.005 s
        status_code=200,
    )
    token = CURRENT.set(("/v1/chat/completions", "req_1"))
    try:
        for _ in range(2):
            telemetry.finished(
                settlement, KeyIdentity(1, 1, "active", True, None, "k", prefix="prx-abcd"), 1.0, stream_opened=False
            )
    finally:
        CURRENT.reset(token)
    got = samples(list(telemetry.registry.collect()))
    route = (("model", "fake/gpt"), ("provider", "fake"), ("route", "/v1/chat/completions"), ("status", "200"))
    assert got[("tollway_requests_total", route)] == 2.0
    assert got[("tollway_request_duration_seconds_bucket", tuple(sorted((*route, ("le", "0.005")))))] == 2.0
    assert got[("tollway_request_duration_seconds_count", route)] == 2.0
    assert got[("tollway_request_duration_seconds_sum", route)] == pytest.approx(0.01)
    upstream = (("model", "fake/gpt"), ("provider", "fake"))
    assert got[("tollway_upstream_duration_seconds_bucket", (("le", "0.5"), *upstream))] == 0.0
    assert got[("tollway_upstream_duration_seconds_bucket", (("le", "1.0"), *upstream))] == 2.0
    assert got[("tollway_tokens_total", (("direction", "input"), *upstream))] == 42.0
    assert got[("tollway_tokens_total", (("direction", "output"), *upstream))] == 10.0
    assert got[("tollway_credits_micro_total", upstream)] == 12300.0
