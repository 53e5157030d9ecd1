"""The edge of every service: a request id that is safe to echo, a body size limit, one JSON access-log
line per request, and an error boundary that answers JSON and keeps the HTTP connection correct."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mfe_services.common import drain, logs, reporting
from mfe_services.common.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger("mfe.access")
errors = logging.getLogger("mfe.error")
MAX_BODY = 1 << 20
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")


class BodyTooLarge(Exception):
    pass


def request_id(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The caller's X-Request-ID when it is a plain token of at most 128 characters, else a new one: it goes
    into headers, logs and error reports, so anything else (non-ASCII, control bytes, a megabyte) is replaced."""
    for key, value in headers:
        if key == b"x-request-id":
            return value if _REQUEST_ID.fullmatch(value) else uuid.uuid4().hex.encode()
    return uuid.uuid4().hex.encode()


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    for key, value in headers:
        if key == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def json_response(status: int, body: dict[str, object], extra: Iterable[tuple[bytes, bytes]] = ()) -> list[Message]:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *extra]
    return [
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": data},
    ]


def too_large(limit: int, rid: bytes) -> list[Message]:
    # The rest of the body is never read: the connection cannot carry another request.
    extra = [(b"x-request-id", rid), (b"connection", b"close")]
    return json_response(413, {"error": f"request body over {limit} bytes"}, extra)


def access(
    scope: Scope, rid: bytes, status: int, started: float, sent: int, user: object, route: str | None = None
) -> float:
    """Logs the request's access line; returns its duration in seconds (for the metrics)."""
    seconds = time.perf_counter() - started
    fields = {
        "request_id": rid.decode(),
        "method": scope["method"],
        "path": route or scope["path"],
        "status": status,
        "duration_ms": round(seconds * 1000, 2),
        "bytes": sent,
    }
    if user:
        fields["user_id"] = user
    log.info("request", extra={"fields": fields})
    return seconds


def metrics_response(metrics: Metrics) -> list[Message]:
    body = metrics.render()
    headers = [(b"content-type", CONTENT_TYPE), (b"content-length", str(len(body)).encode())]
    return [
        {"type": "http.response.start", "status": 200, "headers": headers},
        {"type": "http.response.body", "body": body},
    ]


class Guard:
    """Around every service and the gateway. The app finds the request id in scope["mfe.request_id"];
    it names its route for the log and the metrics by Starlette's scope["route"] or scope["mfe.route"], and
    its user by scope["state"]["user_id"]. `report`: hand unhandled errors to Sentry here (an app with no
    Sentry integration of its own: the gateway)."""

    def __init__(
        self, app: ASGIApp, *, max_body: int = MAX_BODY, metrics: Metrics | None = None, report: bool = False
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.metrics = metrics
        self.report = report

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.metrics is not None and scope["path"] == "/metrics":
            for message in metrics_response(self.metrics):  # scraped every few seconds: no access line
                await send(message)
            return
        started = time.perf_counter()
        rid = request_id(scope["headers"])
        scope["mfe.request_id"] = rid
        token = logs.request_id.set(rid.decode())
        status, sent, received = 0, 0, 0
        limit = self.max_body

        async def guarded_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", rid))
                if (status == 500 or drain.active()) and (b"connection", b"close") not in headers:
                    # After an unhandled error nothing is assumed; a stopping service closes every
                    # connection after its answer (drain.py).
                    headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            length = declared_length(scope["headers"])
            if length is not None and length > limit:
                for message in too_large(limit, rid):
                    await guarded_send(message)
                return
            try:
                await self.app(scope, guarded_receive, guarded_send)
            except BodyTooLarge:
                if status == 0:
                    for message in too_large(limit, rid):
                        await guarded_send(message)
            except Exception as exc:
                # Starlette's error handler has answered (500 JSON, connection: close) and re-raises: the
                # answer stands, the traceback is logged here once, with the request it belongs to.
                errors.exception(
                    "unhandled error", extra={"fields": {"method": scope["method"], "path": scope["path"]}}
                )
                if self.report:
                    reporting.report(error=exc)
                if status == 0:
                    for message in json_response(500, {"error": "internal error"}, [(b"connection", b"close")]):
                        await guarded_send(message)
        finally:
            state = scope.get("state") or {}
            # Starlette's router sets scope["route"] on a match; the gateway names its own.
            template = getattr(scope.get("route"), "path", None) or scope.get("mfe.route")
            seconds = access(scope, rid, status, started, sent, state.get("user_id"), template)
            if self.metrics is not None:  # bounded label values: a template, never a raw path
                self.metrics.observe(scope["method"], template or "unmatched", status, seconds)
            logs.request_id.reset(token)
