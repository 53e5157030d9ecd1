"""How failures leave a service and the gateway: a 500 is JSON with the request id and closes the
connection cleanly; the traceback is logged once with its request; a 502 names the service, not its address."""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import access_token, jwt_env
from tests.pg import free_port
from tests.servers import serve_process

ROOT = Path(__file__).resolve().parents[1]


def _raw(port: int, request: bytes) -> tuple[bytes, bytes, bool]:
    """One request; the head, the body, and whether the server then closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(
            next(line.split(b":")[1] for line in head.lower().split(b"\r\n") if line.startswith(b"content-length"))
        )
        while len(body) < length:
            body += sock.recv(65536)
        sock.settimeout(2)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False  # still open, nothing more sent: a keep-alive connection
    return head, body, closed


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int, Path]]:
    logs = tmp_path_factory.mktemp("errors")
    boom, gateway, nobody = free_port(), free_port(), free_port()
    uvicorn = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--log-level", "warning"]
    started = [serve_process([*uvicorn, "--port", str(boom), "tests.boom_app:app"], boom, logs / "boom.log", jwt_env())]
    try:
        env = {
            "HOST": "127.0.0.1",
            "PORT": str(gateway),
            **jwt_env(),
            "DOWN_SERVICE_URL": f"http://127.0.0.1:{nobody}",
        }
        started.append(
            serve_process([sys.executable, "-m", "mfe_services", "api-gateway"], gateway, logs / "gateway.log", env)
        )
        yield boom, gateway, logs
    finally:
        for process in started:
            process.terminate()
            process.wait(timeout=20)


def test_a_500_is_json_with_its_request_id_and_closes_the_connection_cleanly(servers: tuple[int, int, Path]) -> None:
    boom, _, logs = servers
    head, body, closed = _raw(boom, b"GET /api/boom/fail HTTP/1.1\r\nhost: t\r\nx-request-id: req-500\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    assert lines[0].startswith(b"http/1.1 500 ")
    assert b"connection: close" in lines and b"x-request-id: req-500" in lines
    assert json.loads(body) == {"error": "internal error"}
    assert closed, "the server must close the connection it announced closing"
    time.sleep(0.3)
    entries = [json.loads(line) for line in (logs / "boom.log").read_text().splitlines() if line.startswith("{")]
    failures = [e for e in entries if e["message"] == "unhandled error"]
    assert len(failures) == 1, entries
    assert (failures[0]["request_id"], failures[0]["method"], failures[0]["path"]) == (
        "req-500",
        "GET",
        "/api/boom/fail",
    )
    assert "secret internals" in failures[0]["error"]  # the log has the traceback; the client never does
    access = [e for e in entries if e["message"] == "request"]
    assert [(e["request_id"], e["status"]) for e in access] == [("req-500", 500)]
    assert "Exception in ASGI application" not in (logs / "boom.log").read_text()


def test_a_502_names_the_service_not_its_address(servers: tuple[int, int, Path]) -> None:

    _, gateway, _ = servers
    token = access_token(2)
    head, body, closed = _raw(
        gateway, f"GET /api/down/things HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {token}\r\n\r\n".encode()
    )
    assert head.startswith(b"HTTP/1.1 502 ")
    assert json.loads(body) == {"error": "upstream unavailable", "service": "down"}
    assert not closed  # only a 500 leaves the connection in doubt
