"""auth (3001): register, login, rotating refresh tokens with reuse detection, logout, me."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from mfe_services.common import outbox, tokens
from mfe_services.common.openapi import obj, operation
from mfe_services.common.settings import Settings
from mfe_services.common.web import create_app, json_body, require_user, resources

# OWASP's argon2id baseline (19 MiB, 2 passes): safe, and light enough for 256 MiB containers.
HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,}")  # fullmatch: `$` would let a trailing newline in
# A real hash to verify against when the email is unknown, so both paths cost the same.
_DUMMY_HASH = HASHER.hash(secrets.token_hex(16))


USER = obj(
    {
        "id": {"type": "string", "format": "uuid"},
        "email": {"type": "string"},
        "name": {"type": "string"},
        "role": {"enum": ["user", "admin"]},
        "created_at": {"type": "string", "format": "date-time"},
    },
    ["id", "email", "name", "role", "created_at"],
)
PAIR = obj(
    {
        "access_token": {"type": "string"},
        "refresh_token": {"type": "string"},
        "token_type": {"const": "Bearer"},
        "expires_in": {"type": "integer"},
    },
    ["access_token", "refresh_token", "token_type", "expires_in"],
)
REFRESH = obj({"refresh_token": {"type": "string"}}, ["refresh_token"])
# What a pair leads to: its refresh token refreshes (once) or logs out.
WITH_PAIR = {
    name: {"operationId": operation_id, "requestBody": {"refresh_token": "$response.body#/refresh_token"}}
    for name, operation_id in (("Refresh", "post_refresh"), ("Logout", "post_logout"))
}


def _user_json(row: Any) -> dict[str, Any]:
    return {
        "id": str(row[0]),
        "email": row[1],
        "name": row[2],
        "role": row[3],
        "created_at": row[4].isoformat(),
    }


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@operation(
    "Register a user (role user); user.registered is published",
    body=obj(
        {
            "email": {"type": "string", "pattern": r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,}$"},
            "password": {"type": "string", "minLength": 8, "maxLength": 1024},
            "name": {"type": "string", "maxLength": 200},
        },
        ["email", "password"],
    ),
    responses={201: obj({"user": USER}, ["user"]), 409: None, 422: None},
    links={
        201: {
            "Login": {
                "operationId": "post_login",
                "requestBody": {"email": "$request.body#/email", "password": "$request.body#/password"},
            }
        }
    },
)
async def register(request: Request) -> Response:
    res = resources(request)
    body = await json_body(request)
    email = str(body.get("email", "")).strip().lower()
    password = body.get("password")
    name = body.get("name", "")
    if not EMAIL.fullmatch(email):
        raise HTTPException(422, "email: not a valid address")
    if not isinstance(name, str) or len(name) > 200:  # was cut at 200 in silence: the caller never knew
        raise HTTPException(422, "name: a string of at most 200 characters")
    if not isinstance(password, str) or not 8 <= len(password) <= 1024:
        raise HTTPException(422, "password: 8 to 1024 characters")
    password_hash = await run_in_threadpool(HASHER.hash, password)
    role = "user"  # administrators are made by an operator: `mfe-deploy admin grant`
    user_id = uuid.uuid4()
    async with res.pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            "INSERT INTO users (id, email, name, password_hash, role) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (email) DO NOTHING RETURNING id, email, name, role, created_at",
            (user_id, email, name, password_hash, role),
        )
        row = await cur.fetchone()
        if row is None:
            raise HTTPException(409, "email: already registered")
        event = res.event("user.registered", {"user_id": str(user_id), "email": email, "name": name})
        await outbox.add(conn, event)
    if res.relay is not None:
        res.relay.wake.set()
    return JSONResponse({"user": _user_json(row)}, status_code=201)


async def _issue_pair(conn: Any, settings: Settings, user: Any, family: uuid.UUID) -> dict[str, Any]:
    refresh = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + timedelta(seconds=settings.jwt_refresh_expires_in)
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at) VALUES (%s, %s, %s, %s)",
        (_hash_token(refresh), user[0], family, expires),
    )
    if settings.signer is None:  # build() refuses to start without it
        raise RuntimeError("JWT_SIGNING_KEY is not set")
    access = tokens.issue(
        settings.signer, user_id=str(user[0]), email=user[1], role=user[2], ttl=settings.jwt_expires_in
    )
    return {
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": settings.jwt_expires_in,
    }


@operation(
    "An access token and a refresh token for an email and password",
    body=obj({"email": {"type": "string"}, "password": {"type": "string"}}, ["email", "password"]),
    responses={200: PAIR, 401: None},
    links={200: WITH_PAIR},
)
async def login(request: Request) -> Response:
    res = resources(request)
    body = await json_body(request)
    email = str(body.get("email", "")).strip().lower()
    password = str(body.get("password", ""))
    async with res.pool.connection() as conn:
        cur = await conn.execute("SELECT id, email, role, password_hash FROM users WHERE email = %s", (email,))
        user = await cur.fetchone()
    try:
        await run_in_threadpool(HASHER.verify, user[3] if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        user = None
    if user is None:
        raise HTTPException(401, "invalid email or password")
    async with res.pool.connection() as conn, conn.transaction():
        pair = await _issue_pair(conn, res.settings, user, uuid.uuid4())
    return JSONResponse(pair)


@operation(
    "A new pair for a refresh token, used once (reuse revokes the whole login)",
    body=REFRESH,
    responses={200: PAIR, 401: None},
    links={200: WITH_PAIR},
)
async def refresh(request: Request) -> Response:
    res = resources(request)
    body = await json_body(request)
    presented = str(body.get("refresh_token", ""))
    async with res.pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            "SELECT t.family, t.used_at, t.revoked_at, t.expires_at, u.id, u.email, u.role "
            "FROM refresh_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = %s FOR UPDATE OF t",
            (_hash_token(presented),),
        )
        row = await cur.fetchone()
        if row is None:
            raise HTTPException(401, "invalid refresh token")
        family, used_at, revoked_at, expires_at = row[0], row[1], row[2], row[3]
        if used_at is not None or revoked_at is not None:
            # Reuse of a rotated token means it leaked: end the whole family, the thief's copy included.
            await conn.execute(
                "UPDATE refresh_tokens SET revoked_at = now() WHERE family = %s AND revoked_at IS NULL",
                (family,),
            )
            reused = True
        else:
            reused = False
            if expires_at <= datetime.now(UTC):
                raise HTTPException(401, "refresh token expired")
            await conn.execute(
                "UPDATE refresh_tokens SET used_at = now() WHERE token_hash = %s", (_hash_token(presented),)
            )
            pair = await _issue_pair(conn, res.settings, (row[4], row[5], row[6]), family)
    if reused:
        raise HTTPException(401, "refresh token reuse detected; all sessions of this login were revoked")
    return JSONResponse(pair)


@operation("Revoke the refresh tokens of this login", body=REFRESH, responses={204: None, 422: None})
async def logout(request: Request) -> Response:
    res = resources(request)
    body = await json_body(request)
    presented = body.get("refresh_token")
    if not isinstance(presented, str):  # a 204 for a body naming no token said a logout happened
        raise HTTPException(422, "refresh_token: the refresh token of the login to end")
    async with res.pool.connection() as conn, conn.transaction():
        await conn.execute(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE revoked_at IS NULL AND family = "
            "(SELECT family FROM refresh_tokens WHERE token_hash = %s)",
            (_hash_token(presented),),
        )
    return Response(status_code=204)


@operation("The caller", auth=True, responses={200: obj({"user": USER}, ["user"])})
async def me(request: Request) -> Response:
    claims = require_user(request)
    res = resources(request)
    async with res.pool.connection() as conn:
        cur = await conn.execute("SELECT id, email, name, role, created_at FROM users WHERE id = %s", (claims.user_id,))
        row = await cur.fetchone()
    if row is None:
        raise HTTPException(401, "user no longer exists")
    return JSONResponse({"user": _user_json(row)})


ROUTES = [
    Route("/api/auth/register", register, methods=["POST"]),
    Route("/api/auth/login", login, methods=["POST"]),
    Route("/api/auth/refresh", refresh, methods=["POST"]),
    Route("/api/auth/logout", logout, methods=["POST"]),
    Route("/api/auth/me", me, methods=["GET"]),
]


def build(settings: Settings) -> ASGIApp:
    if settings.signer is None:
        raise RuntimeError("JWT_SIGNING_KEY is not set: auth signs the access tokens")
    if settings.signer.kid not in settings.keys.keys:
        raise RuntimeError(f"JWT_PUBLIC_KEYS lacks {settings.signer.kid}, the signing key's")
    return create_app(settings, ROUTES, publishes=True)
