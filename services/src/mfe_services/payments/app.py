"""payments (3002): create (idempotent with Idempotency-Key), list and get the caller's payments."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from mfe_services.common import outbox
from mfe_services.common.openapi import obj, operation, query
from mfe_services.common.settings import Settings
from mfe_services.common.web import create_app, json_body, query_params, require_user, resources

CURRENCY = re.compile(r"[A-Z]{3}")  # fullmatch: `$` let "EUR\n" through to the database
MAX_AMOUNT = 10**12
COLUMNS = "id, user_id, amount, currency, description, status, created_at"


PAYMENT = obj(
    {
        "id": {"type": "string", "format": "uuid"},
        "user_id": {"type": "string", "format": "uuid"},
        "amount": {"type": "integer", "minimum": 1, "maximum": MAX_AMOUNT},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "description": {"type": "string"},
        "status": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
    },
    ["id", "user_id", "amount", "currency", "description", "status", "created_at"],
)
ONE = obj({"payment": PAYMENT}, ["payment"])


def _json(row: Any) -> dict[str, Any]:
    return {
        "id": str(row[0]),
        "user_id": str(row[1]),
        "amount": row[2],
        "currency": row[3].strip(),
        "description": row[4],
        "status": row[5],
        "created_at": row[6].isoformat(),
    }


@operation(
    "Create a payment of the caller; with Idempotency-Key a retry answers the first (200)",
    auth=True,
    body=obj(
        {
            "amount": {"type": "integer", "minimum": 1, "maximum": MAX_AMOUNT},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "description": {"type": "string", "maxLength": 500},
        },
        ["amount", "currency"],
    ),
    parameters=[
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        }
    ],
    responses={201: ONE, 200: ONE, 409: None, 422: None},
    links={
        status: {
            "GetPayment": {"operationId": "get_get_one", "parameters": {"payment_id": "$response.body#/payment/id"}}
        }
        for status in (200, 201)
    },
)
async def create(request: Request) -> Response:
    claims = require_user(request)
    res = resources(request)
    body = await json_body(request)
    amount, currency = body.get("amount"), body.get("currency")
    description = body.get("description", "")
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount <= MAX_AMOUNT:
        raise HTTPException(422, "amount: a positive integer in minor units (e.g. cents)")
    if not isinstance(currency, str) or not CURRENCY.fullmatch(currency):
        raise HTTPException(422, "currency: a three-letter ISO 4217 code such as EUR")
    if not isinstance(description, str) or len(description) > 500:
        raise HTTPException(422, "description: a string of at most 500 characters")
    key = request.headers.get("idempotency-key")
    if key is not None and not 1 <= len(key) <= 255:
        raise HTTPException(422, "Idempotency-Key: 1 to 255 characters")
    fingerprint = hashlib.sha256(json.dumps([amount, currency, description]).encode()).hexdigest()
    payment_id = uuid.uuid4()
    async with res.pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            "INSERT INTO payments (id, user_id, amount, currency, description, idempotency_key, request_hash) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (user_id, idempotency_key) DO NOTHING "
            f"RETURNING {COLUMNS}",
            (payment_id, claims.user_id, amount, currency, description, key, fingerprint),
        )
        row = await cur.fetchone()
        if row is not None:
            payment = _json(row)
            await outbox.add(conn, res.event("payment.created", payment))
    if row is not None:
        if res.relay is not None:
            res.relay.wake.set()
        return JSONResponse({"payment": payment}, status_code=201)
    # A retry: same key, same caller. Answer with the original, or refuse a different request.
    async with res.pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT {COLUMNS}, request_hash FROM payments WHERE user_id = %s AND idempotency_key = %s",
            (claims.user_id, key),
        )
        existing = await cur.fetchone()
    assert existing is not None
    if existing[7] != fingerprint:
        raise HTTPException(409, "Idempotency-Key was already used with a different request")
    return JSONResponse({"payment": _json(existing)}, status_code=200, headers={"Idempotent-Replayed": "true"})


@operation(
    "The caller's payments, newest first",
    auth=True,
    parameters=[query("limit", {"type": "integer"}, "At most this many (1 to 200; default 50)")],
    responses={200: obj({"payments": {"type": "array", "items": PAYMENT}}, ["payments"]), 422: None},
)
async def list_mine(request: Request) -> Response:
    claims = require_user(request)
    res = resources(request)
    try:
        limit = min(max(int(query_params(request, "limit").get("limit", "50")), 1), 200)
    except ValueError:
        raise HTTPException(422, "limit: an integer") from None
    async with res.pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT {COLUMNS} FROM payments WHERE user_id = %s ORDER BY created_at DESC, id LIMIT %s",
            (claims.user_id, limit),
        )
        rows = await cur.fetchall()
    return JSONResponse({"payments": [_json(r) for r in rows]})


@operation("One payment of the caller", auth=True, responses={200: ONE, 404: None})
async def get_one(request: Request) -> Response:
    claims = require_user(request)
    res = resources(request)
    try:
        payment_id = uuid.UUID(request.path_params["payment_id"])
    except ValueError:
        raise HTTPException(404, "payment not found") from None
    async with res.pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT {COLUMNS} FROM payments WHERE id = %s AND user_id = %s",
            (payment_id, claims.user_id),
        )
        row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, "payment not found")
    return JSONResponse({"payment": _json(row)})


ROUTES = [
    Route("/api/payments", create, methods=["POST"]),
    Route("/api/payments", list_mine, methods=["GET"]),
    Route("/api/payments/{payment_id}", get_one, methods=["GET"]),
]


def build(settings: Settings) -> ASGIApp:
    return create_app(settings, ROUTES, publishes=True)
