"""A new service is healthy only once its database pool holds its first connections (POOL_WARM), on a real
PostgreSQL: a replacement that took its share of the traffic with one connection open made the first requests
wait past the pool's timeout."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mfe_services.common.web import POOL_WARM
from tests.conftest import jwt_env
from tests.pg import Cluster, free_port, temp_cluster
from tests.servers import serve_process

PASSWORD = "warm-test-password"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with temp_cluster() as c:
        yield c


def _health(port: int) -> tuple[int, dict[str, object]]:
    answer = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    return answer.status_code, answer.json()


def _held(cluster: Cluster) -> int:
    done = cluster.psql("-A", "-t", "-c", "SELECT count(*) FROM pg_stat_activity WHERE usename = 'warm'")
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


def test_health_waits_for_the_pools_first_connections(cluster: Cluster, tmp_path: Path) -> None:
    limit = POOL_WARM - 2  # the role may open only this many: the pool cannot warm up
    made = cluster.psql("-c", f"CREATE ROLE warm LOGIN PASSWORD '{PASSWORD}' CONNECTION LIMIT {limit}")
    assert made.returncode == 0, made.stderr
    port = free_port()
    env = {
        **jwt_env(),
        "PORT": str(port),
        "DATABASE_URL": f"postgresql://warm:{PASSWORD}@127.0.0.1:{cluster.port}/postgres",
    }
    uvicorn = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "tests.db_app:app"]
    process = serve_process(uvicorn, port, tmp_path / "app.log", env)
    try:
        deadline = time.monotonic() + 20
        while _held(cluster) < limit and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _held(cluster) == limit
        # The database answers (SELECT 1 on a connection the pool holds), yet the service is not ready.
        for _ in range(10):
            status, body = _health(port)
            assert (status, body["services"]) == (
                503,
                {"database": "unhealthy", "redis": "disabled", "rabbitmq": "disabled"},
            ), body
            time.sleep(0.3)
        lifted = cluster.psql("-c", "ALTER ROLE warm CONNECTION LIMIT -1")
        assert lifted.returncode == 0, lifted.stderr
        deadline = time.monotonic() + 30  # the pool tries again on its own, backing off
        while _health(port)[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _health(port)[0] == 200, (tmp_path / "app.log").read_text()
        assert _held(cluster) >= POOL_WARM
    finally:
        process.terminate()
        process.wait(timeout=20)
