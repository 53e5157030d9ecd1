"""The engine's healthcheck of a web service (render.service_probe), run as the engine runs it, against
real HTTP servers on loopback: healthy on 200 only, and never longer than its own timeout."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from mfe_deploy.render import service_probe
from tests.status_server import serve


def _probe(port: int, path: str = "/health") -> tuple[int, float]:
    argv = service_probe(port, path)
    assert argv[0] == "CMD"
    started = time.monotonic()
    done = subprocess.run(argv[1:], capture_output=True, timeout=30, check=False)
    return done.returncode, time.monotonic() - started


@pytest.fixture
def server() -> Iterator[tuple[int, list[str]]]:
    """A server answering each GET with the status its path names (/status/503), recording the paths."""
    seen: list[str] = []

    def status(_: str, path: str) -> int:
        seen.append(path)
        return int(path.rsplit("/", 1)[1]) if path.startswith("/status/") else 200

    httpd = serve("127.0.0.1", 0, status)
    try:
        yield httpd.server_address[1], seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_healthy_on_200_only_and_asks_the_declared_path(server: tuple[int, list[str]]) -> None:
    port, seen = server
    assert _probe(port, "/health/live")[0] == 0
    assert _probe(port, "/status/200")[0] == 0
    for status in (204, 301, 404, 500, 503):
        assert _probe(port, f"/status/{status}")[0] != 0, status
    assert seen[0] == "/health/live"


def test_an_unhealthy_answer_is_printed_for_the_engines_health_log(server: tuple[int, list[str]]) -> None:
    port, _ = server
    done = subprocess.run(service_probe(port, "/status/503")[1:], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stdout.strip() == 'HTTP/1.0 503 Service Unavailable {"status": "unhealthy"}', done.stdout
    healthy = subprocess.run(service_probe(port, "/status/200")[1:], capture_output=True, text=True, timeout=30)
    assert (healthy.returncode, healthy.stdout) == (0, "")


def test_nothing_listening_or_no_answer_is_unhealthy_within_its_timeout() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused_port = closed.getsockname()[1]
    assert _probe(refused_port)[0] != 0
    # Accepts (the kernel's queue) and never answers: unhealthy after the probe's own 2 s, not the engine's kill.
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        code, took = _probe(mute.getsockname()[1])
    assert code != 0 and 1.5 < took < 6, (code, took)
