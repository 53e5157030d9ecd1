"""One way to open Redis: a pooled connection that died with the server (a restart, a failover) is replaced on
the command that finds it dead, instead of failing that command. Without it, the first health check or cache
read after a quiet Redis restart failed once per pooled connection, and a sound stack reported unhealthy."""

from __future__ import annotations

import asyncio
from typing import Any

RETRIES = 2  # a dead connection, then a server still starting: then the error is real
BACKOFF_BASE = 0.02
BACKOFF_CAP = 0.2  # well inside health's one-second check


def redis_client(url: str, *, socket_timeout: float) -> Any:
    import redis.asyncio as redis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError, TimeoutError

    return redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=2,
        retry=Retry(ExponentialBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), RETRIES),
        retry_on_error=[ConnectionError, TimeoutError, ConnectionResetError, BrokenPipeError],
    )


FIRST_TRY = 0.4  # seconds a ping on a pooled connection gets before the pool is taken for dead


async def ping(client: Any) -> None:
    """/health's Redis check. A Redis that came back at a new address (a container recreated) leaves every
    pooled connection pointing at one that no longer answers, and no reset comes: a command on one waits
    out its socket timeout (longer than the check's second) before it is retried. So a ping that does not
    answer quickly drops the whole pool (they all point where this one does) and asks again on a new
    connection: the first check after such a restart is healthy, and no request then meets a dead one."""
    from redis.exceptions import RedisError

    try:
        await asyncio.wait_for(client.ping(), FIRST_TRY)
    except (TimeoutError, OSError, RedisError):
        await client.connection_pool.disconnect()
        await client.ping()
