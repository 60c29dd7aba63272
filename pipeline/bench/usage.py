"""`quota-pipeline bench`, usage part: the load, the raw consume ceiling, and the usage stage run
by W worker processes of one consumer group until their committed offsets reach the end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from pipeline.bench.plan import PlannedRecord
from pipeline.cli.files import publish
from pipeline.config import Settings
from pipeline.devtools.local import WorkerProcess, free_port, wait_group_settled
from pipeline.engine.batches import KeyPartitions, partitioned_batches
from pipeline.engine.clients import consumer, partitions_of, producer, wait_committed

#: Event time of the first record of a usage run; the load runs at 1,000 records per second of
#: event time, well inside one quota period of the sessions.
T0 = 1_700_000_000.0
#: The load generator's producer: no idempotence (one connection's worth of ordering is
#: enough), large batches that wait up to 20 ms to fill.
LOAD_PRODUCER = {"enable_idempotence": False, "acks": 1, "linger_ms": 20, "max_batch_size": 262_144}
#: Each key's session in the usage runs: a quota that the hottest keys of a zipf load cross.
USAGE_SESSION = {"quota_max": 1000, "quota_renewal_rate": 3600}
#: Each org's record in the usage runs: a quota that no load reaches (org usage is counted, as
#: where org quotas are used, and nothing fires).
USAGE_ORG = {"quota_max": 1_000_000_000_000, "quota_renewal_rate": 3600}


@dataclass(frozen=True)
class Produced:
    """What produce_load sent."""

    records: int
    #: The sum of the records' ``count`` fields.
    requests: int
    per_s: float
    #: perf_counter() when the first record was sent (the load was encoded before then).
    started: float


@dataclass(frozen=True)
class UsageRun:
    """The usage stage timed on one load: from every worker ready to every offset committed."""

    records: int
    requests: int
    seconds: float

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds


def key_name(index: int) -> str:
    return f"bench-key-{index}"


def org_name(index: int) -> str:
    return f"bench-org-{index}"


class EncodedLoad(NamedTuple):
    """A load's records, in plan order, each encoded and placed in its partition."""

    #: (partition, key, value)
    records: list[tuple[int, bytes, bytes]]
    #: The sum of the records' ``count`` fields.
    requests: int


def encode_load(plan: Iterable[PlannedRecord], partitions: Sequence[int]) -> EncodedLoad:
    """Each record's JSON and partition: that of its key under aiokafka's default partitioner,
    as a keyed send would choose (the sessions are published so)."""
    partition_of = KeyPartitions(list(partitions))
    records = []
    requests = 0
    for i, record in enumerate(plan):
        name = key_name(record.key)
        key = name.encode()
        partition = partition_of(key)
        value = orjson.dumps(
            {
                "ts": T0 + i / 1000,
                "org_id": org_name(record.org),
                "key": name,
                "count": record.requests,
            }
        )
        records.append((partition, key, value))
        requests += record.requests
    return EncodedLoad(records, requests)


async def produce_load(settings: Settings, plan: Iterable[PlannedRecord]) -> Produced:
    """Produce the request counts as fast as the client allows, into their keys' partitions.

    The load is encoded and put into aiokafka's record batches first, per partition; only
    their sending is timed. Encoding each record as it went made about 100,000 records/s, and
    appending each to a batch while the clock ran kept the bench process on a core of its own
    (300,000 to 450,000 records/s) for the first half of the usage stage, beside the workers
    and the broker on this 2-core machine. One ``send`` per record made about 30,000 records/s.
    """
    topic = settings.topics.requests
    async with producer(settings, **LOAD_PRODUCER) as client:
        partitions = sorted(await client.partitions_for(topic))
        load = encode_load(plan, partitions)
        batches = partitioned_batches(client, load.records)
        started = time.perf_counter()
        acks = [
            await client.send_batch(batch, topic, partition=partition)
            for partition, batch in batches
        ]
        await asyncio.gather(*acks)
    records = len(load.records)
    return Produced(records, load.requests, records / (time.perf_counter() - started), started)


async def ceiling(settings: Settings, records: int) -> float:
    """A bare consumer reading and decoding every record: the rate the pipeline is held to."""
    async with consumer(
        settings, isolation_level="read_uncommitted", max_partition_fetch_bytes=4 * 1024 * 1024
    ) as client:
        # Assigned, not subscribed: no group join inside the timed part.
        tps = await partitions_of(settings, settings.topics.requests)
        client.assign(tps)
        await client.seek_to_beginning(*tps)
        seen = 0
        started = time.perf_counter()
        while seen < records:
            batch = await client.getmany(timeout_ms=1000, max_records=10_000)
            for messages in batch.values():
                for message in messages:
                    orjson.loads(message.value)
                seen += len(messages)
        return records / (time.perf_counter() - started)


def worker_configs(config: dict[str, Any], workers: int) -> list[dict[str, Any]]:
    """One config per worker of the group: the first is ``config`` itself, each other has a
    data dir and a web port of its own."""
    return [config] + [
        {
            **config,
            "data_dir": f"{config['data_dir']}-w{i}",
            "web": {**config["web"], "port": free_port()},
        }
        for i in range(1, workers)
    ]


async def start_workers(
    configs: Sequence[dict[str, Any]], workdir: Path, name: str, *, timeout: float = 300
) -> list[WorkerProcess]:
    """Start one worker per config; return once they form a settled group: every one ready
    in the same group generation.

    Waiting for each to be ready twice was not enough: the first could still answer ready
    from before the others joined, and the latency bench then began while the group still
    rebalanced: its first records waited up to 1.5 s.
    """
    workers = [
        WorkerProcess(config, workdir, name=f"{name}-{i}") for i, config in enumerate(configs)
    ]
    for worker in workers:
        worker.start()
    try:
        await wait_group_settled(workers, timeout)
    except BaseException:
        await stop_workers(workers)
        raise
    return workers


async def stop_workers(workers: Sequence[WorkerProcess]) -> None:
    """SIGTERM every worker and wait for them together."""
    await asyncio.gather(*(asyncio.to_thread(worker.stop) for worker in workers))


async def usage_run(
    config: dict[str, Any],
    workdir: Path,
    plan: Iterable[PlannedRecord],
    *,
    keys: int,
    orgs: int,
    workers: int,
    name: str,
) -> tuple[UsageRun, Produced]:
    """The usage stage of W workers in one group on the run's topics (which must exist).

    Every key gets a session and every org a record, and the group loads them before anything
    is timed (as in production, workers know their keys before the traffic). The clock runs
    from the first record sent (the load is encoded before), as fast as the client allows,
    until the group's committed offsets on the requests topic reach every record: the load
    arrives faster than the stage takes it, and no start-up or rebalance is timed.
    """
    settings = Settings.model_validate(config)
    session = orjson.dumps(USAGE_SESSION)
    await publish(settings, settings.topics.sessions, [(key_name(i), session) for i in range(keys)])
    org = orjson.dumps(USAGE_ORG)
    await publish(settings, settings.topics.orgs, [(org_name(i), org) for i in range(orgs)])
    running = await start_workers(worker_configs(config, workers), workdir, name)
    try:
        await wait_committed(settings, settings.topics.sessions, keys, timeout=600)
        await wait_committed(settings, settings.topics.orgs, orgs, timeout=600)
        produced = await produce_load(settings, plan)
        await wait_committed(settings, settings.topics.requests, produced.records, timeout=1800)
        seconds = time.perf_counter() - produced.started
    finally:
        await stop_workers(running)
    return UsageRun(produced.records, produced.requests, seconds), produced
