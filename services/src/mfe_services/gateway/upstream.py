"""A keep-alive HTTP/1.1 connection pool to one upstream, on asyncio protocols and httptools' parser.

General clients (httpx, aiohttp) cost the gateway most of its throughput on this machine (DESIGN.md:
0.02x and 0.33x of direct); a proxy needs far less: write the head, stream bytes both ways, reuse the
connection. Bodies are streamed with backpressure, never buffered whole.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import httptools

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
HIGH_WATER = 1 << 20
PER_ADDRESS = 0.5
ATTEMPT = 1.0  # one attempt on the last address of a round at most: then the name is resolved again
RETRY_PAUSE = 0.1
# How long an upstream that does not answer is waited for (a refusing one is not): longer than a new
# Swarm task's overlay route takes to reach every node on a busy machine (seen: 8 s of timeouts while
# the old task was already gone), shorter than a client's patience.
CONNECT_TIMEOUT = 8.0
# An idle connection older than this is closed, never used: a stopping service closes its idle
# connections after its drain (common/drain.py, twice as long), and uvicorn closes them after 5 s idle;
# a request written on one at that instant would be lost.
IDLE_SECONDS = 1.0
Headers = list[tuple[bytes, bytes]]


class UpstreamError(Exception):
    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def hop_by_hop(headers: Sequence[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The fixed hop-by-hop names plus any a `Connection` header lists (RFC 9110, 7.6.1)."""
    named = [token.strip().lower() for key, value in headers if key == b"connection" for token in value.split(b",")]
    return HOP_BY_HOP.union(named) if named else HOP_BY_HOP


class Connection(asyncio.Protocol):
    """One upstream connection, used for one exchange at a time. It is in step only when every byte the
    upstream sent belongs to the response of the request we wrote: interim 1xx answers are skipped, and
    any byte that arrives after the final response (or a second response in one read) means the stream is
    out of step, so the connection is closed, never pooled."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._reset(head_only=False)

    def _reset(self, *, head_only: bool) -> None:
        loop = asyncio.get_running_loop()
        self.head: asyncio.Future[tuple[int, Headers]] = loop.create_future()
        # Its error is also in `error`, read by whoever reads on; a head nobody waits for any more (its
        # wait timed out or was cancelled) must not log "exception was never retrieved".
        self.head.add_done_callback(_retrieve)
        self.headers: Headers = []
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.interim = False
        self.got_bytes = False
        self.head_only = head_only
        self.waiter: asyncio.Future[None] | None = None
        self.error: UpstreamError | None = None
        self.sent = False  # a byte of this exchange's request was written

    def start(self, *, head_only: bool) -> None:
        self._reset(head_only=head_only)
        if self.closed:
            # Lost between its handshake and now (a replica closing its listener resets the connections it
            # had not accepted yet): connection_lost has come and gone, so nothing would ever answer the head
            # (CI: two requests hung until the client gave up). Nothing of the request was sent.
            self._fail(UpstreamError("upstream closed the connection before the request", retryable=True))

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        if self.complete:
            # Bytes nobody asked for (a late or extra response): whoever reads this connection next
            # would take them for theirs.
            self.keep_alive = False
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"bad response from upstream: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            # Nothing received on a reused connection: the upstream closed it while idle; try again.
            self._fail(UpstreamError("upstream closed the connection", retryable=not self.got_bytes))

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.complete:
            # A second response in the same read: stop the parser before it reaches our caller's body.
            self.keep_alive = False
            raise UpstreamError("upstream sent more than one response")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # 100 Continue, 103 Early Hints: interim, the final response follows on the same connection.
            self.interim = True
            self.headers = []
            return
        if not self.head.done():
            self.head.set_result((self.parser.get_status_code(), self.headers))
        if self.head_only:
            self.complete = True
            self.keep_alive = False
            self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.complete = True
        # A 101 would hand the connection to another protocol: never reused.
        self.keep_alive = self.parser.should_keep_alive() and self.parser.get_status_code() >= 200
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        self.error = error
        if not self.head.done():
            self.head.set_exception(error)
        self._wake()

    async def next_chunk(self) -> tuple[bytes, bool]:
        """The body bytes received so far and whether more will follow."""
        while not self.chunks and not self.complete:
            if self.error is not None:
                raise self.error
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        body = b"".join(self.chunks) if len(self.chunks) != 1 else self.chunks[0]
        self.chunks.clear()
        if self.buffered > HIGH_WATER and self.transport is not None:
            self.transport.resume_reading()
        self.buffered = 0
        return body, not self.complete

    def write(self, data: bytes) -> None:
        """Nothing is written once the upstream closed (it answered early, or reset): what it answered, or
        why it failed, is in `head`. uvloop raises RuntimeError on a write to a closed transport, which
        turned an oversized body that an upstream refused early into a 500 instead of the Guard's 413."""
        assert self.transport is not None
        if self.closed or self.transport.is_closing():
            return
        self.sent = True
        self.transport.write(data)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _retrieve(future: asyncio.Future[tuple[int, Headers]]) -> None:
    if not future.cancelled():
        future.exception()


class Pool:
    def __init__(self, host: str, port: int, *, max_idle: int = 128, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.host, self.port = host, port
        self.netloc = f"{host}:{port}".encode()
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self.idle: deque[Connection] = deque()

    async def acquire(self) -> tuple[Connection, bool]:
        now = asyncio.get_running_loop().time()
        while self.idle:
            conn = self.idle.pop()
            if conn.closed:
                continue
            if now - conn.idle_since > IDLE_SECONDS:
                conn.close()
                self.close()  # the most recently used first: every other one is older still
                break
            return conn, True
        return await self.connect(), False

    async def connect(self) -> Connection:
        """A new connection, the name resolved anew for every round. A name with several addresses (a
        replicated service resolved by DNS) is tried address after address, each for at most PER_ADDRESS
        seconds while another remains (an address whose container is gone answers nothing), the last for at
        most ATTEMPT. Then the name is resolved and tried again: a replica that closed its socket while DNS
        still named it is gone from the answer by then. Addresses that refuse are refused for good after two
        rounds (a service that is down is a 502 at once); an upstream that does not answer (a new task whose
        overlay route the other nodes have not learnt yet) is waited for until the connect timeout: the
        request is late, not lost, and nothing of it was sent."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        error: BaseException | None = None
        rounds = 0
        while True:
            refused = True  # every address of this round refused (or none was tried)
            try:
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM), max(deadline - loop.time(), 0)
                )
            except (OSError, TimeoutError) as exc:
                error, infos, refused = exc, [], False
            for index, (family, _, _, _, address) in enumerate(infos):
                left = deadline - loop.time()
                if left <= 0:
                    break
                budget = min(left, ATTEMPT if index == len(infos) - 1 else PER_ADDRESS)
                try:
                    return await asyncio.wait_for(Pool.connect_to(family, address), budget)
                except (OSError, TimeoutError) as exc:
                    error = exc
                    refused = refused and isinstance(exc, ConnectionRefusedError)
            rounds += 1
            if (refused and rounds >= 2) or deadline - loop.time() <= RETRY_PAUSE:
                break
            await asyncio.sleep(RETRY_PAUSE)
        reason = str(error) if error is not None and str(error) else "timeout"
        raise UpstreamError(f"cannot connect to {self.host}:{self.port}: {reason}")

    async def others(self, peer: str) -> list[tuple[int, tuple[Any, ...]]]:
        """The addresses the name resolves to now (family, address), but `peer`'s: the other replicas."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        return [(family, address) for family, _, _, _, address in infos if str(address[0]) != peer]

    @staticmethod
    async def connect_to(family: int, address: tuple[Any, ...]) -> Connection:
        """A new connection to one address (not pooled: the caller closes it)."""
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(Connection, str(address[0]), int(address[1]), family=family)
        return conn

    def release(self, conn: Connection) -> None:
        if conn.complete and conn.keep_alive and not conn.closed and len(self.idle) < self.max_idle:
            conn.idle_since = asyncio.get_running_loop().time()
            self.idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()


def request_head(method: str, target: bytes, headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    lines = [method.encode(), b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        lines += [name, b": ", value, b"\r\n"]
    lines.append(b"\r\n")
    return b"".join(lines)
