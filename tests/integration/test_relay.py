"""The relay (pipeline.engine.relay) on the real broker, without a worker around it: relays of
one group joining and leaving while records arrive, each source record relayed exactly once.

A pass-through transform names each output record by its source partition and offset, so a
record lost or relayed twice shows by name. The moves come while batches are being taken,
transformed and committed: a batch taken across a rebalance is dropped, and its partitions
must be read again from their commits, never skipped."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from pipeline.config import Settings
from pipeline.engine.clients import TopicSpec, create_topics, wait_committed
from pipeline.engine.relay import Output, Relay
from tests.integration.conftest import read_to_end

RECORDS = 30_000
SOURCE_PARTITIONS = 4


def relay_of(settings: Settings, source: str, output: str) -> Relay:
    def transform(tp: TopicPartition, records: Sequence[Any]) -> list[Output]:
        return [(output, f"{tp.partition}-{r.offset}".encode(), r.value) for r in records]

    # Small batches: many commits, so that every move falls among them.
    return Relay(settings, [source], f"{settings.app_id}-relay", transform, max_records=500)


async def produce_in_chunks(bootstrap: str, topic: str, chunks: int, done: asyncio.Event) -> None:
    """RECORDS unkeyed records, a chunk at a time until ``done``, then the rest at once."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        per_chunk = RECORDS // chunks
        for sent in range(0, RECORDS, per_chunk):
            for i in range(sent, min(sent + per_chunk, RECORDS)):
                await producer.send(topic, b"%d" % i, partition=i % SOURCE_PARTITIONS)
            await producer.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.2)  # pacing the traffic
    finally:
        await producer.stop()


@pytest.mark.timeout(300)
async def test_relays_joining_and_leaving_relay_every_record_once(make_config: Any) -> None:
    settings = Settings.model_validate(make_config())
    source, output = f"{settings.app_id}.relay-source", f"{settings.app_id}.relay-output"
    await create_topics(settings, [TopicSpec(source, {})], SOURCE_PARTITIONS)
    await create_topics(settings, [TopicSpec(output, {})], 2)
    group = f"{settings.app_id}-relay"
    bootstrap = settings.kafka.bootstrap_servers

    moves_done = asyncio.Event()
    producing = asyncio.create_task(produce_in_chunks(bootstrap, source, 60, moves_done))
    relays: dict[str, tuple[Relay, asyncio.Task[None]]] = {}

    def start(name: str) -> None:
        relay = relay_of(settings, source, output)
        relays[name] = (relay, asyncio.create_task(relay.run()))

    async def stop(name: str) -> None:
        relay, task = relays.pop(name)
        await relay.stop()
        await task

    committed = 0
    start("a")  # joins while the first records arrive
    for move in ("start b", "stop a", "start c", "stop b", "start a"):
        committed = await wait_committed(settings, source, committed + 1_000, 120, group=group)
        verb, name = move.split()
        if verb == "start":
            start(name)
        else:
            await stop(name)
    moves_done.set()
    await producing
    await wait_committed(settings, source, RECORDS, 120, group=group)
    for name in list(relays):
        await stop(name)

    relayed = Counter(record.key for record in await read_to_end(bootstrap, output))
    expected = {
        f"{i % SOURCE_PARTITIONS}-{i // SOURCE_PARTITIONS}".encode() for i in range(RECORDS)
    }
    missing = expected - set(relayed)
    assert not missing, f"{len(missing)} records lost: {sorted(missing)[:5]}"
    twice = sorted(
        (k for k, n in relayed.items() if n > 1), key=lambda k: tuple(map(int, k.split(b"-")))
    )
    assert not twice, f"records relayed twice: {len(twice)}: {twice[:5]} .. {twice[-5:]}"
