"""The ingest stage on a real broker and worker: Tyk Pump and APISIX messages, unkeyed and
spread over every partition, counted for their keys and orgs with each threshold firing once;
bad messages rejected while the rest flows; and no request lost or counted twice when the
worker is killed with SIGKILL again and again while it ingests, when the source partitions move
between workers, or when the worker's ingest process dies alone."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from pipeline.devtools.gateway_logs import apisix_entry, tyk_pump_message
from pipeline.devtools.local import free_port
from pipeline.devtools.tyk_gateway import TykGatewayStandIn
from tests.integration.conftest import (
    consume,
    poll,
    produce,
    read_to_end,
    scrape,
    wait_for_table,
)

T0 = 1_700_000_000.0
RECORDED = Path(__file__).parents[1] / "data" / "gateways"
#: start_time of the first entry of the recorded APISIX batch, in milliseconds.
RECORDED_AT = 1_699_596_164_550


def usage_of(state: dict[str, Any], subject: str) -> int | None:
    return ((state.get(subject) or {}).get("current") or {}).get("usage")


def ingest_config(make_config: Any, own_process: bool = True, **sections: Any) -> dict[str, Any]:
    config = make_config(**sections)
    name = config["app_id"]
    config["ingest"] = {
        "own_process": own_process,
        "sources": [
            {"format": "tyk-pump", "topic": f"{name}.tyk-analytics"},
            {"format": "apisix-kafka-logger", "topic": f"{name}.apisix", "org_id": "acme"},
        ],
    }
    return config


async def put(cli: Any, config: dict[str, Any], kind: str, entries: dict[str, Any]) -> None:
    status, _, err = await cli(config, kind, "put", "-", stdin=orjson.dumps(entries))
    assert status == 0, err


def triggers_of(records: list[Any]) -> Counter[tuple[str, str, str]]:
    events = [orjson.loads(record.value) for record in records]
    return Counter((e["subject"], e["key"] or e["org"], e["trigger_limit"]) for e in events)


def distinct_triggers_of(records: list[Any]) -> Counter[tuple[str, str, str]]:
    """As :func:`triggers_of`, one per event id: what a consumer that drops repeats by id
    sees. Under at_least_once a worker killed between a trigger's send and its batch's table
    writes sends it again, with the same id (docs/contract.md); the counting must not."""
    events = {e["id"]: e for e in (orjson.loads(record.value) for record in records)}
    return Counter(
        (e["subject"], e["key"] or e["org"], e["trigger_limit"]) for e in events.values()
    )


def counts_of(records: list[Any]) -> Counter[str]:
    counted: Counter[str] = Counter()
    for record in records:
        value = orjson.loads(record.value)
        assert record.key == value["key"].encode()
        counted[value["key"]] += value["count"]
    return counted


@pytest.mark.parametrize("own_process", [True, False], ids=["own-process", "worker-loop"])
async def test_tyk_pump_and_apisix_traffic_fires_each_threshold_once(
    make_config, cli, topics_of, start_worker, own_process
):
    config = ingest_config(
        make_config, own_process, monitor={"global_trigger_limits": [50, 80, 100]}
    )
    settings = await topics_of(config)
    tyk_topic, apisix_topic = (source.topic for source in settings.ingest.sources)
    await put(
        cli,
        config,
        "sessions",
        {
            "tyk-key": {"org_id": "tyk-org", "quota_max": 100, "quota_renewal_rate": 3600},
            "jack": {"org_id": "acme", "quota_max": 10, "quota_renewal_rate": 3600},
        },
    )
    await put(
        cli,
        config,
        "orgs",
        {org: {"quota_max": 300, "quota_renewal_rate": 3600} for org in ("tyk-org", "acme")},
    )
    await start_worker(config)

    # 100 requests that counted, 40 refused by the key's rate limit, 20 to a keyless API: the
    # key reaches 100%, its org 160 of 300 (50%, not 80%).
    tyk = [
        tyk_pump_message(key="tyk-key", org_id="tyk-org", api_id="orders", ts=T0 + i * 0.05)
        for i in range(100)
    ]
    tyk += [
        tyk_pump_message(
            key="tyk-key", org_id="tyk-org", api_id="orders", ts=T0 + 5, response_code=429
        )
        for _ in range(40)
    ]
    tyk += [tyk_pump_message(key="", org_id="tyk-org", api_id="status", ts=T0 + 6)] * 20
    random.Random(7).shuffle(tyk)
    bad = b'{"timestamp": "yesterday", "org_id": "tyk-org"}'
    await produce(settings.kafka.bootstrap_servers, tyk_topic, [(None, v) for v in [bad, *tyk]])
    # APISIX: one recorded batch (jack twice, one refusal, one anonymous, rose), eight more.
    batch = (RECORDED / "apisix-batch.json").read_bytes()
    more = [
        apisix_entry(consumer="jack", route_id="r", start_time_ms=RECORDED_AT + 10_000 + i)
        for i in range(8)
    ]
    await produce(
        settings.kafka.bootstrap_servers,
        apisix_topic,
        [(b"route-key", batch), (b"route-key", orjson.dumps(more))],
    )

    keys_fired = Counter(
        {("key", key, limit): 1 for key in ("tyk-key", "jack") for limit in ("50", "80", "100")}
    )
    await consume(
        settings.kafka.bootstrap_servers,
        settings.topics.triggers,
        until=lambda records: triggers_of(records) == keys_fired,
    )
    org_usage = await wait_for_table(
        settings, "org_usage", lambda s: usage_of(s, "tyk-org") == 160 and usage_of(s, "acme") == 13
    )
    # The org's records came through two paths (its keys' through the usage stage, the rest
    # straight from the ingest stage), so some were late for the period the first one opened:
    # late records fire nothing themselves. The next one fires what the org has reached.
    assert org_usage["tyk-org"]["current"]["usage"] == 160
    marker = tyk_pump_message(key="", org_id="tyk-org", api_id="status", ts=T0 + 100)
    await produce(settings.kafka.bootstrap_servers, tyk_topic, [(None, marker)])
    triggers = await consume(
        settings.kafka.bootstrap_servers,
        settings.topics.triggers,
        until=lambda records: sum(triggers_of(records).values()) > sum(keys_fired.values()),
    )
    assert triggers_of(triggers) == keys_fired + Counter({("org", "tyk-org", "50"): 1})

    requests = await read_to_end(settings.kafka.bootstrap_servers, settings.topics.requests)
    assert counts_of(requests) == {"tyk-key": 100, "jack": 10, "rose": 1}
    assert len(requests) < 111 // 2, "requests of one key and second were not summed"

    [rejected] = await consume(
        settings.kafka.bootstrap_servers, settings.topics.rejected, until=lambda r: len(r) >= 1
    )
    rejection = orjson.loads(rejected.value)
    assert rejection["topic"] == tyk_topic
    assert "timestamp" in rejection["reason"] or "datetime" in rejection["reason"]


KEYS = [f"kill-key-{i:02d}" for i in range(20)]
LIMITS = [25, 50, 75, 100]
RECORDS = 40_000
QUOTA = RECORDS // len(KEYS)
KILLS = 2
#: Records sent only once the kills are done: every kill comes while traffic flows.
HELD_BACK = 5_000


async def produce_steadily(
    bootstrap: str, topic: str, records: list[bytes], kills_done: asyncio.Event
) -> None:
    """Unkeyed, as Tyk Pump writes: 200 records every quarter of a second while the worker is
    being killed (holding the last HELD_BACK until the kills are done, however slow the
    restarts), then the rest at once."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sent = 0
        while sent < len(records):
            if kills_done.is_set():
                chunk = len(records) - sent
            elif sent + 200 <= len(records) - HELD_BACK:
                chunk = 200
            else:
                chunk = 0
            for value in records[sent : sent + chunk]:
                await producer.send(topic, value)
            await producer.flush()
            sent += chunk
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(kills_done.wait(), 0.25)  # pacing the traffic
    finally:
        await producer.stop()


def total_usage(state: dict[str, Any]) -> int:
    return sum((value.get("current") or {}).get("usage", 0) for value in state.values())


async def sessions_and_traffic(cli: Any, config: dict[str, Any], org: str) -> list[bytes]:
    """A session for each of KEYS (a quota of its share of the traffic, never renewed), and
    RECORDS Tyk Pump messages spread over them, 100 a second of event time."""
    sessions = {key: {"org_id": org, "quota_max": QUOTA, "quota_renewal_rate": 0} for key in KEYS}
    await put(cli, config, "sessions", sessions)
    return [
        tyk_pump_message(key=KEYS[i % len(KEYS)], org_id=org, api_id="a", ts=T0 + i / 100)
        for i in range(RECORDS)
    ]


async def assert_each_request_and_threshold_once(settings: Any) -> None:
    """Every key's usage and summed requests exact; each threshold once, by event id (a repeat
    is the same event, with the same id, never a second one)."""
    await wait_for_table(settings, "key_usage", lambda s: total_usage(s) == RECORDS, timeout=180)
    requests = await read_to_end(settings.kafka.bootstrap_servers, settings.topics.requests)
    assert counts_of(requests) == dict.fromkeys(KEYS, QUOTA)
    expected = Counter({("key", key, str(limit)): 1 for key in KEYS for limit in LIMITS})
    triggers = await consume(
        settings.kafka.bootstrap_servers,
        settings.topics.triggers,
        until=lambda records: distinct_triggers_of(records) == expected,
        timeout=120,
    )
    assert distinct_triggers_of(triggers) == expected


@pytest.mark.timeout(400)
async def test_sigkill_while_ingesting_loses_and_repeats_nothing(
    make_config, cli, topics_of, start_worker
):
    config = ingest_config(make_config, monitor={"global_trigger_limits": LIMITS})
    settings = await topics_of(config)
    tyk_topic = settings.ingest.sources[0].topic
    traffic = await sessions_and_traffic(cli, config, "kill-org")
    worker = await start_worker(config)
    kills_done = asyncio.Event()
    producing = asyncio.create_task(
        produce_steadily(settings.kafka.bootstrap_servers, tyk_topic, traffic, kills_done)
    )
    counted = 0
    for kill in range(KILLS):
        # Killed once it has counted more since the last kill: while it ingests.
        state = await wait_for_table(
            settings, "key_usage", lambda s, c=counted: total_usage(s) > c + 500, timeout=120
        )
        worker.kill()
        counted = total_usage(state)
        worker = await start_worker(config, name=f"restarted-{kill}")
    assert counted < RECORDS - HELD_BACK
    kills_done.set()
    await producing

    await assert_each_request_and_threshold_once(settings)


def ingest_child_of(worker: int) -> int | None:
    """The worker's ingest process (its one child running pipeline.ingest.process)."""
    for child in Path(f"/proc/{worker}/task/{worker}/children").read_text().split():
        with contextlib.suppress(FileNotFoundError):
            if b"pipeline.ingest.process" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
    return None


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead and not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _async(read: Any) -> Any:
    """``read`` as the coroutine function that ``poll`` awaits."""

    async def call() -> Any:
        return read()

    return call


@pytest.mark.timeout(400)
async def test_workers_joining_and_leaving_while_ingesting_count_every_request_once(
    make_config, cli, topics_of, start_worker, tmp_path
):
    """Each move hands the source partitions over while batches are taken, transformed and
    committed: a batch taken before a rebalance must be dropped, not committed twice."""
    config = ingest_config(make_config, monitor={"global_trigger_limits": LIMITS})
    settings = await topics_of(config)
    tyk_topic = settings.ingest.sources[0].topic
    traffic = await sessions_and_traffic(cli, config, "move-org")
    second_config = {
        **config,
        "data_dir": str(tmp_path / "second"),
        "web": {**config["web"], "port": free_port()},
    }
    first = await start_worker(config, name="first")
    moves_done = asyncio.Event()
    producing = asyncio.create_task(
        produce_steadily(settings.kafka.bootstrap_servers, tyk_topic, traffic, moves_done)
    )
    second = None

    async def join() -> None:
        nonlocal second
        second = await start_worker(second_config, name="second")

    async def first_leaves() -> None:
        assert first.pid is not None
        child = ingest_child_of(first.pid)
        first.stop()  # SIGTERM: the worker stops its ingest process before it exits
        assert child is not None
        assert not running(child)

    async def first_returns() -> None:
        nonlocal first
        first = await start_worker(config, name="first-again")

    async def second_dies() -> None:
        assert second is not None
        second.kill()

    counted = 0
    for move in (join, first_leaves, first_returns, second_dies):
        state = await wait_for_table(
            settings, "key_usage", lambda s, c=counted: total_usage(s) > c + 500, timeout=120
        )
        await move()
        counted = total_usage(state)
    assert counted < RECORDS - HELD_BACK
    moves_done.set()
    await producing

    await assert_each_request_and_threshold_once(settings)


async def test_the_ingest_process_is_started_again_and_dies_with_its_worker(
    make_config, cli, topics_of, start_worker
):
    config = ingest_config(make_config)
    settings = await topics_of(config)
    tyk_topic = settings.ingest.sources[0].topic
    await put(
        cli,
        config,
        "sessions",
        {"k": {"org_id": "o", "quota_max": 10_000, "quota_renewal_rate": 0}},
    )
    worker = await start_worker(config)
    assert worker.pid is not None
    first = await poll(_async(lambda: ingest_child_of(worker.pid)))

    async def send(count: int, start: int) -> None:
        messages = [
            (None, tyk_pump_message(key="k", org_id="o", api_id="a", ts=T0 + start + i))
            for i in range(count)
        ]
        await produce(settings.kafka.bootstrap_servers, tyk_topic, messages)

    def usage_is(expected: int) -> Any:
        return lambda state: usage_of(state, "k") == expected

    await send(100, 0)
    await wait_for_table(settings, "key_usage", usage_is(100), timeout=60)
    os.kill(first, signal.SIGKILL)
    second = await poll(
        _async(lambda: (pid := ingest_child_of(worker.pid)) not in (None, first) and pid)
    )
    await send(100, 100)
    await wait_for_table(settings, "key_usage", usage_is(200), timeout=60)
    metrics = await scrape(worker.web_url)
    ingested = metrics[("quota_pipeline_ingested_records_total", (("topic", tyk_topic),))]
    assert ingested == 200  # each child's commits, told to the worker as they were made

    worker.kill()
    await poll(_async(lambda: not running(second)))


async def test_from_tyk_to_a_webhook_a_synced_session_meets_its_pump_messages(
    make_config, cli, topics_of, start_worker, receiver
):
    """The walk of docs/tyk.md: a gateway that hashes keys, its sessions synced, its Tyk Pump
    messages ingested; each threshold reaches the monitor webhook once."""
    secret = "tyk-secret-e2e"
    async with TykGatewayStandIn(secret, hash_keys=True) as gateway:
        gateway.put_session(
            "raw-key-e2e",
            {"org_id": "e2e-org", "quota_max": 40, "quota_renewal_rate": 3600, "alias": "app"},
        )
        gateway.put_org("e2e-org", {"org_id": "e2e-org", "quota_max": 10_000})
        config = ingest_config(
            make_config,
            monitor={
                "global_trigger_limits": [50, 100],
                "configuration": {"target_path": f"{receiver.url}/tyk-monitor"},
            },
            tyk={"gateway_url": gateway.url, "gateway_secret": secret, "hashed_keys": True},
        )
        settings = await topics_of(config)
        status, out, err = await cli(config, "sessions", "sync")
        assert status == 0, err
        assert "1 new" in out
        await start_worker(config)

        hashed = gateway.stored_id("raw-key-e2e")  # what the gateway puts in api_key
        tyk_topic = settings.ingest.sources[0].topic
        # 40 requests that count, as the walk-through sends them; 10 refused by the rate limit.
        sent = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pipeline.devtools.gateway_logs",
            "--topic",
            tyk_topic,
            "--key",
            hashed,
            "--org",
            "e2e-org",
            "--count",
            "40",
            env={**os.environ, "QP_KAFKA_BOOTSTRAP": settings.kafka.bootstrap_servers},
        )
        assert await sent.wait() == 0
        refused = tyk_pump_message(
            key=hashed, org_id="e2e-org", api_id="orders", ts=time.time(), response_code=429
        )
        await produce(settings.kafka.bootstrap_servers, tyk_topic, [(None, refused)] * 10)
        hooks = await receiver.wait_for(2, timeout=60)
        status, out, err = await cli(config, "sessions", "sync")  # nothing changed
        assert status == 0, err
        assert "0 new, 0 changed" in out

    bodies = sorted(
        (orjson.loads(h.body)["key"], orjson.loads(h.body)["trigger_limit"]) for h in hooks
    )
    assert bodies == [(hashed, "100"), (hashed, "50")]
    triggers = await read_to_end(settings.kafka.bootstrap_servers, settings.topics.triggers)
    assert triggers_of(triggers) == {("key", hashed, "50"): 1, ("key", hashed, "100"): 1}
