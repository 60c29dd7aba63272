"""A real Kafka broker for the whole session (deploy/kafka-local on its own port and data),
worker processes, and Kafka helpers for the integration tests."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client.parser import text_string_to_metric_families

from pipeline.cli.topics import contract_topics
from pipeline.config import Settings
from pipeline.devtools.local import WorkerProcess, isolated_config, kafka_local
from pipeline.devtools.receiver import WebhookReceiver
from pipeline.engine.clients import create_topics
from tests.integration.brokers import Broker, start_broker
from tests.integration.browser import browser, chromium_session  # noqa: F401 (fixtures)

#: Not 9092, so the suite never touches a developer's broker or the demo's. Under pytest-xdist
#: (`./run tests` runs two processes) each process has a broker of its own, 10 ports further on.
BROKER_PORT = int(os.environ.get("QP_TEST_KAFKA_PORT", "19092")) + 10 * int(
    os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0
)
#: The session brokers only some tests need: those tests run in one xdist process, which starts
#: them once.
EXTRA_BROKERS = frozenset({"cluster", "sasl_broker"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)
        if EXTRA_BROKERS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("extra-brokers"))
    # A test that stops a broker shared by the session runs after every test that uses it.
    items.sort(key=lambda item: item.get_closest_marker("stops_shared_broker") is not None)


class LocalBroker(NamedTuple):
    port: int
    data: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="session")
def local_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    broker = LocalBroker(BROKER_PORT, tmp_path_factory.mktemp("kafka-data"))
    kafka_local("start", port=broker.port, data=broker.data)
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield broker
    finally:
        signal.signal(signal.SIGTERM, previous)
        kafka_local("stop", port=broker.port, data=broker.data)


def interrupt(signum: int, frame: Any) -> None:
    """SIGTERM taken as Ctrl-C, on which pytest tears its fixtures down and so stops the broker.
    SIGTERM's default ends the process at once: a suite stopped that way left its broker
    running, and the next suite on that port could not start its own."""
    raise KeyboardInterrupt


@pytest.fixture(scope="session")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A broker that takes only TLS with SCRAM-SHA-512 (KAFKA_SECURITY=sasl_ssl), for the
    session: its client.json is the config a client needs."""
    broker = start_broker(tmp_path_factory, "kafka-sasl", KAFKA_SECURITY="sasl_ssl")
    yield broker
    broker.run("stop")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A three-node cluster (KAFKA_NODES=3) for the session."""
    broker = start_broker(tmp_path_factory, "kafka-cluster", nodes=3)
    yield broker
    broker.run("stop")


@pytest.fixture(scope="session")
def kafka_bootstrap(local_broker: LocalBroker) -> str:
    return local_broker.bootstrap


@pytest.fixture
def make_config(kafka_bootstrap: str, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Config dicts with their own app id and topics, so tests never share state."""
    run = uuid.uuid4().hex[:8]
    counter = itertools.count()

    def make(**sections: Any) -> dict[str, Any]:
        config = isolated_config(
            f"test-{run}",
            kafka={"bootstrap_servers": kafka_bootstrap},
            partitions=2,
            data_dir=tmp_path / f"data-{next(counter)}",
        )
        config["monitor"]["global_trigger_limits"] = [50, 80]
        config["delivery"] = {"allow_networks": ["127.0.0.0/8", "::1/128"], "timeout": 5}
        for name, value in sections.items():
            if isinstance(value, dict) and isinstance(config.get(name), dict):
                config[name] = {**config[name], **value}
            else:
                config[name] = value
        return config

    return make


@pytest.fixture
async def topics_of() -> Callable[[dict[str, Any]], Any]:
    async def create(config: dict[str, Any]) -> Settings:
        settings = Settings.model_validate(config)
        await create_topics(settings, contract_topics(settings), settings.kafka.partitions)
        return settings

    return create


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item, so fixtures can tell whether it failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


#: Lines of each worker's log shown when a test fails: what CI needs to diagnose it.
LOG_TAIL_LINES = 60


@pytest.fixture
def start_worker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start worker processes; every one still running is stopped after the test, and their
    logs are printed when it failed."""
    workers: list[WorkerProcess] = []

    async def start(
        config: dict[str, Any], name: str = "worker", loglevel: str = "info"
    ) -> WorkerProcess:
        worker = WorkerProcess(config, tmp_path, name=f"{name}-{len(workers)}", loglevel=loglevel)
        workers.append(worker)
        worker.start()
        await worker.wait_healthy()
        return worker

    yield start
    for worker in workers:
        worker.stop()
    call = getattr(request.node, "report_call", None)
    if call is not None and call.failed:
        for worker in workers:
            lines = worker.log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            print(f"--- last {len(lines)} lines of {worker.log_path}", *lines, sep="\n")


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as server:
        yield server


async def produce(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def request_count(key: str, ts: float, count: int = 1, org: str = "org1") -> tuple[bytes, bytes]:
    return key.encode(), orjson.dumps({"ts": ts, "org_id": org, "key": key, "count": count})


async def consume(
    bootstrap: str, topic: str, *, until: Callable[[list[Any]], bool], timeout: float = 60
) -> list[Any]:
    """Read ``topic`` from the beginning until ``until(records)`` holds; fail after timeout."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            while not until(records):
                batch = await consumer.getmany(timeout_ms=500)
                for messages in batch.values():
                    records.extend(messages)
    except TimeoutError:
        raise AssertionError(f"{topic}: condition not met; got {len(records)} records") from None
    finally:
        await consumer.stop()
    return records


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., Any]:
    """Run the real `quota-pipeline` command with a config file; returns (status, out, err)."""

    async def run(
        config: dict[str, Any], *args: str, stdin: bytes | None = None
    ) -> tuple[int, str, str]:
        path = tmp_path / f"cli-{uuid.uuid4().hex[:6]}.json"
        path.write_bytes(orjson.dumps(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("QP_")}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pipeline",
            "--config",
            str(path),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await asyncio.wait_for(process.communicate(stdin), 60)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    return run


def key_partition(key: str, partitions: int) -> int:
    """The partition the default (murmur2) partitioner gives ``key``."""
    everyone = list(range(partitions))
    return int(DefaultPartitioner()(key.encode(), everyone, everyone))


def key_in_same_partition(key: str, partitions: int) -> str:
    """Another key that the default (murmur2) partitioner sends to the same partition."""
    everyone = list(range(partitions))
    target = key_partition(key, partitions)
    prefix = uuid.uuid4().hex[:6]  # a fresh marker each time: its thresholds fire once
    return next(
        candidate
        for candidate in (f"marker-{prefix}-{i}" for i in range(10_000))
        if DefaultPartitioner()(candidate.encode(), everyone, everyone) == target
    )


async def sessions_loaded(
    settings: Settings,
    receiver: WebhookReceiver,
    cli: Callable[..., Any],
    config: dict[str, Any],
    key: str,
    timeout: float = 60,
) -> str:
    """Wait until the worker has read every session put so far into ``key``'s partition.

    Puts a marker session into that partition after them, then produces marker requests until
    the marker's trigger arrives: sessions of one partition are read in order, so by then the
    earlier ones are in the table. Returns the marker key, whose webhooks tests can filter out.
    """
    marker = key_in_same_partition(key, settings.kafka.partitions)
    session = {marker: {"org_id": "marker-org", "quota_max": 1, "quota_renewal_rate": 0}}
    status, _, err = await cli(config, "sessions", "put", "-", stdin=orjson.dumps(session))
    assert status == 0, err
    seen = len(receiver.received)
    async with asyncio.timeout(timeout):
        while not any(
            orjson.loads(hook.body).get("key") == marker for hook in receiver.received[seen:]
        ):
            await produce(
                settings.kafka.bootstrap_servers,
                settings.topics.requests,
                [request_count(marker, time.time(), org="marker-org")],
            )
            with contextlib.suppress(TimeoutError):
                await receiver.wait_for(len(receiver.received) + 1, timeout=0.5)
    return marker


async def read_to_end(bootstrap: str, topic: str) -> list[Any]:
    """Every committed record of ``topic`` up to its end offsets when called."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return []  # the topic does not exist (yet)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[Any] = []
        async with asyncio.timeout(60):
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                batch = await consumer.getmany(timeout_ms=500)
                for messages in batch.values():
                    records.extend(messages)
        return records
    finally:
        await consumer.stop()


async def table_state(settings: Settings, table: str) -> dict[str, Any]:
    """The latest value of every key of a worker table, read from its changelog topic."""
    topic = f"{settings.app_id}-{table}-changelog"
    state: dict[str, Any] = {}
    for record in await read_to_end(settings.kafka.bootstrap_servers, topic):
        key = orjson.loads(record.key)
        if record.value is None:
            state.pop(key, None)
        else:
            state[key] = orjson.loads(record.value)
    return state


async def wait_for_table(
    settings: Settings, table: str, until: Callable[[dict[str, Any]], bool], timeout: float = 60
) -> dict[str, Any]:
    """Poll a table's changelog until ``until(state)`` holds."""
    state: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                state = await table_state(settings, table)
                if until(state):
                    return state
                await asyncio.sleep(0.3)  # poll interval
    except TimeoutError:
        usages = collections.Counter(
            (value.get("current") or {}).get("usage")
            for value in state.values()
            if isinstance(value, dict)
        )
        shown = {"keys": len(state), "usage counts": dict(usages)}
        raise AssertionError(f"{table}: condition not met in {timeout}s; {shown}") from None


async def scrape(web_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A worker's /metrics as {(sample name, sorted labels): value}."""
    async with aiohttp.ClientSession() as session, session.get(f"{web_url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def poll(read: Callable[[], Awaitable[Any]], timeout: float = 30) -> Any:
    """``await read()`` until it is truthy, and return it; fail after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                if value := await read():
                    return value
                await asyncio.sleep(0.2)  # poll interval
    except TimeoutError:
        raise AssertionError(f"no result in {timeout}s") from None
