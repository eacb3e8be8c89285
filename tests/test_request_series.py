"""RequestSeries exposes what prometheus-client's own Counter and Histogram would, for the same
requests: the same samples, bucket boundaries included (a bucket counts values <= its bound)."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.observability import LATENCY_BUCKETS, RequestSeries


def exposed(registry: CollectorRegistry) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
        if not sample.name.endswith("_created")  # moments of creation differ
    }


def test_same_samples_as_prometheus_clients_counter_and_histogram() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    series = RequestSeries(LATENCY_BUCKETS)
    ours.register(series)
    counter = Counter("lloyd_http_requests", "c", ["route", "method", "status"], registry=theirs)
    histogram = Histogram(
        "lloyd_http_request_duration_seconds",
        "h",
        ["route", "method"],
        buckets=LATENCY_BUCKETS,
        registry=theirs,
    )
    rng = random.Random(0)
    durations = [*LATENCY_BUCKETS, 0.0, 1e-7, 61.0, 1e4]  # every bound exactly, and beyond
    durations += [rng.uniform(0, 0.02) for _ in range(500)]
    routes = ["/v1/models/{name}/predict", "/v1/models", "unmatched"]
    for seconds in durations:
        route, method = rng.choice(routes), rng.choice(["GET", "POST"])
        status = rng.choice([200, 201, 404, 422])
        series.record(route, method, status, seconds)
        counter.labels(route, method, str(status)).inc()
        histogram.labels(route, method).observe(seconds)
    mine, reference = exposed(ours), exposed(theirs)
    assert mine.keys() == reference.keys()
    for key, value in reference.items():
        assert abs(mine[key] - value) <= 1e-9 * max(1.0, abs(value)), key


def test_created_samples_for_every_series() -> None:
    registry = CollectorRegistry()
    series = RequestSeries(LATENCY_BUCKETS)
    registry.register(series)
    series.record("/r", "GET", 200, 0.01)
    text = generate_latest(registry).decode()
    assert 'lloyd_http_requests_created{method="GET",route="/r",status="200"}' in text
    assert 'lloyd_http_request_duration_seconds_created{method="GET",route="/r"}' in text
