"""Metrics: the names and labels /metrics exposes (unit), then a real Prometheus (Debian's binary, run by
the local runtime when `monitoring.enabled`) scraping the stack: PromQL over its HTTP API returns exactly
the number of requests sent."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mfe_services.common.metrics import Metrics
from tests.local_project import LocalProject, make_local_project
from tests.pg import free_port

ENV = "mon"


def test_metric_names_and_labels() -> None:
    metrics = Metrics("auth")
    metrics.observe("POST", "/api/auth/login", 200, 0.03)
    metrics.observe("POST", "/api/auth/login", 401, 0.02)
    metrics.watch(pool=lambda: {"pool_size": 4, "pool_available": 3, "requests_waiting": 0}, hub=lambda: True)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    requests = {
        (s.labels["status"], s.value) for s in families["mfe_http_requests"].samples if s.name.endswith("_total")
    }
    assert requests == {("200", 1.0), ("401", 1.0)}
    sample = next(s for s in families["mfe_http_requests"].samples if s.name.endswith("_total"))
    assert set(sample.labels) == {"service", "method", "route", "status"}
    assert sample.labels["route"] == "/api/auth/login" and sample.labels["service"] == "auth"
    buckets = [s for s in families["mfe_http_request_duration_seconds"].samples if s.name.endswith("_bucket")]
    assert {s.labels["le"] for s in buckets} >= {"0.025", "0.05", "+Inf"}
    assert families["mfe_db_pool_connections"].samples[0].value == 4
    assert families["mfe_db_pool_available"].samples[0].value == 3
    assert families["mfe_event_hub_connected"].samples[0].value == 1


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalProject, int]]:
    port = free_port()
    yaml = f"monitoring:\n  enabled: true\n  port: {port}\n  scrape_interval: 1s\n"
    p = make_local_project(tmp_path_factory.mktemp("metrics") / "project", ENV, extra_yaml=yaml)
    started = p.cli("up", "--env", ENV)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield p, port
    finally:
        p.cli("down", "--env", ENV, "--volumes", "--yes")


def _query(port: int, promql: str) -> float | None:
    answer = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": promql}, timeout=5).json()
    result = answer["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_prometheus_counts_the_requests_sent(project: tuple[LocalProject, int]) -> None:
    p, port = project
    assert p.status()["prometheus"]["health"] == "healthy"
    sent = 17
    with p.gateway() as gw:
        for _ in range(sent):
            assert gw.get("/api/auth/version").status_code == 200
        assert gw.get("/metrics").status_code == 200  # the gateway's own, for Prometheus on the host
    gateway = 'sum(mfe_http_requests_total{job="api-gateway", route="/api/auth", method="GET", status="200"})'
    auth = 'sum(mfe_http_requests_total{job="auth", route="/api/auth/version", status="200"})'
    deadline = time.monotonic() + 30
    seen: tuple[float | None, float | None] = (None, None)
    while time.monotonic() < deadline:
        seen = (_query(port, gateway), _query(port, auth))
        if seen == (sent, sent):
            break
        time.sleep(0.5)
    assert seen == (sent, sent)
    # Every service's /metrics was scraped: each target up in a recent scrape (one scrape of a 1 s interval
    # can time out on a busy host; `sum(up)` of the last one alone saw 4 in a --quick run).
    up = _query(port, "sum(max_over_time(up[20s]))")
    assert up == 5, up


def test_prometheus_is_a_unit_of_the_local_runtime(project: tuple[LocalProject, int]) -> None:
    p, _ = project
    shown = p.cli("logs", "--env", ENV, "prometheus", "--tail", "200")
    assert shown.returncode == 0 and "Server is ready to receive web requests" in shown.stdout
