"""Every Kafka client the project makes outside the worker's App: admin (topics, committed
offsets), producers, and consumers that read a topic from its beginning (the org directory,
the operators' commands, the bench).

aiokafka's errors are translated here, once, into :class:`BrokerUnavailable`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, NamedTuple, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    GroupCoordinatorNotAvailableError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
)
from aiokafka.partitioner import DefaultPartitioner

from pipeline.config import Settings
from pipeline.engine.batches import append_to
from pipeline.engine.security import client_options, connection_problem
from pipeline.errors import BrokerUnavailable

#: The producer and consumer types the clients here make (for the bench's annotations).
Producer = AIOKafkaProducer
Consumer = AIOKafkaConsumer


def broker_unwell(exc: BaseException) -> bool:
    """Whether a send failed because the brokers are unwell (worth sending again later), not
    because of what was sent. aiokafka gives up with KafkaTimeoutError after its own retries."""
    return isinstance(exc, KafkaTimeoutError) or (isinstance(exc, KafkaError) and exc.retriable)


class TopicSpec(NamedTuple):
    name: str
    config: dict[str, str]


async def _unavailable(settings: Settings, exc: BaseException) -> BrokerUnavailable:
    """The one line that says why no client could start: a refused password or an untrusted
    certificate named as such, not as a missing broker."""
    problem = await connection_problem(settings.kafka)
    if problem is not None and not problem.startswith("nothing listens"):
        return BrokerUnavailable(f"cannot connect to Kafka: {problem}")
    return BrokerUnavailable(
        f"no Kafka broker at {settings.kafka.bootstrap_servers} ({type(exc).__name__}); "
        "start one with `deploy/kafka-local start` or set QP_KAFKA_BOOTSTRAP"
    )


#: How long an admin request is asked again while the cluster heals (one broker of several
#: down, a leader being elected): a dead broker leaves the metadata within the cluster's
#: session timeout (9 s by default), and each attempt asks a node at random.
ADMIN_PATIENCE = 30.0
T = TypeVar("T")


async def patiently(
    settings: Settings,
    ask: Callable[[], Awaitable[T]],
    answers: tuple[type[KafkaError], ...] = (),
) -> T:
    """``await ask()``, again while it fails in a way a cluster heals from; one line
    (BrokerUnavailable) when it does not heal in time or refuses outright (an ACL).
    ``answers`` are errors that are the broker's answer, raised as they are."""
    deadline = time.monotonic() + ADMIN_PATIENCE
    while True:
        try:
            return await ask()
        except answers:
            raise
        except (KafkaError, TimeoutError) as exc:
            retriable = isinstance(exc, TimeoutError) or exc.retriable
            if not retriable:
                raise BrokerUnavailable(
                    f"Kafka refused the request: {type(exc).__name__}: {exc}"
                ) from exc
            if time.monotonic() > deadline:
                raise await _unavailable(settings, exc) from exc
        await asyncio.sleep(0.5)  # back off while the cluster elects or fences


@asynccontextmanager
async def _running(
    settings: Settings,
    start: Callable[[], Awaitable[Any]],
    stop: Callable[[], Awaitable[Any]],
    timeout: float,
) -> AsyncIterator[None]:
    """Start a client, translating a broker that does not answer; always stop it."""
    try:
        await asyncio.wait_for(start(), timeout)
    except (TimeoutError, KafkaError, OSError) as exc:
        await stop()
        raise await _unavailable(settings, exc) from exc
    try:
        yield
    finally:
        await stop()


@asynccontextmanager
async def admin_client(
    settings: Settings, timeout: float = 10
) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(
        **client_options(settings.kafka), request_timeout_ms=int(timeout * 1000)
    )
    async with _running(settings, admin.start, admin.close, timeout):
        yield admin


async def probe_broker(settings: Settings, timeout: float = 10) -> None:
    """Raise BrokerUnavailable unless a broker answers a metadata request in time."""
    async with admin_client(settings, timeout) as admin:
        try:
            await patiently(settings, lambda: asyncio.wait_for(admin.list_topics(), timeout))
        except OSError as exc:
            raise await _unavailable(settings, exc) from exc


async def create_topics(
    settings: Settings, specs: Iterable[TopicSpec], partitions: int
) -> list[tuple[str, bool]]:
    """Create each topic unless it exists; return (name, created) pairs. Idempotent."""
    results: list[tuple[str, bool]] = []
    async with admin_client(settings) as admin:
        existing = set(await patiently(settings, admin.list_topics))
        for spec in specs:
            if spec.name in existing:
                results.append((spec.name, False))
                continue
            topic = NewTopic(
                spec.name, partitions, settings.kafka.replication_factor, topic_configs=spec.config
            )
            try:
                await patiently(
                    settings,
                    functools.partial(admin.create_topics, [topic]),
                    answers=(TopicAlreadyExistsError,),
                )
            except TopicAlreadyExistsError:
                results.append((spec.name, False))  # created concurrently by someone else
            else:
                results.append((spec.name, True))
    return results


@asynccontextmanager
async def producer(settings: Settings, **options: Any) -> AsyncIterator[AIOKafkaProducer]:
    """An idempotent producer that waits for every replica (acks=all); ``options`` add to or
    replace aiokafka's (the bench's batch sizes)."""
    client = AIOKafkaProducer(
        **{
            **client_options(settings.kafka),
            "enable_idempotence": True,
            "acks": "all",
            "linger_ms": 5,
            **options,
        }
    )
    async with _running(settings, client.start, client.stop, 15):
        yield client


async def send_keyed(
    client: AIOKafkaProducer,
    topic: str,
    records: Iterable[tuple[bytes, bytes | None]],
    headers: list[tuple[str, bytes]],
) -> int:
    """Send (key, value) records, each with ``headers``, to its key's partition under the
    default partitioner (where a keyed send puts it); return how many once the broker has
    acknowledged them all.

    Records are appended to a record batch per partition, each sent once full: ``send`` per
    record took about 38 µs (a million sessions in 38 s), of which aiokafka's murmur2 in
    Python is 12 µs; appending to a batch costs 2 to 5 µs more.
    """
    partitions = sorted(await client.partitions_for(topic))
    partitioner = DefaultPartitioner()
    filling: dict[int, Any] = {}
    acks: list[asyncio.Future[Any]] = []
    count = 0
    for key, value in records:
        partition = partitioner(key, partitions, partitions)
        full = append_to(client, filling, partition, key, value, headers=headers)
        if full is not None:
            acks.append(await client.send_batch(full, topic, partition=partition))
        count += 1
    for partition, batch in filling.items():
        if batch.record_count():
            acks.append(await client.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*acks)
    return count


@asynccontextmanager
async def consumer(settings: Settings, **options: Any) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer outside any group (partitions are assigned, offsets never committed) that
    reads committed records only; ``options`` add to or replace aiokafka's."""
    client = AIOKafkaConsumer(
        **{
            **client_options(settings.kafka),
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "isolation_level": "read_committed",
            **options,
        }
    )
    async with _running(settings, client.start, client.stop, 15):
        yield client


async def partitions_of(settings: Settings, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic``, asked of the cluster (a consumer outside a group knows only
    the topics it is told of, and aiokafka's ``topics()`` does not tell it); none when the
    topic does not exist."""
    async with admin_client(settings) as admin:
        # Asked only of a topic that exists: a metadata request for a missing one creates it
        # where the broker auto-creates topics, with the broker's partition count.
        if topic not in await patiently(settings, admin.list_topics):
            return []
        described = await patiently(settings, lambda: admin.describe_topics([topic]))
    return [
        TopicPartition(topic, partition["partition"])
        for found in described
        if found["topic"] == topic and found["error_code"] == 0
        for partition in sorted(found["partitions"], key=lambda p: p["partition"])
    ]


async def read_to(client: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    """Whether every partition of ``ends`` is read up to its end offset there."""
    for tp, end in ends.items():
        if await client.position(tp) < end:
            return False
    return True


async def read_topic(
    settings: Settings, topic: str, *, last: int | None = None
) -> list[Any] | None:
    """Every committed record of ``topic`` up to its end when called (or about the ``last`` of
    each partition), in partition order; None when the topic does not exist."""
    tps = await partitions_of(settings, topic)
    if not tps:
        return None
    async with consumer(settings) as client:
        client.assign(tps)
        await client.seek_to_beginning(*tps)
        ends = await client.end_offsets(tps)
        if last is not None:
            # By offset: transaction markers take offsets too, so a few fewer may come.
            starts = await client.beginning_offsets(tps)
            for tp, end in ends.items():
                client.seek(tp, max(starts[tp], end - last))
        records: list[Any] = []
        while not await read_to(client, ends):
            batch = await client.getmany(timeout_ms=1000, max_records=10_000)
            for messages in batch.values():
                records.extend(messages)
        return records


async def scan_topic(
    settings: Settings, topic: str, apply: Callable[[bytes | None, bytes | None, Any], None]
) -> bool:
    """Apply every committed record of ``topic`` up to its end when called, as (key, value,
    headers: (name, bytes) pairs), each partition's in order, without keeping them (a sync
    reads a million sessions); False when the topic does not exist."""
    tps = await partitions_of(settings, topic)
    if not tps:
        return False
    async with consumer(settings) as client:
        client.assign(tps)
        await client.seek_to_beginning(*tps)
        ends = await client.end_offsets(tps)
        while not await read_to(client, ends):
            batch = await client.getmany(timeout_ms=1000, max_records=10_000)
            for messages in batch.values():
                for message in messages:
                    apply(message.key, message.value, message.headers)
        return True


async def follow_topic(
    settings: Settings,
    topic: str,
    apply: Callable[[bytes | None, bytes | None], None],
    caught_up: Callable[[], None],
) -> None:
    """Apply every record (key, value) of ``topic`` from its beginning, for as long as this
    runs; ``caught_up`` is called once every record as of the start has been applied (at once
    while the topic does not exist: there is nothing to know yet)."""
    tps = await partitions_of(settings, topic)
    while not tps:
        caught_up()
        await asyncio.sleep(1)  # until `topics create` makes it
        tps = await partitions_of(settings, topic)
    async with consumer(settings) as client:
        client.assign(tps)
        await client.seek_to_beginning(*tps)
        ends = await client.end_offsets(tps)
        told = False
        while True:
            if not told and await read_to(client, ends):
                caught_up()
                told = True
            batch = await client.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    apply(record.key, record.value)


async def committed(settings: Settings, topic: str, *, group: str | None = None) -> int:
    """Offsets the worker's group (or ``group``: the ingest relay's is its own) has committed
    on ``topic``; 0 before the group exists."""
    async with admin_client(settings) as admin:
        return await _committed(admin, group or settings.app_id, topic)


async def _committed(admin: AIOKafkaAdminClient, group: str, topic: str) -> int:
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    except GroupCoordinatorNotAvailableError:
        return 0
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)


#: How often wait_committed asks. The bench times the usage stage until its commit: one client
#: asking every 50 ms, where a new client every 0.2 s took about 0.3 s a question, and a 300,000
#: record run lasts 2 to 3 s.
COMMITTED_POLL = 0.05


async def wait_committed(
    settings: Settings, topic: str, target: int, timeout: float, *, group: str | None = None
) -> int:
    """Once the worker's group (or ``group``) has committed at least ``target`` offsets on
    ``topic``, return how many it has."""
    deadline = time.monotonic() + timeout
    async with admin_client(settings) as admin:
        while (done := await _committed(admin, group or settings.app_id, topic)) < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: offsets did not reach {target} in {timeout}s")
            await asyncio.sleep(COMMITTED_POLL)  # poll interval
    return done
