"""The gateway's aggregate /health asks every replica before it calls a service unhealthy: a service is
healthy while one of its replicas answers 200 (a replica just started whose first checks were slow, or one
that is stopping, speaks for itself only). The gateway runs as deployed (uvicorn, httptools) in a mount
namespace of its own whose /etc/hosts names two replicas of one service, 127.0.0.2 and 127.0.0.3, real
HTTP servers on the same port, as an engine's DNS answers a service's name with every replica's address."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import jwt_env
from tests.pg import free_port
from tests.status_server import serve
from tests.test_gateway_conformance import _wait

ROOT = Path(__file__).resolve().parents[1]
REPLICAS = ("127.0.0.2", "127.0.0.3")

pytestmark = pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs root and unshare")


@dataclass
class Replicas:
    port: int
    status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REPLICAS, 200))
    asked: list[str] = field(default_factory=list)


@dataclass
class Gateway:
    port: int
    replicas: Replicas
    log: Path

    def health(self) -> tuple[int, dict[str, object]]:
        time.sleep(1.1)  # past the gateway's verdict cache (health.VERDICT_TTL)
        self.replicas.asked.clear()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


def _servers(replicas: Replicas) -> list[ThreadingHTTPServer]:
    def status(me: str, path: str) -> int:
        replicas.asked.append(me)
        return replicas.status[me] if path == "/health" else 404

    return [serve(address, replicas.port, status) for address in REPLICAS]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("gateway-health")
    replicas = Replicas(free_port())
    servers = _servers(replicas)
    hosts = folder / "hosts"
    hosts.write_text("127.0.0.1 localhost\n" + "".join(f"{a} replicas.test\n" for a in REPLICAS))
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        **jwt_env(),
        "ECHO_SERVICE_URL": f"http://replicas.test:{replicas.port}",
    }
    own_hosts = 'mount --bind "$0" /etc/hosts && exec "$@"'
    argv = ["unshare", "-m", "sh", "-c", own_hosts, str(hosts), sys.executable, "-m", "mfe_services", "api-gateway"]
    with (folder / "gateway.log").open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=out)
    try:
        _wait(f"http://127.0.0.1:{port}/health/live", process)
        yield Gateway(port, replicas, folder / "gateway.log")
    finally:
        process.terminate()
        process.wait(timeout=20)
        for server in servers:
            server.shutdown()
            server.server_close()


def test_both_replicas_healthy_is_one_question(gateway: Gateway) -> None:
    assert gateway.health()[0] == 200
    assert len(gateway.replicas.asked) == 1, gateway.replicas.asked


@pytest.mark.parametrize("sick", REPLICAS)
def test_one_replica_answering_503_leaves_the_service_healthy(gateway: Gateway, sick: str) -> None:
    gateway.replicas.status.update(dict.fromkeys(REPLICAS, 200) | {sick: 503})
    status, body = gateway.health()
    assert (status, body["services"]) == (200, {"echo": "healthy"}), body
    assert set(gateway.replicas.asked) <= set(REPLICAS)


def test_every_replica_unhealthy_is_an_unhealthy_service_and_each_was_asked(gateway: Gateway) -> None:
    gateway.replicas.status.update(dict.fromkeys(REPLICAS, 503))
    status, body = gateway.health()
    assert (status, body["services"]) == (503, {"echo": "unhealthy"}), body
    assert sorted(gateway.replicas.asked) == sorted(REPLICAS), gateway.replicas.asked
    # The gateway says which service, which replica and what it answered: the evidence of a 503 /health.
    warnings = [json.loads(line) for line in gateway.log.read_text().splitlines() if "upstream unhealthy" in line]
    assert warnings, gateway.log.read_text()[-2000:]
    assert {w["upstream"] for w in warnings} == {"replicas.test"}
    assert warnings[-1]["status"] == 503 and warnings[-1]["others"] == [503], warnings[-1]
    assert '"unhealthy"' in warnings[-1]["body"], warnings[-1]
    gateway.replicas.status.update(dict.fromkeys(REPLICAS, 200))
