"""Kafka clients for the command line: admin, producer, broker probe.

aiokafka's errors are translated here, once, into :class:`BrokerUnavailable`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from itertools import zip_longest
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    GroupCoordinatorNotAvailableError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
)
from aiokafka.partitioner import DefaultPartitioner

from pipeline.config import Settings
from pipeline.errors import BrokerUnavailable

#: A week; the dead-letter topic keeps four weeks so operators have time to redrive.
DLQ_RETENTION_MS = 28 * 24 * 3600 * 1000


class RecordBatches:
    """Records for one partition, appended to aiokafka record batches, each sent once full.

    ``send`` per record costs about 10 µs in aiokafka alone (and 30 µs or more through faust);
    appending to a batch 2 to 5 µs.
    """

    def __init__(self, producer: Any, topic: str, partition: int) -> None:
        self._producer = producer
        self._topic = topic
        self._partition = partition
        self._batch = producer.create_batch()
        #: The broker's acknowledgement of each batch sent, in order.
        self.acks: list[asyncio.Future[Any]] = []
        #: Records in the batch being filled (the last, once :meth:`close` sent it).
        self.in_last = 0

    async def add(self, key: bytes | None, value: bytes | None) -> None:
        if self._batch.append(key=key, value=value, timestamp=None) is None:  # full: send it
            await self._send()
            self._batch = self._producer.create_batch()
            self._batch.append(key=key, value=value, timestamp=None)  # the first always fits
            self.in_last = 0
        self.in_last += 1

    async def close(self) -> list[asyncio.Future[Any]]:
        """Send the batch being filled (unless empty); the acknowledgements of every batch."""
        if self.in_last:
            await self._send()
        return self.acks

    async def _send(self) -> None:
        sent = await self._producer.send_batch(self._batch, self._topic, partition=self._partition)
        self.acks.append(sent)


def filled_batches(
    producer: Any, records: Iterable[tuple[bytes | None, bytes | None]]
) -> list[Any]:
    """``records`` appended, in order, to as many record batches as they take (none sent)."""
    batches: list[Any] = []
    for key, value in records:
        if not batches or batches[-1].append(key=key, value=value, timestamp=None) is None:
            batches.append(producer.create_batch())
            batches[-1].append(key=key, value=value, timestamp=None)  # the first always fits
    return batches


def partitioned_batches(
    producer: Any, records: Iterable[tuple[int, bytes, bytes]]
) -> list[tuple[int, Any]]:
    """``records`` (partition, key, value) in record batches (none sent), each partition's in
    order, the partitions taken in turn so that sending them fills every partition at once."""
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
    for partition, key, value in records:
        by_partition.setdefault(partition, []).append((key, value))
    filled = [
        [(partition, batch) for batch in filled_batches(producer, in_partition)]
        for partition, in_partition in by_partition.items()
    ]
    return [batch for turn in zip_longest(*filled) for batch in turn if batch is not None]


class KeyPartitions:
    """A key's partition under aiokafka's default partitioner (where a keyed send puts it),
    remembered per key: murmur2 in Python costs a few µs, and load generators reuse keys."""

    def __init__(self, partitions: list[int]) -> None:
        self.partitions = partitions
        self._partitioner = DefaultPartitioner()
        self._known: dict[bytes, int] = {}

    def __call__(self, key: bytes) -> int:
        partition = self._known.get(key)
        if partition is None:
            partition = self._known[key] = self._partitioner(key, self.partitions, self.partitions)
        return partition


def broker_unwell(exc: BaseException) -> bool:
    """Whether a send failed because the brokers are unwell (worth sending again later), not
    because of what was sent. aiokafka gives up with KafkaTimeoutError after its own retries."""
    return isinstance(exc, KafkaTimeoutError) or (isinstance(exc, KafkaError) and exc.retriable)


class TopicSpec(NamedTuple):
    name: str
    config: dict[str, str]


def contract_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic of the contract with its cleanup policy."""
    names = settings.topics
    delete = {"cleanup.policy": "delete"}
    compact = {"cleanup.policy": "compact"}
    return [
        TopicSpec(names.requests, delete),
        TopicSpec(names.sessions, compact),
        TopicSpec(names.orgs, compact),
        TopicSpec(names.triggers, delete),
        TopicSpec(names.portal_events, delete),
        TopicSpec(names.dlq, {**delete, "retention.ms": str(DLQ_RETENTION_MS)}),
        TopicSpec(names.rejected, delete),
    ]


def _unavailable(settings: Settings, exc: BaseException) -> BrokerUnavailable:
    return BrokerUnavailable(
        f"no Kafka broker at {settings.kafka.bootstrap_servers} ({type(exc).__name__}); "
        "start one with `deploy/kafka-local start` or set QP_KAFKA_BOOTSTRAP"
    )


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
        raise _unavailable(settings, exc) from exc
    try:
        yield
    finally:
        await stop()


@asynccontextmanager
async def admin_client(
    settings: Settings, timeout: float = 10
) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka.bootstrap_servers, request_timeout_ms=int(timeout * 1000)
    )
    async with _running(settings, admin.start, admin.close, timeout):
        yield admin


async def probe_broker(settings: Settings, timeout: float = 10) -> None:
    """Raise BrokerUnavailable unless a broker answers a metadata request in time."""
    async with admin_client(settings, timeout) as admin:
        try:
            await asyncio.wait_for(admin.list_topics(), timeout)
        except (TimeoutError, KafkaError, OSError) as exc:
            raise _unavailable(settings, exc) from exc


async def create_topics(
    settings: Settings, specs: Iterable[TopicSpec], partitions: int
) -> list[tuple[str, bool]]:
    """Create each topic unless it exists; return (name, created) pairs. Idempotent."""
    results: list[tuple[str, bool]] = []
    async with admin_client(settings) as admin:
        existing = set(await admin.list_topics())
        for spec in specs:
            if spec.name in existing:
                results.append((spec.name, False))
                continue
            topic = NewTopic(
                spec.name, partitions, settings.kafka.replication_factor, topic_configs=spec.config
            )
            try:
                await admin.create_topics([topic])
            except TopicAlreadyExistsError:
                results.append((spec.name, False))  # created concurrently by someone else
            else:
                results.append((spec.name, True))
    return results


@asynccontextmanager
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    """An idempotent producer that waits for every replica (acks=all)."""
    client = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
    )
    async with _running(settings, client.start, client.stop, 15):
        yield client


async def committed(settings: Settings, topic: str) -> int:
    """Offsets the worker's group has committed on ``topic``; 0 before the group exists."""
    async with admin_client(settings) as admin:
        return await _committed(admin, settings.app_id, topic)


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


async def wait_committed(settings: Settings, topic: str, target: int, timeout: float) -> None:
    """Return once the worker's group has committed ``target`` offsets on ``topic``."""
    deadline = time.monotonic() + timeout
    async with admin_client(settings) as admin:
        while await _committed(admin, settings.app_id, topic) < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: offsets did not reach {target} in {timeout}s")
            await asyncio.sleep(COMMITTED_POLL)  # poll interval
