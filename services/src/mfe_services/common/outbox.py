"""Transactional outbox: an event is written in the same transaction as the change it announces and
published afterwards by a relay, so a broker outage delays events but never loses them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from mfe_services.common.events import Event, EventBus

log = logging.getLogger("mfe.outbox")


async def add(conn: AsyncConnection[Any], event: Event) -> None:
    await conn.execute(
        "INSERT INTO event_outbox (id, type, source, data, occurred_at) VALUES (%s, %s, %s, %s, %s)",
        (event.id, event.type, event.source, Jsonb(event.data), event.occurred_at),
    )


class Relay:
    def __init__(self, pool: AsyncConnectionPool[Any], bus: EventBus) -> None:
        self.pool, self.bus = pool, bus
        self.wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                while await self.flush():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox relay: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=1.0)
            self.wake.clear()

    async def flush(self, limit: int = 100) -> int:
        """Publish a batch of pending events; returns how many were published."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT id, type, source, data, occurred_at FROM event_outbox WHERE published_at IS NULL "
                "ORDER BY occurred_at, id LIMIT %s FOR UPDATE SKIP LOCKED",
                (limit,),
            )
            rows = await cur.fetchall()
            for row in rows:
                data = row[3] if isinstance(row[3], dict) else json.loads(row[3])
                event = Event(type=row[1], source=row[2], data=data, id=str(row[0]), occurred_at=row[4].isoformat())
                await self.bus.publish(event)
                await conn.execute("UPDATE event_outbox SET published_at = now() WHERE id = %s", (row[0],))
            return len(rows)
