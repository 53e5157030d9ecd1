"""/health shares its verdict: a burst of probes costs one round of checks (issue: the stack saturated
under a 30% share of /health requests, each fanning out to every service and store)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from mfe_services.common import health


def test_a_burst_of_calls_runs_the_checks_once_and_a_later_call_again() -> None:
    rounds = 0

    async def slow_check() -> None:
        nonlocal rounds
        rounds += 1
        await asyncio.sleep(0.05)

    async def scenario() -> list[tuple[int, dict[str, Any]]]:
        verdict = health.Verdict(ttl=0.3)
        run = lambda: health.report({"database": slow_check})  # noqa: E731
        burst = await asyncio.gather(*(verdict.get(run) for _ in range(50)))
        assert rounds == 1
        await asyncio.sleep(0.35)
        later = await verdict.get(run)
        return [*burst, later]

    answers = asyncio.run(scenario())
    assert rounds == 2
    assert {status for status, _ in answers} == {200}
    assert answers[0][1]["services"] == {"database": "healthy"}


def test_a_failed_check_is_shared_too_and_clears_after_the_ttl() -> None:
    broken = True

    async def check() -> None:
        if broken:
            raise ConnectionError("down")

    async def scenario() -> list[int]:
        nonlocal broken
        verdict = health.Verdict(ttl=0.2)
        run = lambda: health.report({"redis": check})  # noqa: E731
        first = (await verdict.get(run))[0]
        broken = False
        cached = (await verdict.get(run))[0]
        await asyncio.sleep(0.25)
        return [first, cached, (await verdict.get(run))[0]]

    assert asyncio.run(scenario()) == [503, 503, 200]


def test_a_slow_check_is_healthy_for_a_grace_after_its_last_success_and_a_failing_one_never(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a busy host a database check can outlast its timeout while the service answers requests: slow, not
    down, for SLOW_GRACE after its last success; an error is unhealthy at once; slow with no success before
    (or for longer than the grace) is unhealthy."""
    monkeypatch.setattr(health, "SLOW_GRACE", 0.5)
    mode = "ok"

    async def check() -> None:
        if mode == "slow":
            await asyncio.sleep(0.3)
        elif mode == "fail":
            raise ConnectionRefusedError("down")
        elif mode == "pool":  # what the database check raises when no pooled connection frees up in time
            raise TimeoutError("no free database connection within 1 s")

    async def scenario() -> list[tuple[str, int, str]]:
        nonlocal mode
        seen: dict[str, float] = {}
        out = []
        for step in ("slow", "ok", "slow", "pool", "fail", "ok", "wait", "slow"):
            if step == "wait":
                await asyncio.sleep(0.6)  # longer than the grace since the last success
                continue
            mode = step
            status, body = await health.report({"database": check}, 0.05, seen)
            out.append((step, status, body["services"]["database"]))
        fresh = await health.report({"database": check}, 0.05)  # no memory: slow is unhealthy
        out.append(("no memory", fresh[0], fresh[1]["services"]["database"]))
        return out

    assert asyncio.run(scenario()) == [
        ("slow", 503, "unhealthy"),  # never healthy before
        ("ok", 200, "healthy"),
        ("slow", 200, "healthy"),
        ("pool", 200, "healthy"),
        ("fail", 503, "unhealthy"),
        ("ok", 200, "healthy"),
        ("slow", 503, "unhealthy"),  # after the grace
        ("no memory", 503, "unhealthy"),
    ]


def _replicas(resets: int) -> tuple[Any, list[int]]:
    """A service on loopback whose first `resets` connections are reset at once (a replica closing its
    socket), then answers /health with 200; and the count of connections it took."""
    import socket
    import struct

    taken = [0]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        taken[0] += 1
        if taken[0] <= resets:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.close()
            return
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    return serve, taken


def test_a_stopping_replica_does_not_make_the_service_unhealthy() -> None:
    """Issue 31: the gateway's aggregate /health tried one replica once, so a replica stopping during a
    healthy deploy turned the site's /health into a 503. Two resets, then an answer: healthy."""
    from mfe_services.gateway.app import Gateway
    from mfe_services.gateway.upstream import Pool

    async def scenario(resets: int) -> tuple[int, dict[str, Any], int]:
        serve, taken = _replicas(resets)
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            status, body = await health.report({"auth": Gateway._probe(Pool("127.0.0.1", port))})
        return status, body, taken[0]

    status, body, taken = asyncio.run(scenario(2))
    assert (status, body["services"], taken) == (200, {"auth": "healthy"}, 3)
    status, body, taken = asyncio.run(scenario(1000))  # no replica answers: unhealthy within the timeout
    assert (status, body["services"]) == (503, {"auth": "unhealthy"}) and taken > 3


def test_the_gateway_waits_longer_for_a_service_than_the_service_waits_for_its_stores() -> None:
    """A service's /health may take CHECK_TIMEOUT itself (a store slow to answer on a busy host); the
    gateway's check of it waited exactly as long, so a service answering "healthy" after 1.3 s made the
    gateway unhealthy (a CI failure). Its wait is UPSTREAM_CHECK_TIMEOUT now: healthy."""
    from mfe_services.gateway.app import Gateway
    from mfe_services.gateway.upstream import Pool

    handlers: list[asyncio.Task[None]] = []

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(health.CHECK_TIMEOUT + 0.3)  # the service's own checks took their whole budget
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
        finally:
            writer.close()

    async def scenario(timeout: float) -> str:
        server = await asyncio.start_server(slow, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            _, body = await health.report({"auth": Gateway._probe(Pool("127.0.0.1", port))}, timeout)
            for task in handlers:  # a handler still sleeping (the probe gave up) ends here, not after the loop
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            handlers.clear()
        return str(body["services"]["auth"])

    assert health.UPSTREAM_CHECK_TIMEOUT >= health.CHECK_TIMEOUT + 1
    assert asyncio.run(scenario(health.CHECK_TIMEOUT)) == "unhealthy"  # the old wait
    assert asyncio.run(scenario(health.UPSTREAM_CHECK_TIMEOUT)) == "healthy"


def test_an_answer_that_came_while_the_loop_was_starved_counts_a_slow_store_does_not() -> None:
    """The store answers in 0.3 s of a 0.5 s timeout, but the loop is blocked for 0.8 s meanwhile (a busy
    host): it wakes to the deadline and the answer at once, and the answer counts. A store that answers after
    the deadline on a loop that was free is still unhealthy."""

    async def answered_in_time() -> None:
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        loop.call_later(0.3, answer.set_result, None)
        loop.call_later(0.05, time.sleep, 0.8)  # the loop starved: nothing runs for 0.8 s
        await answer
        for _ in range(3):  # reading and parsing the answer takes a few turns of the loop, as a driver's does
            await asyncio.sleep(0)

    async def too_slow() -> None:
        await asyncio.sleep(0.8)

    async def scenario() -> tuple[dict[str, Any], float]:
        started = time.monotonic()
        _, starved = await health.report({"database": answered_in_time}, timeout=0.5)
        _, slow = await health.report({"database": too_slow}, timeout=0.5)
        return {"starved": starved["services"]["database"], "slow": slow["services"]["database"]}, (
            time.monotonic() - started
        )

    found, took = asyncio.run(scenario())
    assert found == {"starved": "healthy", "slow": "unhealthy"}
    assert took < 0.8 + 0.5 + 2 * health.GRACE + 0.3, took
