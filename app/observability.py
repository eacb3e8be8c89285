"""Prometheus metrics of one app instance (its own registry, so tests can build many apps)."""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from app.registry.cache import ModelCache

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    60,
)


REQUESTS = ("lloyd_http_requests", "HTTP requests by route template, method and status.")
LATENCY = (
    "lloyd_http_request_duration_seconds",
    "HTTP request latency by route template and method.",
)


class RequestSeries(Collector):
    """``lloyd_http_requests_total`` and ``lloyd_http_request_duration_seconds``: what a
    prometheus-client Counter and Histogram would expose, recorded at a third of their cost
    (per request they take a lock per value and walk the buckets in Python; here one bisect
    and one lock), which a 1-row prediction notices."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.bounds = [*sorted(buckets), math.inf]
        self._lock = threading.Lock()
        # (route, method, status) -> [count per bucket (not cumulative)..., sum of seconds]
        self._series: dict[tuple[str, str, int], list[float]] = {}
        self._created: dict[tuple[str, str, int], float] = {}

    def record(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        bucket = bisect.bisect_left(self.bounds, seconds)  # the first bound >= seconds
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = [0] * len(self.bounds) + [0.0]
                self._created[key] = time.time()
            series[bucket] += 1
            series[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshot = {key: list(series) for key, series in self._series.items()}
            created = dict(self._created)
        requests = CounterMetricFamily(*REQUESTS, labels=["route", "method", "status"])
        latency = HistogramMetricFamily(*LATENCY, labels=["route", "method"])
        by_route: dict[tuple[str, str], list[float]] = {}
        route_created: dict[tuple[str, str], float] = {}
        for key, series in sorted(snapshot.items()):
            route, method, status = key
            requests.add_metric(
                [route, method, str(status)], sum(series[:-1]), created=created[key]
            )
            merged = by_route.setdefault((route, method), [0] * len(series))
            for index, value in enumerate(series):
                merged[index] += value
            route_created[(route, method)] = min(
                route_created.get((route, method), math.inf), created[key]
            )
        yield requests
        for (route, method), merged in by_route.items():
            cumulative: list[tuple[str, float]] = []
            running: float = 0
            for bound, count in zip(self.bounds, merged[:-1], strict=True):
                running += count
                cumulative.append((floatToGoString(bound), running))
            latency.add_metric([route, method], cumulative, merged[-1])
            latency.samples.append(
                Sample(
                    f"{LATENCY[0]}_created",
                    {"route": route, "method": method},
                    route_created[(route, method)],
                )
            )
        yield latency

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(*REQUESTS)
        yield HistogramMetricFamily(*LATENCY)


class ServiceMetrics:
    def __init__(self, cache: ModelCache) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = RequestSeries(LATENCY_BUCKETS)
        self.registry.register(self.requests)
        self.trainings = Counter(
            "lloyd_trainings",
            "Trainings by algorithm and outcome (succeeded, failed).",
            ["algorithm", "outcome"],
            registry=self.registry,
        )
        self.training_duration = Histogram(
            "lloyd_training_duration_seconds",
            "Seconds spent fitting, by algorithm.",
            ["algorithm"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800),
            registry=self.registry,
        )
        cache_hits = Gauge(
            "lloyd_model_cache_hits", "Model cache hits since start.", registry=self.registry
        )
        cache_misses = Gauge(
            "lloyd_model_cache_misses", "Model cache misses since start.", registry=self.registry
        )
        cache_size = Gauge(
            "lloyd_model_cache_size", "Models held in the cache.", registry=self.registry
        )
        cache_hits.set_function(lambda: cache.hits)
        cache_misses.set_function(lambda: cache.misses)
        cache_size.set_function(lambda: len(cache))

    def record(self, template: str, method: str, status: int, seconds: float) -> None:
        """Counts and times one HTTP request by its route template."""
        self.requests.record(template, method, status, seconds)
