"""A fixed-rate load through nginx for zero-downtime checks (bench/zero_downtime.py and the docker tests).

Keep-alive clients and clients that open a new connection for every request send a mix of reads and
writes (GET /api/auth/me, GET /api/payments, POST /api/payments) at a fixed total rate; every answer
that is not 2xx, and every connection error, is a failed request. Bounded: it stops when told to or
after `limit` seconds, whichever comes first."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx


@dataclass
class Tally:
    sent: int = 0
    failed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    request_ids: list[str] = field(default_factory=list)  # of the failed answers: to find in the logs
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ok: bool, reason: str = "", request_id: str | None = None) -> None:
        with self.lock:
            self.sent += 1
            if not ok:
                self.failed += 1
                self.reasons[reason[:300]] += 1
                if request_id:
                    self.request_ids.append(request_id)


class Load:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        rate: float = 200,
        keepalive_share: float = 0.75,
        limit: float = 600,
        health_every: float = 0.0,
    ) -> None:
        self.base_url, self.headers = base_url, {"Authorization": f"Bearer {token}"}
        self.rate, self.limit = rate, limit
        # As an external load balancer or monitor does: GET /health every `health_every` seconds (0: not at
        # all), below nginx's own limit for it (10/s); anything but 200 is counted in `health`, apart.
        self.health_every = health_every
        self.keepalive_workers, self.fresh_workers = 12, 4
        self.keepalive_rate = rate * keepalive_share
        self.tally = Tally()
        self.health = Tally()  # the /health polls
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        for _ in range(self.keepalive_workers):
            self.threads.append(threading.Thread(target=self._keepalive, daemon=True))
        for _ in range(self.fresh_workers):
            self.threads.append(threading.Thread(target=self._fresh, daemon=True))
        if self.health_every:
            self.threads.append(threading.Thread(target=self._health, daemon=True))
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=30)
        self.seconds = time.monotonic() - self.started

    def _request(self, client: httpx.Client, n: int) -> None:
        kind = n % 4
        # Our own request id (nginx and the gateway pass it on): a request that got no answer at all
        # (a read timeout) is found in every log as well as one that got an error.
        rid = uuid.uuid4().hex
        headers = {**self.headers, "X-Request-ID": rid}
        try:
            if kind == 0:
                answer = client.post(
                    "/api/payments",
                    json={"amount": 100, "currency": "EUR", "description": "load"},
                    headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
                )
            else:
                answer = client.get("/api/auth/me" if kind % 2 else "/api/payments", headers=headers)
            ok = 200 <= answer.status_code < 300
            reason = f"{answer.status_code} {answer.request.url.path} {answer.text[:60]}"
            self.tally.add(ok, reason, rid)
        except httpx.HTTPError as exc:
            self.tally.add(False, f"{type(exc).__name__}: {exc} ({_what(exc)})", rid)

    def _paced(self, interval: float, send: Callable[[int], None]) -> None:
        n = 0
        next_at = time.monotonic()
        deadline = self.started + self.limit
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            send(n)
            n += 1
            next_at += interval
            pause = next_at - time.monotonic()
            if pause > 0:
                self.stop_event.wait(pause)
            else:
                next_at = time.monotonic()  # behind: do not pile up

    def _keepalive(self) -> None:
        interval = self.keepalive_workers / self.keepalive_rate
        with httpx.Client(base_url=self.base_url, verify=False, timeout=10) as client:
            self._paced(interval, lambda n: self._request(client, n))

    def _health(self) -> None:
        def probe(client: httpx.Client) -> None:
            rid = uuid.uuid4().hex
            try:
                answer = client.get("/health", headers={"X-Request-ID": rid})
                reason = f"{answer.status_code} /health {answer.text}"
                self.health.add(answer.status_code == 200, reason, rid)
            except httpx.HTTPError as exc:
                self.health.add(False, f"{type(exc).__name__}: {exc} (GET /health)", rid)

        with httpx.Client(base_url=self.base_url, verify=False, timeout=10) as client:
            self._paced(self.health_every, lambda n: probe(client))

    def _fresh(self) -> None:
        interval = self.fresh_workers / (self.rate - self.keepalive_rate)

        def one(n: int) -> None:
            with httpx.Client(base_url=self.base_url, verify=False, timeout=10) as client:
                self._request(client, n)

        self._paced(interval, one)


def _what(exc: httpx.HTTPError) -> str:
    try:
        return f"{exc.request.method} {exc.request.url.path}"
    except RuntimeError:  # an error raised before a request was made
        return "no request"


def main(argv: list[str]) -> None:
    """`python -m tests.load BASE_URL TOKEN RATE LIMIT [HEALTH_EVERY]`: send until stdin closes (or LIMIT
    seconds), then print the tally (and the /health polls') as JSON. For a client in another network
    namespace (the swarm tests)."""
    import json
    import sys

    base, token, rate, limit = argv[0], argv[1], float(argv[2]), float(argv[3])
    health_every = float(argv[4]) if len(argv) > 4 else 0.0
    with Load(base, token, rate=rate, limit=limit, health_every=health_every) as load:
        print("started", flush=True)
        sys.stdin.read()
    reasons = dict(load.tally.reasons.most_common(5))
    health = {
        "sent": load.health.sent,
        "failed": load.health.failed,
        "reasons": dict(load.health.reasons.most_common(3)),
    }
    print(
        json.dumps({"sent": load.tally.sent, "failed": load.tally.failed, "reasons": reasons, "health": health}),
        flush=True,
    )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
