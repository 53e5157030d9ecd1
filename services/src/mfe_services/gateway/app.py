"""api-gateway (3000): routes /api/<service>/* to the services, verifies the JWT first on protected
routes, keeps or makes X-Request-ID, answers CORS. A plain ASGI app: it is the hot path of every call."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mfe_services.common import guard, health, logs, openapi, reporting, tokens
from mfe_services.common.metrics import Metrics
from mfe_services.common.settings import Settings
from mfe_services.gateway.maintenance import Maintenance
from mfe_services.gateway.upstream import (
    RETRY_PAUSE,
    Connection,
    Headers,
    Pool,
    UpstreamError,
    hop_by_hop,
    request_head,
)

log = logging.getLogger("mfe.gateway")
RESPONSE_TIMEOUT = 60.0
SLOW_HEAD = 5.0  # an answer's head later than this is logged (where a client's timeout leaves no trace)
ATTEMPTS = 3  # sends of one request that may be seen twice, when its connection fails before an answer
DEFAULT_ALLOW = b"authorization, content-type, idempotency-key, x-request-id"
# Methods a server may see twice with the same effect (RFC 9110, 9.2.2); a request with an Idempotency-Key is
# deduplicated by the service, so it may be sent again too.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Expect is answered to the client by the server in front of us (uvicorn sends 100 Continue when the body
# is first read); forwarded, the upstream's 100 would be one more response on the pooled connection.
SKIP_REQUEST = {
    b"expect",
    b"host",
    b"x-request-id",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"content-length",
}


def _json(status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]]) -> tuple[Message, Message]:
    return _raw_json(status, json.dumps(body).encode(), extra)


def _raw_json(status: int, data: bytes, extra: list[tuple[bytes, bytes]]) -> tuple[Message, Message]:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *extra]
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": data},
    )


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pools: dict[str, Pool] = {}
        self.prefixes: list[tuple[str, str]] = []
        for name, url in settings.upstreams.items():
            parts = urlsplit(url)
            self.pools[name] = Pool(parts.hostname or "127.0.0.1", parts.port or 80)
            self.prefixes.append((settings.routes[name].prefix, name))
        # Longest prefix first: /api/auth/admin (a service of its own) wins over /api/auth.
        self.prefixes.sort(key=lambda item: len(item[0]), reverse=True)
        # Exactly what is declared, plus each route's own `GET {prefix}/version` (its build, for probes):
        # a path is compared whole, never by its ending.
        declared = {pair for route in settings.routes.values() for pair in route.public}
        self.public = frozenset(declared | {("GET", f"{r.prefix}/version") for r in settings.routes.values()})
        self.cors_origin = settings.cors_origin.encode()
        reporting.init(settings)
        self.maintenance = Maintenance(settings.maintenance_file)
        self.verdict = health.Verdict()  # /health does not fan out to every service on every call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        scope["mfe.route"] = self._label(scope["path"])
        await self._handle(scope, receive, send, scope["mfe.request_id"])

    async def _handle(self, scope: Scope, receive: Receive, send: Send, rid: bytes) -> None:
        headers = dict(scope["headers"])
        extra: list[tuple[bytes, bytes]] = []  # X-Request-ID is set on every answer by the Guard
        origin = headers.get(b"origin")
        if origin is not None and self.cors_origin in (b"*", origin):
            extra += [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
            if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
                await self._preflight(send, extra, headers)
                return
        path, method = scope["path"], scope["method"]
        if path == "/openapi.json" and method == "GET":
            await self._send(send, _json(200, await self._document(), extra))
            return
        if path.startswith("/health"):
            await self._health(path, send, extra)
            return
        notice = self.maintenance.current()
        if notice is not None:
            await self._send(send, _raw_json(503, notice.body, [*extra, (b"retry-after", notice.retry_after)]))
            return
        name = self._route(path)
        if name is None:
            await self._send(send, _json(404, {"error": f"no route for {path}"}, extra))
            return
        if not self._public(method, path, scope.get("raw_path")):
            token = tokens.bearer((headers.get(b"authorization") or b"").decode("latin-1"))
            try:
                if token is None:
                    raise tokens.InvalidToken("missing bearer token")
                user = tokens.verify(self.settings.keys, token).user_id
                scope.setdefault("state", {})["user_id"] = user  # for the access line
            except tokens.InvalidToken as exc:
                challenge = [(b"www-authenticate", b'Bearer error="invalid_token"')]
                await self._send(send, _json(401, {"error": f"invalid token: {exc}"}, extra + challenge))
                return
        await self._proxy(name, scope, receive, send, rid, extra)

    def _public(self, method: str, path: str, raw: bytes | None) -> bool:
        """Declared public, on a path in its one normal form: no empty, `.` or `..` segment and no encoded
        `/` (the raw path is what the upstream gets, and `a%2Fversion` is one segment here, two there)."""
        if (method, path) not in self.public:
            return False
        segments = path.split("/")[1:]
        if any(seg in ("", ".", "..") for seg in segments):
            return False
        return raw is None or b"%2f" not in raw.lower()

    def _label(self, path: str) -> str:
        """The route label of the metrics: a service prefix, /health..., or unmatched (bounded values)."""
        name = self._route(path)
        if name is not None:
            return self.settings.routes[name].prefix
        return path if path in ("/health", "/health/live") else "unmatched"

    def _route(self, path: str) -> str | None:
        for prefix, name in self.prefixes:
            if path == prefix or path.startswith(prefix + "/"):
                return name
        return None

    async def _proxy(
        self,
        name: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        rid: bytes,
        extra: list[tuple[bytes, bytes]],
    ) -> None:
        pool = self.pools[name]
        method: str = scope["method"]
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        out: list[tuple[bytes, bytes]] = [(b"host", pool.netloc)]
        forwarded = b""
        skip = hop_by_hop(scope["headers"]).union(SKIP_REQUEST)
        for key, value in scope["headers"]:
            if key == b"x-forwarded-for":
                forwarded = value + b", "
            elif key not in skip:
                out.append((key, value))
        client = scope.get("client")
        out += [
            (b"x-request-id", rid),
            (b"x-forwarded-for", forwarded + (client[0].encode() if client else b"unknown")),
            (b"x-forwarded-proto", scope.get("scheme", "http").encode()),
        ]
        first = await receive()
        if first["type"] == "http.disconnect":
            return
        body: bytes = first.get("body", b"")
        streaming = bool(first.get("more_body", False))
        if streaming:
            out.append((b"transfer-encoding", b"chunked"))
        elif body or method in ("POST", "PUT", "PATCH"):
            out.append((b"content-length", str(len(body)).encode()))
        head = request_head(method, target, out)

        replayable = method in IDEMPOTENT or any(key == b"idempotency-key" for key, _ in scope["headers"])
        conn: Connection | None = None
        for attempt in range(ATTEMPTS):
            if attempt > 1:
                await asyncio.sleep(RETRY_PAUSE)  # a replica that is going: its name leaves the DNS answer
            conn, reused = await self._acquire(name, pool, send, extra)
            if conn is None:
                return
            conn.start(head_only=method == "HEAD")
            try:
                if conn.error is not None:  # lost before a byte was written: nothing of the body is read yet
                    raise conn.error
                if streaming:
                    conn.write(head)
                    if not await self._stream_request(conn, body, receive):
                        conn.close()  # the client left mid-body: the upstream must not take a part for the whole
                        return
                else:
                    conn.write(head + body)
                status, headers = await self._head(name, conn, rid, reused, attempt)
                # Nothing goes to the client before the first piece of the body (or its end): an upstream
                # lost between its head and its body is then still ours to answer for, by a retry or a 502,
                # where forwarding the head first left the client a truncated response (CI: 1 of 756).
                chunk, more = await asyncio.wait_for(conn.next_chunk(), RESPONSE_TIMEOUT)
                break
            except UpstreamError as exc:
                conn.close()
                # The head arrived, then the connection was lost: the upstream may have done the work.
                cut = conn.head.done() and not conn.head.cancelled() and conn.head.exception() is None
                unsent = not conn.sent  # the upstream cannot have seen it: any request may go again
                again = (exc.retryable or cut) and (replayable or unsent or (reused and exc.retryable and attempt == 0))
                if again and (unsent or not streaming) and attempt < ATTEMPTS - 1:
                    # Closed before a byte of the answer: an idle connection the server dropped (a replica
                    # stopping, or its keep-alive timeout), or a new one reset before the server read it (a
                    # replica closing its socket); or closed between the head and the body. Retried on a new
                    # connection, the name resolved anew: a request the upstream may see twice up to
                    # ATTEMPTS times in all (CI: a POST with an Idempotency-Key met a stopping replica twice
                    # in 162 ms); any other only when a reused connection failed before a byte, once.
                    pool.close()
                    continue
                log.warning("upstream failed", extra={"fields": {"upstream": name, "error": str(exc)}})
                reporting.report(message=f"502 from the gateway: {name} failed")
                await self._send(send, _json(502, {"error": "upstream unavailable", "service": name}, extra))
                return
            except TimeoutError:
                conn.close()
                log.warning("upstream timed out", extra={"fields": {"upstream": name}})
                reporting.report(message=f"504 from the gateway: {name} timed out")
                await self._send(send, _json(504, {"error": "upstream timed out", "service": name}, extra))
                return
            except BaseException:
                conn.close()  # cancelled mid-exchange: its state is unknown
                raise
        assert conn is not None
        drop = hop_by_hop(headers)
        response = [(k, v) for k, v in headers if k not in drop]  # the Guard replaces X-Request-ID
        await send({"type": "http.response.start", "status": status, "headers": response + extra})
        try:
            await send({"type": "http.response.body", "body": chunk, "more_body": more})
            while more:
                chunk, more = await conn.next_chunk()
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
        except BaseException:
            conn.close()
            raise
        pool.release(conn)

    @staticmethod
    async def _head(name: str, conn: Connection, rid: bytes, reused: bool, attempt: int) -> tuple[int, Headers]:
        """The upstream's answer head, within RESPONSE_TIMEOUT; one waited for longer than SLOW_HEAD is
        logged while it is awaited (the client may give up first: then nothing else would say where)."""
        try:
            return await asyncio.wait_for(asyncio.shield(conn.head), SLOW_HEAD)
        except TimeoutError:
            peer = conn.transport.get_extra_info("peername") if conn.transport is not None else None
            fields = {"upstream": name, "address": str(peer), "reused": reused, "attempt": attempt + 1}
            log.warning("upstream slow to answer", extra={"fields": {**fields, "request_id": rid.decode()}})
        return await asyncio.wait_for(asyncio.shield(conn.head), RESPONSE_TIMEOUT - SLOW_HEAD)

    async def _acquire(
        self, name: str, pool: Pool, send: Send, extra: list[tuple[bytes, bytes]]
    ) -> tuple[Connection | None, bool]:
        try:
            return await pool.acquire()
        except UpstreamError as exc:
            # The address and errno are for the log: a client learns which service, not where it runs.
            log.warning("upstream unreachable", extra={"fields": {"upstream": name, "error": str(exc)}})
            reporting.report(message=f"502 from the gateway: {name} unreachable")
            await self._send(send, _json(502, {"error": "upstream unavailable", "service": name}, extra))
            return None, False

    @staticmethod
    async def _stream_request(conn: Connection, body: bytes, receive: Receive) -> bool:
        """Sends the request body chunked; False when the client left before its end. A body over the limit
        ends here too: the Guard's receive raises, and the connection is closed unfinished on the way out."""
        more = True
        while True:
            if body:
                conn.write(b"%x\r\n%s\r\n" % (len(body), body))
            if not more:
                break
            message = await receive()
            if message["type"] == "http.disconnect":
                return False
            body, more = message.get("body", b""), bool(message.get("more_body", False))
        conn.write(b"0\r\n\r\n")
        return True

    async def _preflight(self, send: Send, extra: list[tuple[bytes, bytes]], headers: dict[bytes, bytes]) -> None:
        allow = [
            (b"access-control-allow-methods", b"GET, POST, PUT, PATCH, DELETE, OPTIONS"),
            (b"access-control-allow-headers", headers.get(b"access-control-request-headers", DEFAULT_ALLOW)),
            (b"access-control-max-age", b"600"),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": allow + extra})
        await send({"type": "http.response.body", "body": b""})

    async def _health(self, path: str, send: Send, extra: list[tuple[bytes, bytes]]) -> None:
        if path == "/health/live":
            alive = {"status": "alive", "service": self.settings.service, "version": self.settings.version}
            await self._send(send, _json(200, alive, extra))
            return
        if path != "/health":
            await self._send(send, _json(404, {"error": f"no route for {path}"}, extra))
            return
        checks: dict[str, health.Check | None] = {name: self._probe(pool) for name, pool in self.pools.items()}
        status, body = await self.verdict.report(checks, health.UPSTREAM_CHECK_TIMEOUT)
        await self._send(send, _json(status, body, extra))

    async def _document(self) -> dict[str, Any]:
        """Every service's /openapi.json (2 s each, side by side), merged as the gateway answers them; a
        service whose document does not come is named in the description."""

        async def fetch(pool: Pool) -> dict[str, Any] | None:
            try:
                status, body = await asyncio.wait_for(self._get(pool, b"/openapi.json"), 2.0)
                document = json.loads(body) if status == 200 else None
            except (UpstreamError, TimeoutError, ValueError):
                return None
            return document if isinstance(document, dict) else None

        names = sorted(self.pools)
        found = await asyncio.gather(*(fetch(self.pools[name]) for name in names))
        prefixes = {name: self.settings.routes[name].prefix for name in names}
        return openapi.gateway_document(
            self.settings.service, self.settings.version, dict(zip(names, found, strict=True)), prefixes, self.public
        )

    @staticmethod
    async def _get(pool: Pool, target: bytes) -> tuple[int, bytes]:
        """One GET to a service on a pooled connection: its status and whole body."""
        status, body, _ = await Gateway._exchange(pool, target)
        return status, body

    @staticmethod
    async def _exchange(pool: Pool, target: bytes, conn: Connection | None = None) -> tuple[int, bytes, str]:
        """One GET on `conn` (closed after), or on a pooled connection (released after): the status, the
        whole body and the address of the replica that answered."""
        pooled = conn is None
        if conn is None:
            conn, _ = await pool.acquire()
        peer = conn.transport.get_extra_info("peername") if conn.transport is not None else None
        conn.start(head_only=False)
        conn.write(request_head("GET", target, [(b"host", pool.netloc)]))
        chunks = []
        try:
            status, _ = await conn.head
            while True:
                chunk, more = await conn.next_chunk()
                chunks.append(chunk)
                if not more:
                    break
        except BaseException:
            conn.close()
            raise
        if pooled:
            pool.release(conn)
        else:
            conn.close()
        return status, b"".join(chunks), str(peer[0]) if peer else ""

    @staticmethod
    def _probe(pool: Pool) -> health.Check:
        """A service is healthy when one of its replicas answers 200. A replica that is stopping (its idle
        connection closed under the probe, its socket gone) is not a failed service: the probe tries again
        on a new connection, the name resolved anew, until the check's timeout (health.UPSTREAM_CHECK_TIMEOUT)
        gives up. A replica that answers anything but 200 (one just started whose first checks were slow)
        speaks for itself only: every other address the name resolves to is asked once, side by side, and
        one 200 makes the service healthy."""

        async def other(family: int, address: tuple[Any, ...]) -> int:
            status, _, _ = await Gateway._exchange(pool, b"/health", await pool.connect_to(family, address))
            return status

        async def check() -> None:
            while True:
                try:
                    status, body, peer = await Gateway._exchange(pool, b"/health")
                    break
                except UpstreamError:
                    pool.close()
                    await asyncio.sleep(RETRY_PAUSE)
            if status == 200:
                return
            others = await pool.others(peer)
            answers = await asyncio.gather(*(other(*a) for a in others), return_exceptions=True)
            if 200 not in answers:
                # What the service said of itself (which of its checks failed): the evidence of a 503 /health.
                said = body[:300].decode("utf-8", "replace")
                answered = [a if isinstance(a, int) else type(a).__name__ for a in answers]
                fields = {"upstream": pool.host, "address": peer, "status": status, "body": said, "others": answered}
                log.warning("upstream unhealthy", extra={"fields": fields})
                raise UpstreamError(f"health {status}")

        return check

    @staticmethod
    async def _send(send: Send, messages: tuple[Message, Message]) -> None:
        await send(messages[0])
        await send(messages[1])

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                logs.configure(self.settings.service, self.settings.log_level)
                log.info("started", extra={"fields": {"upstreams": dict(self.settings.upstreams)}})
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for pool in self.pools.values():
                    pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def build(settings: Settings) -> ASGIApp:
    # The Guard's error boundary reports to Sentry here: the gateway has no framework integration.
    return guard.Guard(Gateway(settings), max_body=settings.max_body, metrics=Metrics(settings.service), report=True)
