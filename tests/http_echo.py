"""An HTTP/1.1 upstream for the gateway conformance test: `python -m tests.http_echo PORT`.

It answers every request with what it received (the caller's `x-token`, the body's length and SHA-256)
and behaves like the servers a proxy meets, as the request's `x-mode` asks: `hints` (a 103 Early Hints
first), `continue` (an unsolicited 100 Continue first), `chunked` (the answer in pieces), `close`
(`connection: close`, then the socket closes), `early` (a 413 as soon as the head arrives, the body never
read), `slow` (50 ms before answering), `reset` (the first request with a given `x-token`, or the first `x-resets` of them, gets its
connection reset before any answer, as a replica closing its socket does; the next one is answered),
`cut` (the first request with a given `x-token`
gets the head of an answer, then the connection closes before its body, as CI once saw of a stopping
replica), an `x-delay` header (seconds before the answer), `drop-idle` (every other connection that waits for a request is closed, this one after its answer: the
caller's pool holds none open afterwards). Like uvicorn, it answers `Expect: 100-continue` with an interim
100 as soon as the head arrives: the sequence that put the gateway's pool out of step.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import struct
import sys

import httptools

RESET: dict[bytes, int] = {}  # per token, how many of its connections were reset (`x-resets`, default 1)
CUT: set[bytes] = set()  # the tokens whose first answer was cut after its head
OPEN: set[Echo] = set()


class Echo(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.gone = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.busy = False
        OPEN.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        OPEN.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.gone:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._close()

    def on_message_begin(self) -> None:
        self.busy = True
        self.headers: dict[bytes, bytes] = {}
        self.digest = hashlib.sha256()
        self.size = 0
        self.answered = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.modes = set(self.headers.get(b"x-mode", b"").decode().split(",")) - {""}
        token = self.headers.get(b"x-token", b"")
        resets = int(self.headers.get(b"x-resets", b"1"))
        if "reset" in self.modes and RESET.get(token, 0) < resets and self.transport is not None:
            RESET[token] = RESET.get(token, 0) + 1
            self.answered = True
            sock = self.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
            self._close()
            return
        if "cut" in self.modes and token not in CUT:
            CUT.add(token)
            self.answered = True
            self._write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 153\r\n\r\n")
            self._close()
            return
        self.sent_continue = self.headers.get(b"expect", b"").lower() == b"100-continue"
        if self.sent_continue:
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "early" in self.modes:
            self.answered = True
            self._write(self._final(413, {"early": True}, close=True))
            self._close()

    def on_body(self, body: bytes) -> None:
        self.digest.update(body)
        self.size += len(body)

    def on_message_complete(self) -> None:
        if self.answered or self.transport is None:
            return
        self.transport.pause_reading()  # one exchange at a time, as HTTP/1.1 without pipelining upstream
        asyncio.get_running_loop().create_task(self._answer())

    async def _answer(self) -> None:
        modes = self.modes
        if "slow" in modes:
            await asyncio.sleep(0.05)
        await asyncio.sleep(float(self.headers.get(b"x-delay", b"0")))
        if "hints" in modes:
            self._write(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n")
        if "continue" in modes and not self.sent_continue:
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        answer = {"size": self.size, "sha256": self.digest.hexdigest(), "method": self.parser.get_method().decode()}
        close = "close" in modes or "drop-idle" in modes
        if "drop-idle" in modes:
            for other in [conn for conn in OPEN if conn is not self and not conn.busy]:
                other._close()
        if "chunked" in modes:
            body = json.dumps(self._with_token(answer)).encode()
            head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n"
            self._write(head + (b"connection: close\r\n" if close else b"") + b"\r\n")
            for start in range(0, len(body), 16):
                piece = body[start : start + 16]
                self._write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await asyncio.sleep(0)
            self._write(b"0\r\n\r\n")
        else:
            self._write(self._final(200, answer, close=close))
        if close:
            self._close()
        elif self.transport is not None and not self.gone:
            self.busy = False
            self.transport.resume_reading()

    def _with_token(self, answer: dict[str, object]) -> dict[str, object]:
        return {"token": self.headers.get(b"x-token", b"").decode(), **answer}

    def _final(self, status: int, answer: dict[str, object], *, close: bool) -> bytes:
        body = json.dumps(self._with_token(answer)).encode()
        reason = {200: b"OK", 413: b"Content Too Large"}[status]
        head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (
            status,
            reason,
            len(body),
        )
        return head + (b"connection: close\r\n" if close else b"") + b"\r\n" + body

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.gone:
            self.transport.write(data)

    def _close(self) -> None:
        self.gone = True
        if self.transport is not None:
            self.transport.close()


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
