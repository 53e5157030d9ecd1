"""Prometheus metrics of one service process, served on /metrics (never through nginx, which forwards
only /api/ and /health): requests and latencies by route template and status, and the database pool
and event hub as they are at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Figures(Collector):
    """Values read when Prometheus scrapes: pool statistics (psycopg_pool's get_stats) and the hub."""

    def __init__(self, service: str, pool: Callable[[], dict[str, int] | None], hub: Callable[[], bool | None]) -> None:
        self.service, self.pool, self.hub = service, pool, hub

    def collect(self) -> Iterable[Metric]:
        stats = self.pool()
        if stats is not None:
            for key, name, text in (
                ("pool_size", "mfe_db_pool_connections", "connections the pool holds"),
                ("pool_available", "mfe_db_pool_available", "idle connections ready to use"),
                ("requests_waiting", "mfe_db_pool_waiting", "requests waiting for a connection"),
            ):
                family = GaugeMetricFamily(name, text, labels=["service"])
                family.add_metric([self.service], stats.get(key, 0))
                yield family
            errors = GaugeMetricFamily("mfe_db_pool_errors", "connection errors since start", labels=["service"])
            errors.add_metric([self.service], stats.get("connections_errors", 0))
            yield errors
        connected = self.hub()
        if connected is not None:
            family = GaugeMetricFamily(
                "mfe_event_hub_connected", "1 while the event hub is connected", labels=["service"]
            )
            family.add_metric([self.service], 1 if connected else 0)
            yield family


class Metrics:
    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "mfe_http_requests",
            "HTTP requests answered",
            ["service", "method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mfe_http_request_duration_seconds",
            "time to answer, by route template",
            ["service", "method", "route"],
            buckets=BUCKETS,
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(self.service, method, route, str(status)).inc()
        self.latency.labels(self.service, method, route).observe(seconds)

    def watch(self, pool: Callable[[], dict[str, int] | None], hub: Callable[[], bool | None]) -> None:
        self.registry.register(Figures(self.service, pool, hub))

    def render(self) -> bytes:
        return generate_latest(self.registry)
