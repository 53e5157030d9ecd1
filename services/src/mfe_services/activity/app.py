"""activity (a worker: no HTTP): handles every event of the hub once, keeping a count per event type in its
own database. Its inbox (the handled table) makes a redelivered message harmless: the event id is recorded in
the same transaction as the count, and the message is acknowledged only after that transaction commits."""

from __future__ import annotations

import socket

from mfe_services.common.events import Event, Handler
from mfe_services.common.web import Consumer, Resources
from mfe_services.common.worker import Worker


def _on_event(res: Resources) -> Handler:
    me = socket.gethostname()

    async def handle(event: Event) -> None:
        async with res.pool.connection() as conn, conn.transaction():
            inserted = await conn.execute(
                "INSERT INTO handled (event_id, type, source, handled_by) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (event_id) DO NOTHING",
                (event.id, event.type, event.source, me),
            )
            if inserted.rowcount == 1:  # first time: the work; a redelivery finds its id and does nothing
                await conn.execute(
                    "INSERT INTO counts (type, n) VALUES (%s, 1) ON CONFLICT (type) DO UPDATE SET n = counts.n + 1",
                    (event.type,),
                )

    return handle


WORKER = Worker(Consumer(["#"], _on_event))
