"""A worker: a service with no HTTP. It consumes events, proves it is alive by touching $HEARTBEAT_FILE while
its database and event hub answer, and on SIGTERM stops taking new messages, finishes the ones in hand and
exits within its stop timeout (STOP_TIMEOUT seconds before the supervisor's SIGKILL)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from mfe_services.common import logs, reporting
from mfe_services.common.events import create_bus
from mfe_services.common.settings import Settings
from mfe_services.common.web import Consumer, Resources, connect_bus

log = logging.getLogger("mfe.worker")
BEAT_EVERY = 2.0  # seconds between two touches of the heartbeat file


@dataclass(frozen=True)
class Worker:
    consumer: Consumer
    database: bool = True


async def _alive(res: Resources) -> bool:
    try:
        if res.pool is not None:
            async with res.pool.connection(timeout=2) as conn:
                await conn.execute("SELECT 1")
        if res.bus is None or not res.extra.get("bus_ready"):
            return False
        await asyncio.wait_for(res.bus.ping(), 2)
    except Exception:
        return False
    return True


async def _beat(res: Resources, path: Path) -> None:
    while True:
        if await _alive(res):
            path.touch()
        await asyncio.sleep(BEAT_EVERY)


async def run(settings: Settings, worker: Worker, stop_timeout: float) -> None:
    from psycopg_pool import AsyncConnectionPool

    logs.configure(settings.service, settings.log_level)
    reporting.init(settings)
    res = Resources(settings=settings)
    heartbeat = Path(os.environ["HEARTBEAT_FILE"])  # the deployer sets it: where its health check looks
    heartbeat.unlink(missing_ok=True)  # a file left by an earlier process is no proof of this one
    if worker.database and settings.database_url:
        res.pool = AsyncConnectionPool(
            settings.database_url, min_size=1, max_size=4, open=False, timeout=5, kwargs={"connect_timeout": 3}
        )
        await res.pool.open(wait=False)
    res.bus = create_bus(
        settings.event_hub, settings.service, rabbitmq_url=settings.rabbitmq_url, redis_url=settings.redis_url
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    connecting = asyncio.create_task(connect_bus(res.bus, worker.consumer, res))
    beating = asyncio.create_task(_beat(res, heartbeat))
    log.info("started", extra={"fields": {"event_hub": settings.event_hub, "heartbeat": str(heartbeat)}})
    await stop.wait()
    log.info("stopping: no new messages; finishing the ones in hand")
    for task in (connecting, beating):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    heartbeat.unlink(missing_ok=True)
    await res.bus.drain(max(stop_timeout - 2, 1))
    await res.bus.close()
    if res.pool is not None:
        await res.pool.close()
    log.info("stopped")
