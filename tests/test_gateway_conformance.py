"""The gateway speaks HTTP/1.1 correctly on both sides: every caller gets its own response.

The gateway runs as deployed (uvicorn, httptools) in front of tests/http_echo.py, an upstream that echoes
each request's token and body digest and answers with interim 1xx, chunked bodies, early answers and
closes. Clients on raw sockets send seeded random sequences of pipelined, chunked, `Expect`, early-close
and unauthenticated requests, several at once; a response whose token is not the request's is a mix-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httptools
import httpx
import pytest

from tests.conftest import access_token, jwt_env
from tests.pg import free_port

ROOT = Path(__file__).resolve().parents[1]
MODES = ("hints", "continue", "chunked", "close", "early", "slow")
LIMIT = 400_000  # the gateway's MAX_BODY_BYTES here: an oversized body is 413, never forwarded


@dataclass(frozen=True)
class Stack:
    port: int
    bearer: bytes
    log: Path


def _wait(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).close()  # noqa: S310 - loopback
            return
        except OSError as exc:
            if getattr(exc, "code", None) is not None:  # any HTTP answer: it listens
                return
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    upstream_port, gateway_port = free_port(), free_port()
    logs = tmp_path_factory.mktemp("conformance")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HOST": "127.0.0.1",
        "PORT": str(gateway_port),
        **jwt_env(),
        "MAX_BODY_BYTES": str(LIMIT),
        "ECHO_SERVICE_URL": f"http://127.0.0.1:{upstream_port}",
    }
    processes = []
    try:
        with (logs / "echo.log").open("wb") as out:
            echo = subprocess.Popen(
                [sys.executable, "-m", "tests.http_echo", str(upstream_port)], env=env, stdout=out, stderr=out
            )
        processes.append(echo)
        _wait(f"http://127.0.0.1:{upstream_port}/", echo)
        with (logs / "gateway.log").open("wb") as out:
            gateway = subprocess.Popen(
                [sys.executable, "-m", "mfe_services", "api-gateway"], env=env, stdout=out, stderr=out
            )
        processes.append(gateway)
        _wait(f"http://127.0.0.1:{gateway_port}/health/live", gateway)
        token = access_token(1, ttl=600)
        yield Stack(gateway_port, f"Bearer {token}".encode(), logs / "gateway.log")
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)


@dataclass
class Responses:
    """httptools callbacks collecting final responses in order; 1xx are counted, not kept."""

    done: list[tuple[int, dict[bytes, bytes], bytes]] = field(default_factory=list)
    interim: int = 0

    def __post_init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: dict[bytes, bytes] = {}
        self.body = bytearray()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self.interim += 1
        else:
            self.done.append((status, self.headers, bytes(self.body)))
        self.headers, self.body = {}, bytearray()


@dataclass(frozen=True)
class Request:
    token: str
    method: str
    body: bytes
    chunked: bool
    expect: bool
    modes: tuple[str, ...]
    authorised: bool = True

    @property
    def oversized(self) -> bool:
        return len(self.body) > LIMIT

    @property
    def last(self) -> bool:
        """Nothing can follow it on the connection."""
        return not self.authorised or self.oversized or "early" in self.modes or "close" in self.modes

    def head(self, bearer: bytes) -> bytes:
        lines = [
            f"{self.method} /api/echo/items?t={self.token} HTTP/1.1".encode(),
            b"host: gateway",
            b"x-token: " + self.token.encode(),
            b"x-mode: " + ",".join(self.modes).encode(),
        ]
        if self.authorised:
            lines.append(b"authorization: " + bearer)
        if self.expect:
            lines.append(b"expect: 100-continue")
        if self.chunked:
            lines.append(b"transfer-encoding: chunked")
        elif self.body or self.method == "POST":
            lines.append(b"content-length: %d" % len(self.body))
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def encoded_body(self) -> bytes:
        if not self.chunked:
            return self.body
        pieces = [self.body[i : i + 7000] for i in range(0, len(self.body), 7000)]
        return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


@dataclass
class Tally:
    exchanges: int = 0
    resets: int = 0
    early_resets: int = 0
    mixups: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)


def check(request: Request, status: int, body: bytes, tally: Tally) -> None:
    tally.exchanges += 1
    try:
        answer = json.loads(body)
    except ValueError:
        tally.wrong.append(f"{request.token}: {status} {body[:80]!r}")
        return
    if request.oversized:
        if status != 413 or "token" in answer:
            tally.wrong.append(f"{request.token}: oversized body answered {status} {answer}")
        return
    if not request.authorised:
        if status != 401:
            tally.wrong.append(f"{request.token}: unauthorised request answered {status}")
        return
    if answer.get("token") != request.token:
        if "token" in answer:  # another caller's answer
            tally.mixups.append(f"{request.token} got {answer['token']!r} ({status})")
        elif status == 502 and "early" in request.modes and request.body:
            # The upstream answered before reading the body and closed with the body unread: its kernel
            # resets the connection, and when the reset reaches the gateway while it still sends the body,
            # the early answer is lost with it. The gateway's own 502, for this caller: seen once in CI.
            tally.early_resets += 1
        else:
            tally.wrong.append(f"{request.token}: {status} {answer} (not its own answer)")
        return
    if "early" in request.modes:
        if status != 413:
            tally.wrong.append(f"{request.token}: early answer {status}")
        return
    digest = hashlib.sha256(request.body).hexdigest()
    if status != 200 or answer.get("size") != len(request.body) or answer.get("sha256") != digest:
        tally.wrong.append(f"{request.token}: {status} {answer}")


async def _read_until(reader: asyncio.StreamReader, responses: Responses, count: int, *, interim: int = -1) -> None:
    """Reads until `count` final responses (or, with `interim`, until that many 1xx) or the end."""
    while len(responses.done) < count and (interim < 0 or responses.interim < interim):
        data = await reader.read(65536)
        if not data:
            return
        responses.parser.feed_data(data)


async def run_sequence(
    port: int, bearer: bytes, requests: list[Request], pipelined: bool, leave: bool, tally: Tally
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    responses = Responses()
    try:
        if pipelined:
            writer.write(b"".join(r.head(bearer) + r.encoded_body() for r in requests))
            await writer.drain()
            if leave:
                return  # the client goes away without reading: its answers must not reach anyone else
            await asyncio.wait_for(_read_until(reader, responses, len(requests)), 20)
        else:
            for index, request in enumerate(requests):
                writer.write(request.head(bearer))
                if request.expect and request.authorised:
                    # As curl does: wait for the 100 (the gateway sends it when it reads the body), then send.
                    await asyncio.wait_for(_read_until(reader, responses, index + 1, interim=responses.interim + 1), 20)
                writer.write(request.encoded_body())
                await writer.drain()
                if leave and index == len(requests) - 1:
                    return
                await asyncio.wait_for(_read_until(reader, responses, index + 1), 20)
                if len(responses.done) <= index:
                    break  # the connection was closed (an answer with connection: close)
                if request.last or responses.done[index][1].get(b"connection", b"").lower() == b"close":
                    requests = requests[: index + 1]
                    break
        for request, (status, _, body) in zip(requests, responses.done, strict=False):
            check(request, status, body, tally)
    except ConnectionError:
        # Only where the gateway answered 413 with `connection: close` while the body was still coming: the
        # kernel resets a socket closed with unread bytes. Anywhere else, a reset is a failure.
        if not requests[-1].oversized:
            tally.wrong.append(f"{requests[0].token}: connection reset")
        tally.resets += 1
    except httptools.HttpParserError as exc:
        tally.wrong.append(f"{requests[0].token}: not HTTP/1.1 from the gateway ({exc}) after {responses.done}")
    finally:
        writer.close()


def random_sequence(rng: random.Random, number: int) -> tuple[list[Request], bool, bool]:
    pipelined = rng.random() < 0.35
    requests = []
    for index in range(rng.randint(1, 4)):
        method = rng.choice(["GET", "POST", "POST", "PUT"])
        size = rng.choice([0, 17, 2048, 65536, 300_000, LIMIT + 1000]) if method != "GET" else 0
        modes = tuple(m for m in MODES if rng.random() < 0.15 and not (pipelined and m in ("early", "close")))
        requests.append(
            Request(
                token=f"s{number}r{index}-{rng.getrandbits(32):08x}",
                method=method,
                body=rng.randbytes(size),
                chunked=method != "GET" and rng.random() < 0.3,
                expect=method != "GET" and rng.random() < 0.3,
                modes=modes,
                authorised=pipelined or index < 3 or rng.random() < 0.5,
            )
        )
        if requests[-1].last:
            break  # nothing is sent after an answer that ends the exchange early
    return requests, pipelined, rng.random() < 0.08


def test_expect_continue_does_not_hand_a_response_to_the_next_caller(stack: Stack) -> None:
    """The reported sequence: a POST with `Expect: 100-continue`, then other callers on other connections."""
    tally = Tally()

    async def scenario() -> None:
        first = Request("expect-1", "POST", b'{"email":"x@y.co","password":"x"}', False, True, ())
        await run_sequence(stack.port, stack.bearer, [first], False, False, tally)
        for n in range(5):
            await run_sequence(
                stack.port, stack.bearer, [Request(f"next-{n}", "GET", b"", False, False, ())], False, False, tally
            )

    asyncio.run(scenario())
    assert tally.mixups == []
    assert tally.wrong == []
    assert tally.exchanges == 6


def test_random_sequences_from_several_clients_never_mix_up_callers(stack: Stack) -> None:
    rng = random.Random(20261128)
    sequences = [random_sequence(rng, n) for n in range(240)]
    tally = Tally()

    async def scenario() -> None:
        queue: asyncio.Queue[tuple[list[Request], bool, bool]] = asyncio.Queue()
        for sequence in sequences:
            queue.put_nowait(sequence)

        async def client() -> None:
            while not queue.empty():
                requests, pipelined, leave = queue.get_nowait()
                await run_sequence(stack.port, stack.bearer, requests, pipelined, leave, tally)

        await asyncio.gather(*(client() for _ in range(8)))

    asyncio.run(scenario())
    assert tally.mixups == []
    assert tally.wrong == []
    early = sum(1 for s, _, _ in sequences for r in s if "early" in r.modes and r.body)
    print(f"{tally.exchanges} exchanges; early answers lost to the upstream's reset: {tally.early_resets} of {early}")
    assert tally.early_resets <= early // 4, "the early answers are lost as a rule, not by a rare race"
    kinds = {
        "expect": sum(r.expect for s, _, _ in sequences for r in s),
        "chunked": sum(r.chunked for s, _, _ in sequences for r in s),
        "pipelined": sum(p for _, p, _ in sequences),
        "left early": sum(leave for _, _, leave in sequences),
        "oversized": sum(r.oversized for s, _, _ in sequences for r in s),
        **{m: sum(m in r.modes for s, _, _ in sequences for r in s) for m in MODES},
    }
    assert min(kinds.values()) > 0, kinds  # every kind of exchange was exercised
    assert tally.exchanges > 300


@pytest.mark.parametrize(
    ("method", "key", "status"),
    [("GET", None, 200), ("DELETE", None, 200), ("POST", "k-1", 200), ("POST", None, 502)],
)
def test_a_request_reset_before_an_answer_is_sent_again_only_when_it_may_be_seen_twice(
    stack: Stack, method: str, key: str | None, status: int
) -> None:
    """A replica closing its socket resets the new connections it had not read yet (the 502s of a rolling
    update on a swarm). The gateway sends such a request again on a new connection when the method is
    idempotent or the request carries an Idempotency-Key; any other request is 502, never sent twice."""
    url, token = f"http://127.0.0.1:{stack.port}/api/echo/items", f"reset-{method}-{key}"
    headers = {"authorization": stack.bearer.decode(), "x-token": f"{token}-drop", "x-mode": "drop-idle"}
    assert httpx.get(url, headers=headers, timeout=10).status_code == 200
    time.sleep(0.2)  # the gateway sees its idle connections closed: the next request opens a new one
    headers.update({"x-token": token, "x-mode": "reset"})
    if key is not None:
        headers["idempotency-key"] = key
    answer = httpx.request(method, url, headers=headers, timeout=10)
    assert answer.status_code == status, answer.text
    if status == 200:
        assert answer.json()["token"] == token
        assert answer.json()["method"] == method
    else:
        assert answer.json() == {"error": "upstream unavailable", "service": "echo"}


@pytest.mark.parametrize(
    ("method", "key", "status"),
    [("GET", None, 200), ("DELETE", None, 200), ("POST", "k-2", 200), ("POST", None, 502)],
)
def test_an_answer_cut_after_its_head_is_sent_again_or_a_502_never_a_truncated_response(
    stack: Stack, method: str, key: str | None, status: int
) -> None:
    """The upstream sends a head (content-length: 153) and closes before the body: CI's one failed request
    of 756 while auth was replaced (`peer closed connection without sending complete message body`). The
    gateway forwards no head before the body's first bytes, so it can still answer: the request again on a
    new connection when it may be seen twice, else a whole 502."""
    url, token = f"http://127.0.0.1:{stack.port}/api/echo/items", f"cut-{method}-{key}"
    headers = {"authorization": stack.bearer.decode(), "x-token": token, "x-mode": "cut"}
    if key is not None:
        headers["idempotency-key"] = key
    answer = httpx.request(method, url, headers=headers, timeout=10)  # raises on a truncated body
    assert answer.status_code == status, answer.text
    if status == 200:
        assert answer.json()["token"] == token and answer.json()["method"] == method
    else:
        assert answer.json() == {"error": "upstream unavailable", "service": "echo"}


@pytest.mark.parametrize(
    ("method", "key", "resets", "status"), [("GET", None, 2, 200), ("POST", "k-3", 2, 200), ("GET", None, 3, 502)]
)
def test_a_request_that_may_be_seen_twice_is_sent_up_to_three_times(
    stack: Stack, method: str, key: str | None, resets: int, status: int
) -> None:
    """CI: a POST with an Idempotency-Key met a stopping replica on both of its two sends (162 ms apart) and
    was a 502. It is sent up to three times, each on a new connection; a fourth failure is not waited for."""
    url, token = f"http://127.0.0.1:{stack.port}/api/echo/items", f"resets-{method}-{key}-{resets}"
    headers = {"authorization": stack.bearer.decode(), "x-token": token, "x-mode": "reset", "x-resets": str(resets)}
    if key is not None:
        headers["idempotency-key"] = key
    answer = httpx.request(method, url, headers=headers, timeout=10)
    assert answer.status_code == status, answer.text
    if status == 200:
        assert answer.json()["token"] == token


def test_an_oversized_body_the_upstream_refused_early_is_a_413_not_a_500(stack: Stack) -> None:
    """The upstream answers as soon as the head arrives and closes; the client's chunked body goes on past
    the limit. The gateway must not write to the closed upstream (uvloop raises there: CI saw a 500)."""
    request = Request("early-oversized", "POST", b"x" * (LIMIT + 20_000), True, False, ("early",))
    body = request.encoded_body()
    with socket.create_connection(("127.0.0.1", stack.port), timeout=20) as conn:
        conn.sendall(request.head(stack.bearer) + body[:7010])  # the head and the first chunk
        time.sleep(0.5)  # the upstream has answered and closed by now
        with contextlib.suppress(ConnectionError):  # the gateway may close after its 413, unread bytes left
            conn.sendall(body[7010:])
        answer = b""
        with contextlib.suppress(ConnectionError, TimeoutError):
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                data = conn.recv(65536)
                if not data:
                    break
                answer += data
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    assert status == 413, answer[:300]
    assert b'"token"' not in answer  # the Guard's answer, not the upstream's echo


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/api/echo/version", 200),  # the route's own version, public by design
        ("/api/echo/all-my-data/version", 401),  # review finding 2: any path ending in /version went through
        ("/api/echo/secret%2Fversion", 401),  # ... and an encoded slash, forwarded raw
        ("/api/echo//version", 401),
        ("/api/echo/./version", 401),
        ("/api/echo/x/../version", 401),
        ("/api/echo/VERSION", 401),
    ],
)
def test_only_the_declared_public_paths_skip_the_token(stack: Stack, target: str, status: int) -> None:
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nhost: gw\r\nx-token: public\r\nconnection: close\r\n\r\n".encode())
        answer = b""
        while data := conn.recv(65536):
            answer += data
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    if status == 401:
        assert b'"token"' not in answer  # the upstream never saw it


def test_an_upstream_slow_to_answer_is_logged_while_it_is_waited_for(stack: Stack) -> None:
    """A client whose timeout is shorter than the gateway's leaves no trace of a request the upstream never
    answered (CI: 2 read timeouts of 4,939 under load, nothing in any log but an asyncio warning). The
    gateway logs a head it has waited for longer than SLOW_HEAD, naming the upstream and the request."""
    from mfe_services.gateway.app import SLOW_HEAD

    rid = f"slow{os.getpid()}"
    headers = {"authorization": stack.bearer.decode(), "x-token": rid, "x-delay": str(SLOW_HEAD + 0.5)}
    headers["x-request-id"] = rid
    answer = httpx.get(f"http://127.0.0.1:{stack.port}/api/echo/items", headers=headers, timeout=30)
    assert answer.status_code == 200 and answer.json()["token"] == rid
    lines = [json.loads(line) for line in stack.log.read_text().splitlines() if rid in line and line.startswith("{")]
    slow = [line for line in lines if line.get("message") == "upstream slow to answer"]
    assert len(slow) == 1, lines
    assert slow[0]["upstream"] == "echo" and slow[0]["reused"] in (True, False) and slow[0]["attempt"] == 1
    assert "never retrieved" not in stack.log.read_text()
