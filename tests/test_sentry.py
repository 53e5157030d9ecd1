"""Errors reach Sentry (sentry-sdk, the guide's 7.2) at a real HTTP listener on loopback that decodes the
envelopes: one event per unhandled error with the environment, release and request id, and no secret or
credential anywhere in what was sent; nothing at all when no DSN is set."""

from __future__ import annotations

import gzip
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import access_token, jwt_env
from tests.pg import free_port
from tests.receiver import Receiver, receiver
from tests.servers import serve_process

JWT_CANARY = "sentry:jwt-canary-secret-4f1c9e2a7b3d8e6f0a1b2c3d4"  # the part after the kid is the secret
DB_CANARY = "db-canary-password-9a8b7c6d5e4f"
BODY_CANARY = "body-canary-password-1q2w3e"


class Listener:
    """The receiver, with the events decoded from its envelopes."""

    def __init__(self, received: Receiver) -> None:
        self.received = received

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.received.port}/42"

    @property
    def connections(self) -> int:
        return self.received.connections

    @property
    def raw(self) -> list[bytes]:
        return [decode(p.body, p.headers.get("content-encoding", ""))[0] for p in self.received.posts]

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for p in self.received.posts for e in decode(p.body, p.headers.get("content-encoding", ""))[1]]

    def wait(self, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.events


def decode(body: bytes, encoding: str) -> tuple[bytes, list[dict[str, Any]]]:
    """An envelope: a header line, then for each item a header line and a payload line (JSON)."""
    data = gzip.decompress(body) if encoding == "gzip" else body
    lines = data.split(b"\n")
    events = []
    for header, payload in zip(lines[1::2], lines[2::2], strict=False):
        if json.loads(header).get("type") == "event":
            events.append(json.loads(payload))
    return data, events


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    with receiver() as received:
        yield Listener(received)


def _env(dsn: str | None) -> dict[str, str]:
    env = {
        "HOST": "127.0.0.1",
        "APP_ENV": "sentrytest",
        "SERVICE_VERSION": "v9",
        **jwt_env(JWT_CANARY),
        "DATABASE_URL": f"postgresql://auth_app:{DB_CANARY}@127.0.0.1:1/auth_db",
    }
    return {**env, "SENTRY_DSN": dsn} if dsn else env


@pytest.fixture(scope="module")
def services(listener: Listener, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    logs = tmp_path_factory.mktemp("sentry")
    ports = {"boom": free_port(), "quiet": free_port(), "gateway": free_port()}
    uvicorn = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--log-level", "warning", "tests.boom_app:app"]
    started = []
    try:
        for name, dsn in (("boom", listener.dsn), ("quiet", None)):
            started.append(
                serve_process([*uvicorn, "--port", str(ports[name])], ports[name], logs / f"{name}.log", _env(dsn))
            )
        gateway_env = {
            **_env(listener.dsn),
            "PORT": str(ports["gateway"]),
            "DOWN_SERVICE_URL": f"http://127.0.0.1:{free_port()}",
        }
        started.append(
            serve_process(
                [sys.executable, "-m", "mfe_services", "api-gateway"], ports["gateway"], logs / "gw.log", gateway_env
            )
        )
        yield ports
    finally:
        for process in started:
            process.terminate()
            process.wait(timeout=20)


def _no_secret_in(listener: Listener, *also: str) -> None:
    sent = b"\n".join(listener.raw).decode(errors="replace")
    for canary in (JWT_CANARY.split(":")[1], DB_CANARY, BODY_CANARY, *also):
        assert canary not in sent, f"{canary[:12]}... reached Sentry"


def test_nothing_is_sent_without_a_dsn(services: dict[str, int], listener: Listener) -> None:
    before = listener.connections
    for _ in range(3):
        answer = httpx.post(f"http://127.0.0.1:{services['quiet']}/api/boom/fail", json={"password": BODY_CANARY})
        assert answer.status_code == 500
    time.sleep(2)
    assert listener.connections == before


def test_an_unhandled_error_is_one_event_with_environment_release_and_request_id(
    services: dict[str, int], listener: Listener
) -> None:
    token = access_token(3, JWT_CANARY)
    for n in range(3):
        answer = httpx.post(
            f"http://127.0.0.1:{services['boom']}/api/boom/fail?password={BODY_CANARY}",
            json={"password": BODY_CANARY},
            headers={
                "Authorization": f"Bearer {token}",
                "Cookie": f"session={BODY_CANARY}",
                "X-Request-ID": f"req-sentry-{n}",
            },
        )
        assert answer.status_code == 500
    events = [e for e in listener.wait(3) if e.get("server_name") == "boom"]
    assert sorted(e["tags"]["request_id"] for e in events) == ["req-sentry-0", "req-sentry-1", "req-sentry-2"]
    for event in events:
        assert (event["environment"], event["release"]) == ("sentrytest", "boom@v9")
        assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    _no_secret_in(listener, token)


def test_the_gateway_reports_a_502_without_the_callers_credentials(
    services: dict[str, int], listener: Listener
) -> None:
    token = access_token(4, JWT_CANARY)
    answer = httpx.get(
        f"http://127.0.0.1:{services['gateway']}/api/down/x",
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": "req-gw-502"},
    )
    assert answer.status_code == 502

    def gateway_events() -> list[dict[str, Any]]:
        return [e for e in listener.events if e.get("server_name") == "api-gateway"]

    deadline = time.monotonic() + 15
    while not gateway_events() and time.monotonic() < deadline:
        time.sleep(0.1)
    (event,) = gateway_events()
    assert event["tags"]["request_id"] == "req-gw-502"
    assert (event["environment"], event["release"]) == ("sentrytest", "api-gateway@v9")
    assert (
        "down" in event["message"]["formatted"]
        if isinstance(event.get("message"), dict)
        else "down" in event["message"]
    )
    _no_secret_in(listener, token)


def test_scrub_keeps_only_harmless_headers() -> None:
    from mfe_services.common.reporting import scrub

    event = {
        "request": {
            "headers": {"Authorization": "Bearer x", "Cookie": "a=b", "Content-Type": "a/b"},
            "data": "pw",
            "query_string": "pw=1",
        }
    }
    assert scrub(event, {}) == {"request": {"headers": {"Content-Type": "a/b"}}}
