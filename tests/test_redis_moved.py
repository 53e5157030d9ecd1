"""A Redis recreated at a new address (docker: `up --restart-stores`) leaves a service's pooled connections
pointing at one that never answers nor resets. The first /health after it is healthy all the same, within its
one-second check, on a real redis-server behind a relay whose old connections go silent (tests/blackhole.py)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.blackhole import Relay
from tests.conftest import jwt_env
from tests.pg import free_port
from tests.servers import Redis, redis_server, serve_process


@pytest.fixture
def redis() -> Iterator[Redis]:
    with redis_server() as server:
        yield server


def test_the_first_health_after_redis_moved_is_healthy(redis: Redis, tmp_path: Path) -> None:
    relay = Relay(("127.0.0.1", redis.port))
    port = free_port()
    env = {**jwt_env(), "PORT": str(port), "REDIS_URL": f"redis://127.0.0.1:{relay.port}/0"}
    uvicorn = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "tests.redis_app:app"]
    process = serve_process(uvicorn, port, tmp_path / "app.log", env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert client.get("/health").json()["services"]["redis"] == "healthy"  # a pooled connection now
            assert relay.silence() >= 1
            time.sleep(1.2)  # past the shared verdict (health.VERDICT_TTL): the next call runs the checks
            started = time.monotonic()
            first = client.get("/health")
            took = time.monotonic() - started
            assert (first.status_code, first.json()["services"]["redis"]) == (200, "healthy"), first.text
            assert took < 1.5, took
    finally:
        process.terminate()
        process.wait(timeout=20)
        relay.close()
