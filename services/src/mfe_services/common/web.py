"""What every service app shares: lifespan resources, /health, /version, request ids, JSON errors."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mfe_services.common import health, logs, tokens
from mfe_services.common.events import Event, EventBus, Handler, create_bus
from mfe_services.common.outbox import Relay
from mfe_services.common.settings import Settings

log = logging.getLogger("mfe.web")


@dataclass
class Resources:
    settings: Settings
    pool: Any = None
    redis: Any = None
    bus: EventBus | None = None
    relay: Relay | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def event(self, type: str, data: dict[str, Any]) -> Event:
        return Event(type=type, source=self.settings.service, data=data)


@dataclass(frozen=True)
class Consumer:
    patterns: Sequence[str]
    handler: Callable[[Resources], Handler]


class RequestId:
    """Keeps the caller's X-Request-ID (or makes one), logs with it, and echoes it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = next((v.decode() for k, v in scope["headers"] if k == b"x-request-id"), "") or uuid.uuid4().hex
        token = logs.request_id.set(rid[:128])

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid[:128].encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logs.request_id.reset(token)


def resources(request: Request) -> Resources:
    res: Resources = request.app.state.resources
    return res


def require_user(request: Request) -> tokens.Claims:
    token = tokens.bearer(request.headers.get("authorization"))
    if token is None:
        raise HTTPException(401, "missing bearer token")
    try:
        return tokens.verify(resources(request).settings.jwt_secret, token)
    except tokens.InvalidToken as exc:
        raise HTTPException(401, f"invalid token: {exc}") from None


async def json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise HTTPException(400, "request body must be JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "request body must be a JSON object")
    return body


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error")
    return JSONResponse({"error": "internal error"}, status_code=500)


def create_app(
    settings: Settings,
    routes: Sequence[BaseRoute],
    *,
    database: bool = True,
    consumer: Consumer | None = None,
    publishes: bool = False,
    extra_checks: Callable[[Resources], dict[str, health.Check | None]] | None = None,
    on_start: Callable[[Resources], Awaitable[None]] | None = None,
) -> Starlette:
    logs.configure(settings.service, settings.log_level)
    res = Resources(settings=settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        import redis.asyncio as redis
        from psycopg_pool import AsyncConnectionPool

        if database and settings.database_url:
            res.pool = AsyncConnectionPool(
                settings.database_url, min_size=1, max_size=10, open=False, timeout=5,
                check=AsyncConnectionPool.check_connection, kwargs={"connect_timeout": 3},
            )  # fmt: skip
            await res.pool.open(wait=False)
        if settings.redis_url:
            res.redis = redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        connecting: asyncio.Task[None] | None = None
        if consumer is not None or publishes:
            res.bus = create_bus(
                settings.event_hub,
                settings.service,
                rabbitmq_url=settings.rabbitmq_url,
                redis_url=settings.redis_url,
            )
            # The broker may be away at start: serve anyway (health says so) and connect in the background.
            connecting = asyncio.create_task(_connect(res.bus, consumer, res))
            if publishes and res.pool is not None:
                res.relay = Relay(res.pool, res.bus)
                res.relay.start()
        if on_start is not None:
            await on_start(res)
        log.info("started", extra={"fields": {"port": settings.port, "event_hub": settings.event_hub}})
        try:
            yield
        finally:
            if connecting is not None:
                connecting.cancel()
                await asyncio.gather(connecting, return_exceptions=True)
            if res.relay is not None:
                await res.relay.stop()
            if res.bus is not None:
                await res.bus.close()
            if res.redis is not None:
                await res.redis.aclose()
            if res.pool is not None:
                await res.pool.close()

    async def health_route(request: Request) -> Response:
        checks: dict[str, health.Check | None] = {}
        if database:
            checks["database"] = _db_check(res) if res.pool is not None else None
        checks["redis"] = res.redis.ping if res.redis is not None else None
        uses_rabbit = settings.event_hub == "rabbitmq" and res.bus is not None
        checks["rabbitmq"] = res.bus.ping if uses_rabbit and res.bus is not None else None
        if extra_checks is not None:
            checks.update(extra_checks(res))
        status, body = await health.report(checks)
        return JSONResponse(body, status_code=status)

    async def live(request: Request) -> Response:
        return JSONResponse({"status": "alive", "service": settings.service, "version": settings.version})

    async def version(request: Request) -> Response:
        return JSONResponse({"service": settings.service, "version": settings.version})

    base = "/api/" + settings.service.removesuffix("-gateway")
    app = Starlette(
        routes=[
            Route("/health", health_route),
            Route("/health/live", live),
            Route(f"{base}/version", version),
            *routes,
        ],
        middleware=[Middleware(RequestId)],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.resources = res
    return app


async def _connect(bus: EventBus, consumer: Consumer | None, res: Resources) -> None:
    delay = 0.5
    while True:
        try:
            await bus.start()
            if consumer is not None:
                await bus.consume(consumer.patterns, consumer.handler(res))
            res.extra["bus_ready"] = True
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("event hub not reachable yet: %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _db_check(res: Resources) -> health.Check:
    async def check() -> None:
        async with res.pool.connection(timeout=1) as conn:
            await conn.execute("SELECT 1")

    return check
