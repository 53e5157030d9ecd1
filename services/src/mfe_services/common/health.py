"""/health in the guide's shape (section 6.1): every check runs concurrently, bounded by a timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

CHECK_TIMEOUT = 1.0
# The gateway's check of a service waits for that service's own /health, which may itself take CHECK_TIMEOUT
# (a store that does not answer): the outer wait must outlast the inner one, or a slow store on a busy host
# makes the gateway call a service that answers "healthy" a failure.
UPSTREAM_CHECK_TIMEOUT = 2.5
VERDICT_TTL = 1.0  # a verdict serves every /health call for this long
# A check that outlasts its timeout is slow, not failed, for this long after its last success: on a busy host
# a database check waits behind the requests for a pooled connection, and a service that answered "healthy"
# a moment ago and answers requests now is not down (CI: a new auth's database check took 1.5 s under load, 4
# of 178 aggregate /health polls answered 503 during a healthy deploy). A check that fails (an error, a
# refused connection) is unhealthy at once; one that stays slow is unhealthy after this grace.
SLOW_GRACE = 5.0
Check = Callable[[], Awaitable[Any]]


# A starved event loop (a busy host) wakes to a check's deadline and to its answer in the same turn, and
# the deadline is served first: the answer that was there gets this much longer to be read.
GRACE = 0.1


async def _run(check: Check | None, timeout: float) -> str:
    """healthy, unhealthy, disabled, or slow (it outlasted `timeout`, or raised TimeoutError itself)."""
    if check is None:
        return "disabled"
    task = asyncio.ensure_future(check())
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout)
    except TimeoutError:
        try:
            await asyncio.wait_for(task, GRACE)
        except TimeoutError:
            return "slow"
        except Exception:
            return "unhealthy"
    except Exception:
        task.cancel()
        return "unhealthy"
    return "healthy"


async def report(
    checks: Mapping[str, Check | None], timeout: float = CHECK_TIMEOUT, healthy_at: dict[str, float] | None = None
) -> tuple[int, dict[str, Any]]:
    """Every check side by side. `healthy_at` (the Verdict's): when each check last passed; a slow check
    counts as healthy within SLOW_GRACE of that, and as unhealthy without it."""
    names = list(checks)
    now = time.monotonic()
    memory = {} if healthy_at is None else healthy_at
    results = list(await asyncio.gather(*(_run(checks[n], timeout) for n in names)))
    for i, name in enumerate(names):
        if results[i] == "healthy":
            memory[name] = now
        elif results[i] == "slow":
            results[i] = "healthy" if now - memory.get(name, -SLOW_GRACE) < SLOW_GRACE else "unhealthy"
    services = dict(zip(names, results, strict=True))
    healthy = all(r != "unhealthy" for r in results)
    body = {
        "status": "healthy" if healthy else "unhealthy",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "services": services,
    }
    return (200 if healthy else 503), body


class Verdict:
    """The readiness verdict, shared: within `ttl` seconds every /health call gets the last report, and
    one round of checks runs at a time however many calls wait for it. A burst of probes (monitors, load
    balancers, the gateway's fan-out) costs one round of database, Redis and broker checks, not one each."""

    def __init__(self, ttl: float = VERDICT_TTL) -> None:
        self.ttl = ttl
        self.healthy_at: dict[str, float] = {}  # check -> when it last passed (report's `healthy_at`)
        self._last: tuple[int, dict[str, Any]] | None = None
        self._at = 0.0
        self._lock: asyncio.Lock | None = None

    async def get(self, run: Callable[[], Awaitable[tuple[int, dict[str, Any]]]]) -> tuple[int, dict[str, Any]]:
        if self._last is not None and time.monotonic() - self._at < self.ttl:
            return self._last
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._last is None or time.monotonic() - self._at >= self.ttl:
                self._last = await run()
                self._at = time.monotonic()
            return self._last

    async def report(
        self, checks: Mapping[str, Check | None], timeout: float = CHECK_TIMEOUT
    ) -> tuple[int, dict[str, Any]]:
        """`report` of these checks, shared as `get` shares it, with this verdict's memory of when each
        check last passed (what a slow check is forgiven against)."""
        return await self.get(lambda: report(checks, timeout, self.healthy_at))
