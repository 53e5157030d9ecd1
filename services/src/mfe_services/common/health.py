"""/health in the guide's shape (section 6.1): every check runs concurrently, bounded by a timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

CHECK_TIMEOUT = 1.0
Check = Callable[[], Awaitable[Any]]


async def _run(check: Check | None, timeout: float) -> str:
    if check is None:
        return "disabled"
    try:
        await asyncio.wait_for(check(), timeout)
    except Exception:
        return "unhealthy"
    return "healthy"


async def report(checks: Mapping[str, Check | None], timeout: float = CHECK_TIMEOUT) -> tuple[int, dict[str, Any]]:
    names = list(checks)
    results = await asyncio.gather(*(_run(checks[n], timeout) for n in names))
    services = dict(zip(names, results, strict=True))
    healthy = all(r != "unhealthy" for r in results)
    body = {
        "status": "healthy" if healthy else "unhealthy",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "services": services,
    }
    return (200 if healthy else 503), body
