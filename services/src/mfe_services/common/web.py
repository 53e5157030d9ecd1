"""What every service app shares: lifespan resources, /health, /version, request ids, JSON errors."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from mfe_services.common import health, logs, openapi, redisconn, reporting, tokens
from mfe_services.common.events import Event, EventBus, Handler, create_bus
from mfe_services.common.guard import Guard
from mfe_services.common.metrics import Metrics
from mfe_services.common.outbox import Relay
from mfe_services.common.redisconn import redis_client
from mfe_services.common.settings import Settings

log = logging.getLogger("mfe.web")
MAX_DEPTH = 32


# Database connections a service holds open, and has open before /health says healthy: a new container
# takes its share of the traffic at once, and a pool of one, growing a connection at a time (a TLS and
# SCRAM handshake each, seconds on a starved host), made the first requests wait past the pool's timeout
# (a CI-like run: a 500 on GET /api/auth/me, and auth's /health "database: unhealthy", just after the
# replacement took traffic).
POOL_WARM = 4


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


def resources(request: Request) -> Resources:
    res: Resources = request.app.state.resources
    return res


def require_user(request: Request) -> tokens.Claims:
    token = tokens.bearer(request.headers.get("authorization"))
    if token is None:
        raise HTTPException(401, "missing bearer token")
    try:
        claims = tokens.verify(resources(request).settings.keys, token)
    except tokens.InvalidToken as exc:
        raise HTTPException(401, f"invalid token: {exc}") from None
    request.state.user_id = claims.user_id  # for the access log
    return claims


def query_params(request: Request, *known: str) -> dict[str, str]:
    """The query's parameters, refusing any this route does not read (a typo such as `limt=5` silently
    answered the default page)."""
    unknown = sorted({name for name in request.query_params if name not in known})
    if unknown:
        names = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise HTTPException(422, f"unknown query parameter {names}; this route reads: {', '.join(known)}")
    return dict(request.query_params)


async def json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except RecursionError:
        raise HTTPException(400, f"request body: JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        raise HTTPException(400, "request body must be JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "request body must be a JSON object")
    problem = _unstorable(body)
    if problem is not None:
        raise HTTPException(400, f"request body: {problem}")
    return body


def _unstorable(value: Any) -> str | None:
    """What PostgreSQL would refuse with a 500 later: NUL characters and lone surrogates in text (JSON's
    \\u0000 and \\ud800 escapes), and nesting no route needs."""
    stack: list[tuple[str, Any, int]] = [("", value, 1)]
    while stack:
        path, item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"JSON nested deeper than {MAX_DEPTH} levels"
        if isinstance(item, dict):
            for key, child in item.items():
                stack.append((f"{path}.{key}" if path else key, child, depth + 1))
                stack.append((path or "(key)", key, depth + 1))
        elif isinstance(item, list):
            stack += [(f"{path}[{n}]", child, depth + 1) for n, child in enumerate(item)]
        elif isinstance(item, str):
            if "\x00" in item:
                return f"{path or 'value'}: text must not contain NUL characters"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return f"{path or 'value'}: text must be valid Unicode (a lone surrogate escape)"
    return None


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    # Logged once, with its request, by the Guard around the app (Starlette re-raises after answering).
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
) -> ASGIApp:
    logs.configure(settings.service, settings.log_level)
    reporting.init(settings)  # before the app is built: Sentry's Starlette integration patches it
    res = Resources(settings=settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from psycopg_pool import AsyncConnectionPool

        if database and settings.database_url:
            res.pool = AsyncConnectionPool(
                settings.database_url,
                min_size=POOL_WARM,
                max_size=10,
                open=False,
                timeout=5,
                check=AsyncConnectionPool.check_connection,
                kwargs={"connect_timeout": 3},
            )
            await res.pool.open(wait=False)
        if settings.redis_url:
            res.redis = redis_client(settings.redis_url, socket_timeout=2)
        connecting: asyncio.Task[None] | None = None
        if consumer is not None or publishes:
            res.bus = create_bus(
                settings.event_hub,
                settings.service,
                rabbitmq_url=settings.rabbitmq_url,
                redis_url=settings.redis_url,
            )
            # The broker may be away at start: serve anyway (health says so) and connect in the background.
            connecting = asyncio.create_task(connect_bus(res.bus, consumer, res))
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

    verdict = health.Verdict()

    async def health_route(request: Request) -> Response:
        checks: dict[str, health.Check | None] = {}
        if database:
            checks["database"] = _db_check(res) if res.pool is not None else None
        checks["redis"] = (lambda: redisconn.ping(res.redis)) if res.redis is not None else None
        uses_rabbit = settings.event_hub == "rabbitmq" and res.bus is not None
        checks["rabbitmq"] = res.bus.ping if uses_rabbit and res.bus is not None else None
        if extra_checks is not None:
            checks.update(extra_checks(res))
        status, body = await verdict.report(checks)
        return JSONResponse(body, status_code=status)

    async def live(request: Request) -> Response:
        return JSONResponse({"status": "alive", "service": settings.service, "version": settings.version})

    async def version(request: Request) -> Response:
        return JSONResponse({"service": settings.service, "version": settings.version})

    base = "/api/" + settings.service.removesuffix("-gateway")
    described = openapi.document(settings.service, settings.version, routes, f"{base}/version")

    async def openapi_route(request: Request) -> Response:
        return JSONResponse(described)

    app = Starlette(
        routes=[
            Route("/health", health_route),
            Route("/health/live", live),
            Route(f"{base}/version", version),
            Route("/openapi.json", openapi_route),
            *routes,
        ],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.resources = res
    app.router.redirect_slashes = False  # a redirect would name the service's own address, not the gateway's
    metrics = Metrics(settings.service)
    metrics.watch(
        pool=lambda: res.pool.get_stats() if res.pool is not None else None,
        hub=lambda: bool(res.extra.get("bus_ready")) if res.bus is not None else None,
    )
    return Guard(app, max_body=settings.max_body, metrics=metrics)


async def connect_bus(bus: EventBus, consumer: Consumer | None, res: Resources) -> None:
    """Start the bus and the consumer, trying again (backing off to 5 s) while the hub is away; then
    `bus_ready` (what health and a worker's heartbeat look at)."""
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


# How long the database check waits for a pooled connection: less than the check's own bound
# (health.CHECK_TIMEOUT), so that a pool that cannot connect is seen as such, not as a slow check.
POOL_WAIT = 0.8


def _db_check(res: Resources) -> health.Check:
    async def check() -> None:
        from psycopg_pool import PoolTimeout

        try:
            async with res.pool.connection(timeout=POOL_WAIT) as conn:
                await conn.execute("SELECT 1")
        except PoolTimeout:
            # Every connection serving a request (a busy service, not a lost database): slow, which
            # /health forgives for health.SLOW_GRACE. A pool that cannot open connections is not full.
            stats = res.pool.get_stats()
            if stats.get("pool_size", 0) >= res.pool.max_size and not stats.get("pool_available", 0):
                raise TimeoutError("every database connection is serving a request") from None
            raise
        if not res.extra.get("pool_warm"):
            # Not ready for a share of the traffic until the pool has opened its first POOL_WARM connections
            # (once: a pool that later shrinks or reconnects stays warm). The pool's `pool_size` counts the
            # connections it is still opening too, so it cannot tell; what it has opened can.
            stats = res.pool.get_stats()
            opened = stats.get("connections_num", 0) - stats.get("connections_errors", 0)
            if opened < POOL_WARM:
                raise RuntimeError(f"{opened} of {POOL_WARM} database connections open")
            res.extra["pool_warm"] = True

    return check
