"""Prometheus metrics of one app instance (its own registry, so tests can build many apps)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


class ServiceMetrics:
    def __init__(self, cache: ModelCache) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "lloyd_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lloyd_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
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
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def record(self, template: str, method: str, status: int, seconds: float) -> None:
        """Counts and times one HTTP request by its route template."""
        counter, histogram = self._request_series(template, method, status)
        counter.inc()
        histogram.observe(seconds)

    def _request_series(self, template: str, method: str, status: int) -> tuple[Counter, Histogram]:
        """The labelled series of a request, looked up once per (route, method, status): the
        label sets are bounded, and ``labels()`` on every request costs a lock and a tuple."""
        key = (template, method, status)
        found = self._series.get(key)
        if found is None:
            found = (
                self.requests.labels(template, method, str(status)),
                self.latency.labels(template, method),
            )
            self._series[key] = found
        return found


class MetricsMiddleware:
    """Counts and times every request by its route template (never by raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.record(
                template, scope.get("method", ""), status, time.perf_counter() - started
            )
