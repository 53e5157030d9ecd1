"""The engine's check of RabbitMQ (render.amqp_check), run by bash as the engine runs it, against a real
RabbitMQ node, a port where nothing listens, and a server that answers in another protocol (Redis)."""

from __future__ import annotations

import socket
import subprocess
import time

from mfe_deploy.render import amqp_check
from tests.servers import rabbitmq_server, redis_server


def _check(port: int) -> tuple[int, float]:
    line = amqp_check(port).replace("$$", "$")  # compose turns `$$` into `$` before the engine runs it
    began = time.monotonic()
    done = subprocess.run(["bash", "-c", line], capture_output=True, timeout=30)
    return done.returncode, time.monotonic() - began


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_amqp_check_passes_on_a_booted_broker_and_fails_on_anything_else() -> None:
    with rabbitmq_server("check-test-password-0123456789") as rabbit:
        assert _check(rabbit.port)[0] == 0
    code, took = _check(_free_port())
    assert code != 0 and took < 5, (code, took)  # nothing listening: refused at once
    with redis_server() as redis:  # it answers the header with an error line, not a Connection.Start frame
        assert _check(redis.port)[0] != 0
