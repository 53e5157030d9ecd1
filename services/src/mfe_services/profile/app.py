"""profile (3004): the caller's profile, read through a Redis cache; created from user.registered."""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from mfe_services.common.events import Event, Handler
from mfe_services.common.openapi import obj, operation
from mfe_services.common.settings import Settings
from mfe_services.common.web import Consumer, Resources, create_app, json_body, require_user, resources

log = logging.getLogger("mfe.profile")
CACHE_TTL = 300
EDITABLE = {"display_name": 100, "bio": 2000, "avatar_url": 2000}
COLUMNS = "user_id, email, display_name, bio, avatar_url, created_at, updated_at"


TEXT = {"type": ["string", "null"]}
PROFILE = obj(
    {
        "user_id": {"type": "string", "format": "uuid"},
        "email": {"type": "string"},
        "display_name": TEXT,
        "bio": TEXT,
        "avatar_url": TEXT,
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
    ["user_id", "email", "display_name", "bio", "avatar_url", "created_at", "updated_at"],
)
ONE = obj({"profile": PROFILE}, ["profile"])


def _json(row: Any) -> dict[str, Any]:
    return {
        "user_id": str(row[0]),
        "email": row[1],
        "display_name": row[2],
        "bio": row[3],
        "avatar_url": row[4],
        "created_at": row[5].isoformat(),
        "updated_at": row[6].isoformat(),
    }


def _key(user_id: str) -> str:
    return f"profile:{user_id}"


async def _cache_get(res: Resources, user_id: str) -> dict[str, Any] | None:
    try:
        raw = await res.redis.get(_key(user_id))
    except Exception:  # a cache outage slows reads down, it does not fail them
        log.warning("profile cache unavailable")
        return None
    return json.loads(raw) if raw else None


@operation("The caller's profile (X-Cache: hit or miss)", auth=True, responses={200: ONE, 404: None})
async def get_me(request: Request) -> Response:
    claims = require_user(request)
    res = resources(request)
    cached = await _cache_get(res, claims.user_id)
    if cached is not None:
        return JSONResponse({"profile": cached}, headers={"X-Cache": "hit"})
    async with res.pool.connection() as conn:
        cur = await conn.execute(f"SELECT {COLUMNS} FROM profiles WHERE user_id = %s", (claims.user_id,))
        row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, "profile not found (it is created shortly after registration)")
    profile = _json(row)
    try:
        await res.redis.set(_key(claims.user_id), json.dumps(profile), ex=CACHE_TTL)
    except Exception:
        log.warning("profile cache unavailable")
    return JSONResponse({"profile": profile}, headers={"X-Cache": "miss"})


@operation(
    "Change the caller's profile: any of display_name, bio, avatar_url",
    auth=True,
    body={
        **obj({name: {"type": "string", "maxLength": most} for name, most in EDITABLE.items()}, closed=True),
        "minProperties": 1,
    },
    responses={200: ONE, 404: None, 422: None},
)
async def update_me(request: Request) -> Response:
    claims = require_user(request)
    res = resources(request)
    body = await json_body(request)
    changes = {k: v for k, v in body.items() if k in EDITABLE}
    unknown = sorted(set(body) - set(EDITABLE))
    if unknown:
        raise HTTPException(422, f"unknown fields: {', '.join(unknown)}")
    for key, value in changes.items():
        if not isinstance(value, str) or len(value) > EDITABLE[key]:
            raise HTTPException(422, f"{key}: a string of at most {EDITABLE[key]} characters")
    if not changes:
        raise HTTPException(422, f"nothing to update; editable: {', '.join(EDITABLE)}")
    assignments = ", ".join(f"{k} = %({k})s" for k in changes)
    async with res.pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            f"UPDATE profiles SET {assignments}, updated_at = now() WHERE user_id = %(user_id)s RETURNING {COLUMNS}",
            {**changes, "user_id": claims.user_id},
        )
        row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, "profile not found")
    # Invalidate after the commit: a reader can only repopulate the cache with the new row.
    await res.redis.delete(_key(claims.user_id))
    return JSONResponse({"profile": _json(row)})


def _on_event(res: Resources) -> Handler:
    async def handle(event: Event) -> None:
        if event.type != "user.registered":
            return
        data = event.data
        async with res.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO profiles (user_id, email, display_name) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (data["user_id"], data["email"], data.get("name", "")),
            )

    return handle


ROUTES = [
    Route("/api/profile/me", get_me, methods=["GET"]),
    Route("/api/profile/me", update_me, methods=["PUT"]),
]


def build(settings: Settings) -> ASGIApp:
    return create_app(settings, ROUTES, consumer=Consumer(["user.registered"], _on_event))
