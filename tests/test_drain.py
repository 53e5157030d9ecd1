"""A stopping service drains before it closes anything (services/src/mfe_services/common/drain.py), and
the gateway's pool never uses an idle connection old enough for the service to close under it.

A real service process (the gateway's, run as deployed: uvicorn, httptools) on loopback, plain sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mfe_services.common import drain
from mfe_services.gateway import upstream
from tests.conftest import jwt_env
from tests.pg import free_port
from tests.test_gateway_conformance import _wait

ROOT = Path(__file__).resolve().parents[1]
DRAIN = 3.0  # not the default (2 s): the rendered DRAIN_SECONDS is what a service drains for


def _get(sock: socket.socket, path: str = "/health/live") -> tuple[int, dict[str, str]]:
    """One request on a keep-alive connection; the status and headers of its answer."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nhost: t\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before an answer to {path}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers


def _closed_by_peer(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOST": "127.0.0.1", "PORT": str(port), **jwt_env()}
    env.pop("DRAIN_SECONDS", None)
    # The drain's length comes from the env file, as mfe-deploy renders it: read after the file is loaded.
    env_file = tmp_path / "env"
    env_file.write_text(f"DRAIN_SECONDS='{DRAIN:g}'\n")
    argv = [sys.executable, "-m", "mfe_services", "api-gateway", "--env-file", str(env_file)]
    with (tmp_path / "service.log").open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=out)
    try:
        _wait(f"http://127.0.0.1:{port}/health/live", process)
        yield process, port
    finally:
        process.kill()
        process.wait(timeout=10)


def test_sigterm_keeps_idle_connections_and_the_listener_open_then_closes_after_each_answer(
    service: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = service
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
    for sock in idle:
        assert _get(sock)[0] == 200  # pooled, as the gateway holds them
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    # uvicorn alone closes an idle connection the moment it gets SIGTERM: a request sent on it then is lost.
    assert not _closed_by_peer(idle[0], within=0.5)
    status, headers = _get(idle[0])
    assert (status, headers.get("connection")) == (200, "close")
    assert _closed_by_peer(idle[0], within=2)
    # A new connection is still accepted, and answered once.
    with socket.create_connection(("127.0.0.1", port), timeout=2) as fresh:
        status, headers = _get(fresh)
        assert (status, headers.get("connection")) == (200, "close")
    # Past the default's 2 s, the listener is still open: the drain is DRAIN_SECONDS long.
    time.sleep(max(started + drain.DEFAULT + 0.4 - time.monotonic(), 0))
    with socket.create_connection(("127.0.0.1", port), timeout=2) as late:
        assert _get(late)[0] == 200
    assert time.monotonic() - started < DRAIN
    # Once the drain is over: the connection nobody used is closed, the listener too, and the process exits 0.
    assert _closed_by_peer(idle[1], within=DRAIN + 2)
    assert time.monotonic() - started >= DRAIN - 0.2
    assert process.wait(timeout=10) == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    for sock in idle:
        sock.close()


def test_the_pool_never_reuses_a_connection_idle_longer_than_the_service_drains() -> None:
    assert upstream.IDLE_SECONDS < drain.DEFAULT  # else a drained service closes one the pool still uses

    async def exchange(pool: upstream.Pool) -> tuple[upstream.Connection, bool]:
        conn, reused = await pool.acquire()
        conn.start(head_only=False)
        conn.write(upstream.request_head("GET", b"/", [(b"host", b"t")]))
        assert (await conn.head)[0] == 200
        while (await conn.next_chunk())[1]:
            pass
        pool.release(conn)
        return conn, reused

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while await reader.readuntil(b"\r\n\r\n"):
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        finally:
            writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        pool = upstream.Pool("127.0.0.1", server.sockets[0].getsockname()[1])
        try:
            first, reused = await exchange(pool)
            assert not reused
            again, reused = await exchange(pool)
            assert (again, reused) == (first, True)  # released a moment ago: used again
            first.idle_since -= upstream.IDLE_SECONDS + 0.1
            third, reused = await exchange(pool)
            assert third is not first and not reused  # idle for longer: closed, and a new one made
            assert first.closed
        finally:
            pool.close()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())
