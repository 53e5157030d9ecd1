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
from mfe_services.common.openapi import obj, operation, query
from mfe_services.common.settings import Settings
from mfe_services.common.web import Consumer, Resources, create_app, query_params, require_user, resources


def _require_admin(request: Request) -> None:
    if require_user(request).role != "admin":
        raise HTTPException(403, "admin role required")


def _int(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    try:
        return min(max(int(params.get(name, str(default))), low), high)
    except ValueError:
        raise HTTPException(422, f"{name}: an integer") from None


EVENT = obj(
    {
        "seq": {"type": "integer"},
        "id": {"type": "string", "format": "uuid"},
        "type": {"type": "string"},
        "source": {"type": "string"},
        "data": {"type": "object"},
        "occurred_at": {"type": "string", "format": "date-time"},
        "received_at": {"type": "string", "format": "date-time"},
    },
    ["seq", "id", "type", "source", "data", "occurred_at", "received_at"],
)


@operation(
    "Every event admin recorded, in order, paged by seq (admin role)",
    auth=True,
    parameters=[
        query("limit", {"type": "integer"}, "At most this many (1 to 500; default 50)"),
        query("after", {"type": "integer"}, "Only events after this seq (the last page's next_after)"),
        query("type", {"type": "string"}, "Only events of this type"),
    ],
    responses={
        200: obj(
            {"events": {"type": "array", "items": EVENT}, "next_after": {"type": ["integer", "null"]}},
            ["events", "next_after"],
        ),
        403: None,
        422: None,
    },
)
async def events(request: Request) -> Response:
    _require_admin(request)
    res = resources(request)
    given = query_params(request, "limit", "after", "type")
    limit = _int(given, "limit", 50, 1, 500)
    after = _int(given, "after", 0, 0, 2**62)  # keyset paging on seq: stable while events arrive
    event_type = given.get("type")
    if event_type is not None and "\x00" in event_type:  # PostgreSQL text holds no NUL: it was a 500
        raise HTTPException(422, "type: an event type holds no NUL character")
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


@operation(
    "How many events of each type (admin role)",
    auth=True,
    responses={
        200: obj(
            {"total": {"type": "integer"}, "by_type": {"type": "object", "additionalProperties": {"type": "integer"}}},
            ["total", "by_type"],
        ),
        403: None,
    },
)
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


ROUTES = [
    Route("/api/admin/events", events, methods=["GET"]),
    Route("/api/admin/stats", stats, methods=["GET"]),
]


def build(settings: Settings) -> ASGIApp:
    return create_app(settings, ROUTES, consumer=Consumer(["#"], _on_event))
