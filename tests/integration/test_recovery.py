"""A worker restarted without its data dir rebuilds every table from the changelogs, exactly:
each RocksDB partition holds the last value of each of its keys in the changelog (read_committed)
and nothing else, whatever recovery dropped, repeated or applied out of order would show.

Every session key is written once (a dropped record loses a key), some are updated several times
and the usage of a few keys grows batch by batch (a record applied twice after a later one leaves
an old value), and one key is deleted (its tombstone must delete it). Under exactly_once an aborted
transaction ends a changelog partition: its records must not be applied, and the offsets it and
the commit markers hold are never read, yet recovery must end.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from rocksdict import AccessType, Options, Rdict

from pipeline.cli.files import publish
from pipeline.devtools.local import free_port
from tests.integration.conftest import (
    poll,
    produce,
    read_to_end,
    request_count,
    wait_for_table,
)

TABLES = ["sessions", "key_usage", "orgs", "org_usage", "applied_offsets"]
#: faust's key for a partition's last applied changelog offset in each RocksDB.
OFFSET_KEY = b"__faust\x00offset__"
ONCE = [f"rec-once-{i:03d}" for i in range(300)]
UPDATED = [f"rec-updated-{i}" for i in range(5)]
DELETED = "rec-deleted"
BUSY = ONCE[:20]
REQUESTS = 2_000
ROUNDS = 4


def session(quota_max: int) -> bytes:
    return orjson.dumps({"org_id": "org1", "quota_max": quota_max, "quota_renewal_rate": 0})


def usage_total(state: dict[str, Any]) -> int:
    return sum(value["current"]["usage"] for value in state.values())


def changelog(settings: Any, table: str) -> str:
    return f"{settings.app_id}-{table}-changelog"


async def changelog_state(settings: Any, table: str) -> dict[int, dict[bytes, bytes]]:
    """Partition -> key -> the last value in the changelog (read_committed), tombstones
    deleting."""
    state: dict[int, dict[bytes, bytes]] = defaultdict(dict)
    for record in await read_to_end(settings.kafka.bootstrap_servers, changelog(settings, table)):
        if record.value is None:
            state[record.partition].pop(record.key, None)
        else:
            state[record.partition][record.key] = record.value
    return {partition: keys for partition, keys in state.items() if keys}


def stored_state(data_dir: str, table: str) -> dict[int, dict[bytes, bytes]]:
    """Partition -> key -> value in a stopped worker's RocksDB files of ``table``."""
    state = {}
    for path in Path(data_dir).glob(f"**/tables/{table}-*.db"):
        partition = int(path.name.removesuffix(".db").rpartition("-")[2])
        db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            keys = {key: value for key, value in db.items() if key != OFFSET_KEY}
        finally:
            db.close()
        if keys:
            state[partition] = keys
    return state


async def abort_a_transaction(settings: Any) -> None:
    """Records in an aborted transaction at the end of partition 0 of the sessions changelog."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        transactional_id=f"{settings.app_id}-test-aborted",
        enable_idempotence=True,
    )
    await producer.start()
    try:
        await producer.begin_transaction()
        topic = changelog(settings, "sessions")
        for key in (ONCE[0], "rec-aborted"):
            await producer.send_and_wait(topic, b'"aborted"', key=orjson.dumps(key), partition=0)
        await producer.abort_transaction()
    finally:
        await producer.stop()


async def load(settings: Any) -> None:
    """The sessions and the usage of the module's docstring, through a running worker, each
    round in the changelogs before the next."""
    sessions_topic = settings.topics.sessions
    # The busy keys' sessions before any request: a request for a key without one is not
    # counted, and the usage waits below would never be met.
    busy = [(key, session(100)) for key in BUSY]
    await publish(settings, sessions_topic, [(DELETED, session(100)), *busy])
    await wait_for_table(settings, "sessions", lambda s: s.keys() >= {DELETED, *BUSY})
    # Rounds, each in the changelogs before the next: every updated key has records all along
    # the log, between the keys written once, so an old record applied late shows.
    chunk = len(ONCE) // (ROUNDS - 1)
    for n in range(1, ROUNDS + 1):
        await publish(settings, sessions_topic, [(key, session(n)) for key in UPDATED])
        first = (n - 1) * (REQUESTS // ROUNDS)
        requests = [
            request_count(BUSY[i % len(BUSY)], 1_700_000_000 + i)
            for i in range(first, first + REQUESTS // ROUNDS)
        ]
        await produce(settings.kafka.bootstrap_servers, settings.topics.requests, requests)
        once = [key for key in ONCE[(n - 1) * chunk : n * chunk] if key not in BUSY]
        await publish(settings, sessions_topic, [(key, session(100)) for key in once])
        await wait_for_table(
            settings,
            "sessions",
            lambda s, once=once, n=n: (
                all(s.get(k, {}).get("quota_max") == n for k in UPDATED) and s.keys() >= set(once)
            ),
        )
        await wait_for_table(
            settings,
            "key_usage",
            lambda s, used=first + REQUESTS // ROUNDS: usage_total(s) == used,
            timeout=120,
        )
    await publish(settings, sessions_topic, [(DELETED, None)])
    await wait_for_table(
        settings, "sessions", lambda s: s.keys() == {*ONCE, *UPDATED} and DELETED not in s
    )


async def loaded_and_stopped(
    make_config: Any, topics_of: Any, start_worker: Any, **kafka: Any
) -> tuple[dict[str, Any], Any]:
    """A config whose tables were loaded by a worker now stopped (under exactly_once, with an
    aborted transaction at the end of a changelog), and its settings."""
    config = make_config(kafka=kafka)
    settings = await topics_of(config)
    worker = await start_worker(config)
    await load(settings)
    assert worker.stop() == 0
    if kafka["processing_guarantee"] == "exactly_once":
        await abort_a_transaction(settings)
    return config, settings


@pytest.mark.timeout(300)
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_a_worker_without_its_data_dir_recovers_exactly_the_changelogs(
    guarantee, make_config, topics_of, start_worker
):
    config, settings = await loaded_and_stopped(
        make_config, topics_of, start_worker, processing_guarantee=guarantee
    )

    shutil.rmtree(config["data_dir"])
    restarted = await start_worker({**config, "web": {"port": free_port()}}, name="restarted")
    await restarted.wait_ready(timeout=120)
    assert restarted.stop() == 0

    for table in TABLES:
        expected = await changelog_state(settings, table)
        assert stored_state(config["data_dir"], table) == expected, table
    sessions = {
        orjson.loads(key): orjson.loads(value)
        for keys in stored_state(config["data_dir"], "sessions").values()
        for key, value in keys.items()
    }
    assert sessions.keys() == {*ONCE, *UPDATED}  # the deleted key is gone; nothing aborted
    assert {sessions[key]["quota_max"] for key in UPDATED} == {ROUNDS}
    assert sessions[ONCE[0]]["quota_max"] == 100
    usage = {
        orjson.loads(key): orjson.loads(value)["current"]["usage"]
        for keys in stored_state(config["data_dir"], "key_usage").values()
        for key, value in keys.items()
    }
    assert usage == dict.fromkeys(BUSY, REQUESTS // len(BUSY))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_two_workers_without_data_dirs_recover_actives_and_standbys_exactly(
    guarantee, make_config, topics_of, start_worker
):
    config, settings = await loaded_and_stopped(
        make_config, topics_of, start_worker, processing_guarantee=guarantee, standby_replicas=1
    )
    expected = {table: await changelog_state(settings, table) for table in TABLES}

    # Both without local state. Each ends with one partition of each table active and the
    # other as a standby (one standby replica), so both come to hold every partition.
    shutil.rmtree(config["data_dir"])
    configs = [
        {**config, "web": {"port": free_port()}, "data_dir": f"{config['data_dir']}-{n}"}
        for n in (1, 2)
    ]
    workers = [await start_worker(c, name=f"worker-{n}") for n, c in enumerate(configs)]
    for started in workers:
        await started.wait_ready(timeout=120)

    async def holds_everything(data_dir: str) -> bool:
        # RocksDB opened read-only beside the worker that writes it. The bulk recovery writes
        # standby records per fetch; faust's own path held up to standby_buffer_size (1,000)
        # of them in memory until a rebalance or a stop, so this never held before it.
        return all(stored_state(data_dir, table) == expected[table] for table in TABLES)

    for c in configs:
        await poll(lambda data_dir=c["data_dir"]: holds_everything(data_dir), timeout=60)
    for started in workers:
        assert started.stop() == 0
    for table in TABLES:
        now = await changelog_state(settings, table)
        assert now == expected[table], table  # the workers wrote nothing since
        for c in configs:
            assert stored_state(c["data_dir"], table) == now, (c["data_dir"], table)


def persisted_offsets(data_dir: str, table: str) -> dict[int, int]:
    """Partition -> the changelog offset a stopped worker's RocksDB of ``table`` is marked at."""
    marks = {}
    for path in Path(data_dir).glob(f"**/tables/{table}-*.db"):
        partition = int(path.name.removesuffix(".db").rpartition("-")[2])
        db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            mark = db.get(OFFSET_KEY)
        finally:
            db.close()
        if mark is not None:
            marks[partition] = int(mark)
    return marks


@pytest.mark.timeout(300)
async def test_a_stopped_worker_holds_each_changelog_and_marks_where_it_ends(
    make_config, topics_of, start_worker
):
    # The usage tables are written in bulk (pipeline.engine.tables.write_all), the sessions through
    # faust. The mark is where a restart on the same data dir reads the changelog on from.
    config, settings = await loaded_and_stopped(
        make_config, topics_of, start_worker, processing_guarantee="at_least_once"
    )

    for table in ("sessions", "key_usage", "applied_offsets"):  # load() writes no orgs
        records = await read_to_end(settings.kafka.bootstrap_servers, changelog(settings, table))
        last: dict[int, int] = {}
        for record in records:
            last[record.partition] = max(record.offset, last.get(record.partition, -1))
        assert last, table
        assert persisted_offsets(config["data_dir"], table) == last, table
        assert stored_state(config["data_dir"], table) == await changelog_state(settings, table)
