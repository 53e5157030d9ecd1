"""The event hubs on real brokers: a message a consumer cannot process is retried, then parked in a
dead-letter queue/stream; a consumer that dies before acknowledging does not lose its message. On
RabbitMQ every bus connects as its service's own user, created by mfe-deploy's definitions: what the
services do works with nothing more, and a service cannot reach another's queue."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from mfe_deploy import hub
from mfe_deploy.config.secrets import Secrets
from mfe_deploy.exec.secret import Secret
from mfe_services.common.events import STREAM, Event, RabbitBus, RedisStreamBus, matches
from tests.servers import RabbitMQ, rabbitmq_server, redis_server

PASSWORD = "events-test-password-0123456789"
START_WITHIN = 60  # seconds a bus may take to connect (see _start)
SCENARIO_WITHIN = 180  # a scenario: its buses' connects, then seconds of work
Factory = Callable[[str], Any]


@pytest.fixture(scope="module", params=["rabbitmq", "redis"])
def make_bus(request: pytest.FixtureRequest) -> Iterator[Factory]:
    if request.param == "rabbitmq":
        with rabbitmq_server(PASSWORD) as rabbit:
            yield lambda service: RabbitBus(_service_user(rabbit, service), service)
    else:
        with redis_server() as redis:
            url = f"redis://127.0.0.1:{redis.port}/0"
            yield lambda service: RedisStreamBus(url, service, retry_after_ms=200, max_deliveries=3)


def _service_user(rabbit: RabbitMQ, service: str) -> str:
    """The service's own user, as `up` creates it (derived password, definitions on stdin): its URL."""
    own = {service: Secret(f"{service}-own-password-0123456789")}
    unused = Secret("unused")
    secrets = Secrets((), unused, {}, rabbitmq_password=Secret(PASSWORD), sentry_dsn=None, hub_users=own)
    rabbit.ctl("import_definitions", stdin=hub.definitions(secrets).reveal())
    return f"amqp://{service}:{service}-own-password-0123456789@127.0.0.1:{rabbit.port}/"


async def _start(bus: Any) -> None:
    """Start a bus as a service does (`connect_bus`): again on its 5 s connect timeout, for up to 60 s, as
    a broker starved by the other groups of a busy CI host can miss several (a CI run missed three in a
    row); anything else fails the test at once."""
    deadline = asyncio.get_running_loop().time() + START_WITHIN
    while True:
        try:
            await bus.start()
            return
        except TimeoutError:
            if asyncio.get_running_loop().time() > deadline:
                raise


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 15) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return False


async def _dead_letters(bus: Any, service: str) -> int:
    if isinstance(bus, RabbitBus):
        channel = await bus._connection.channel()
        queue = await channel.declare_queue(f"{service}.events.dead", durable=True, passive=True)
        await channel.close()
        return int(queue.declaration_result.message_count)
    return int(await bus._redis.xlen(f"{STREAM}:dead:{service}"))


def test_a_failing_handler_gets_the_message_again(make_bus: Factory) -> None:
    async def scenario() -> None:
        service = f"retry{uuid.uuid4().hex[:6]}"
        consumer, publisher = make_bus(service), make_bus("publisher")
        attempts: list[str] = []

        async def flaky(event: Event) -> None:
            attempts.append(event.id)
            if len(attempts) == 1:
                raise RuntimeError("database briefly unavailable")

        await _start(consumer)
        await _start(publisher)
        await consumer.consume(["order.*"], flaky)
        event = Event(type="order.placed", source="test", data={"n": 1})
        await publisher.publish(event)
        assert await _until(lambda: _ready(len(attempts) >= 2))
        assert attempts[:2] == [event.id, event.id]
        assert await _dead_letters(consumer, service) == 0
        await consumer.close()
        await publisher.close()

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_WITHIN))


def test_a_poison_message_is_parked_not_dropped(make_bus: Factory) -> None:
    async def scenario() -> None:
        service = f"poison{uuid.uuid4().hex[:6]}"
        consumer, publisher = make_bus(service), make_bus("publisher")

        async def broken(event: Event) -> None:
            raise ValueError("cannot process this one")

        await _start(consumer)
        await _start(publisher)
        await consumer.consume(["bad.#"], broken)
        await publisher.publish(Event(type="bad.message", source="test", data={}))
        assert await _until(lambda: _count_is(consumer, service, 1)), "the message was not dead-lettered"
        await consumer.close()
        await publisher.close()

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_WITHIN))


def test_a_consumer_that_dies_before_ack_does_not_lose_the_message(make_bus: Factory) -> None:
    async def scenario() -> None:
        service = f"crash{uuid.uuid4().hex[:6]}"
        first, second, publisher = make_bus(service), make_bus(service), make_bus("publisher")
        started = asyncio.Event()
        handled: list[str] = []

        async def hang(event: Event) -> None:
            started.set()
            await asyncio.sleep(3600)  # the process "dies" before it acknowledges

        async def record(event: Event) -> None:
            handled.append(event.id)

        await _start(first)
        await _start(publisher)
        await first.consume(["job.*"], hang)
        event = Event(type="job.created", source="test", data={})
        await publisher.publish(event)
        await asyncio.wait_for(started.wait(), 15)
        await first.close()
        await _start(second)
        await second.consume(["job.*"], record)
        assert await _until(lambda: _ready(event.id in handled)), "the unacknowledged message was lost"
        await second.close()
        await publisher.close()

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_WITHIN))


async def _ready(value: bool) -> bool:
    return value


async def _count_is(bus: Any, service: str, want: int) -> bool:
    return await _dead_letters(bus, service) == want


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("#", "user.registered", True),
        ("user.*", "user.registered", True),
        ("user.*", "user.a.b", False),
        ("user.#", "user", True),
        ("*.created", "payment.created", True),
        ("payment.created", "payment.failed", False),
    ],
)
def test_topic_matching(pattern: str, key: str, expected: bool) -> None:
    assert matches(pattern, key) is expected


def test_a_service_user_reaches_its_own_queues_only() -> None:
    """payments' user cannot consume, purge, bind or delete auth's queues, declare a queue of another
    name, nor log in with another password."""
    import aio_pika
    from aiormq.exceptions import ChannelAccessRefused, ProbableAuthenticationError

    async def scenario(rabbit: RabbitMQ) -> None:
        auth = RabbitBus(_service_user(rabbit, "auth"), "auth")
        await _start(auth)
        await auth.consume(["user.*"], _ignore)  # declares auth.events and its dead-letter queue
        url = _service_user(rabbit, "payments")
        connection = await aio_pika.connect(url)

        async def queue(ch: Any, name: str = "auth.events") -> Any:
            return await ch.get_queue(name, ensure=False)  # a handle only: nothing is asked of the broker

        async def consume(ch: Any) -> Any:
            return await (await queue(ch)).consume(_ignore)  # read

        async def purge(ch: Any) -> Any:
            return await (await queue(ch, "auth.events.dead")).purge()  # read

        async def bind(ch: Any) -> Any:
            return await (await queue(ch)).bind("mfe.events", "#")  # write

        async def delete(ch: Any) -> Any:
            return await (await queue(ch)).delete(if_unused=False)  # configure

        async def declare(ch: Any) -> Any:
            return await ch.declare_queue("anything.else", durable=True)  # configure

        for attempt in (consume, purge, bind, delete, declare):
            channel = await connection.channel()
            with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
                await attempt(channel)
        await connection.close()
        with pytest.raises(ProbableAuthenticationError):
            await aio_pika.connect(url.replace("payments-own-password", "payments-guessed-password"))
        await auth.close()

    with rabbitmq_server(PASSWORD) as rabbit:
        asyncio.run(asyncio.wait_for(scenario(rabbit), 60))


async def _ignore(event: Event) -> None:
    return None
