"""/health turns 503 within 2 s when a store goes away, and 200 again when it returns."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.stack import SERVICES, Stack, running_stack

DB_SERVICES = ("auth", "payments", "admin", "profile")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("outage"), hub="rabbitmq", layout="per-service") as s:
        yield s


def _status(stack: Stack, name: str) -> int:
    try:
        return httpx.get(stack.url(name) + "/health", timeout=5).status_code
    except httpx.HTTPError:
        return 0


def _statuses(stack: Stack, names: tuple[str, ...]) -> dict[str, int]:
    with ThreadPoolExecutor(len(names)) as pool:
        return dict(zip(names, pool.map(lambda n: _status(stack, n), names), strict=True))


def _time_until(stack: Stack, names: tuple[str, ...], want: int, limit: float) -> float:
    """Seconds until every named service answers `want` (each polled on its own), at most `limit`."""

    def one(name: str) -> float:
        started = time.monotonic()
        while time.monotonic() - started < limit + 5:
            if _status(stack, name) == want:
                return time.monotonic() - started
            time.sleep(0.05)
        return float("inf")

    with ThreadPoolExecutor(len(names)) as pool:
        worst = max(pool.map(one, names))
    assert worst <= limit, f"not all {want} within {limit}s: {_statuses(stack, names)}"
    return worst


def _outage(stack: Stack, stop: Callable[[], None], start: Callable[[], None], component: str) -> None:
    assert set(_statuses(stack, SERVICES).values()) == {200}
    stop()
    try:
        # a verdict is shared for 1 s (health.VERDICT_TTL), and a check gives up after 1 s
        went_down = _time_until(stack, DB_SERVICES, 503, 3.0)
        body = httpx.get(stack.url("auth") + "/health", timeout=3).json()
        assert body["services"][component] == "unhealthy"
        assert body["status"] == "unhealthy"
    finally:
        start()
    came_back = _time_until(stack, SERVICES, 200, 30.0)
    print(f"{component}: 503 after {went_down:.2f}s, 200 again {came_back:.2f}s after restart")


def test_redis_outage(stack: Stack) -> None:
    _outage(stack, stack.redis.stop, stack.redis.start, "redis")


def test_rabbitmq_outage(stack: Stack) -> None:
    assert stack.rabbit is not None
    rabbit = stack.rabbit
    _outage(stack, lambda: rabbit.ctl("stop_app"), lambda: rabbit.ctl("start_app"), "rabbitmq")


def test_postgres_outage(stack: Stack) -> None:
    _outage(stack, stack.cluster.stop, stack.cluster.start, "database")


def test_events_flow_again_after_the_outages(stack: Stack) -> None:
    """The robust connection re-declared the consumers: a new user still gets a profile."""
    from tests.stack import poll
    from tests.test_services_e2e import _profile, _user

    with stack.client() as gw:
        _, auth = _user(gw)
        assert poll(lambda: _profile(gw, auth), timeout=15) is not None


def test_the_first_health_after_a_quiet_redis_restart_is_healthy(stack: Stack) -> None:
    """Redis restarted (a deploy with --restart-stores) while no request came: every pooled connection is stale.
    The first /health after it must already say healthy: a client that fails on the dead connection before it
    reconnects made `up` report a sound stack unhealthy."""
    assert set(_statuses(stack, SERVICES).values()) == {200}
    stack.redis.stop()
    stack.redis.start()
    time.sleep(1.2)  # past the shared verdict (health.VERDICT_TTL): the next call runs the checks
    first = _statuses(stack, SERVICES)
    assert set(first.values()) == {200}, first
