"""admin (3003): admin role only. Records every event it consumes; serves them paged, and stats."""

from __future__ import annotations

import json
from typing import Any

from psycopg.types.json import Jsonb
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from mfe_services.common.events import Event, Handler
from mfe_services.common.settings import Settings
from mfe_services.common.web import Consumer, Resources, create_app, require_user, resources


def _require_admin(request: Request) -> None:
    if require_user(request).role != "admin":
        raise HTTPException(403, "admin role required")


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    try:
        return min(max(int(request.query_params.get(name, str(default))), low), high)
    except ValueError:
        raise HTTPException(422, f"{name}: an integer") from None


async def events(request: Request) -> Response:
    _require_admin(request)
    res = resources(request)
    limit = _int(request, "limit", 50, 1, 500)
    after = _int(request, "after", 0, 0, 2**62)  # keyset paging on seq: stable while events arrive
    event_type = request.query_params.get("type")
    query = "SELECT seq, event_id, type, source, data, occurred_at, received_at FROM events WHERE seq > %s"
    params: list[Any] = [after]
    if event_type:
        query += " AND type = %s"
        params.append(event_type)
    query += " ORDER BY seq LIMIT %s"
    params.append(limit)
    async with res.pool.connection() as conn:
        rows = await (await conn.execute(query, params)).fetchall()
    items = [
        {
            "seq": r[0],
            "id": str(r[1]),
            "type": r[2],
            "source": r[3],
            "data": r[4] if isinstance(r[4], dict) else json.loads(r[4]),
            "occurred_at": r[5].isoformat(),
            "received_at": r[6].isoformat(),
        }
        for r in rows
    ]
    next_after = items[-1]["seq"] if len(items) == limit else None
    return JSONResponse({"events": items, "next_after": next_after})


async def stats(request: Request) -> Response:
    _require_admin(request)
    res = resources(request)
    async with res.pool.connection() as conn:
        rows = await (await conn.execute("SELECT type, count(*) FROM events GROUP BY type ORDER BY type")).fetchall()
    by_type = {r[0]: r[1] for r in rows}
    return JSONResponse({"total": sum(by_type.values()), "by_type": by_type})


def _on_event(res: Resources) -> Handler:
    async def handle(event: Event) -> None:
        async with res.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO events (event_id, type, source, data, occurred_at) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (event_id) DO NOTHING",
                (event.id, event.type, event.source, Jsonb(event.data), event.occurred_at),
            )

    return handle


def build(settings: Settings) -> ASGIApp:
    routes = [
        Route("/api/admin/events", events, methods=["GET"]),
        Route("/api/admin/stats", stats, methods=["GET"]),
    ]
    return create_app(settings, routes, consumer=Consumer(["#"], _on_event))
