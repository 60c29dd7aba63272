"""On a three-node cluster (``KAFKA_NODES=3 deploy/kafka-local``): every topic we create, the
internal ones included, has the configured replication factor, and triggers keep flowing
while a node is SIGKILLed mid-stream and started again, each exactly once by id in
quota.triggers and each delivered, without a worker restart."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.config import Settings
from pipeline.devtools.local import isolated_config
from pipeline.engine.clients import producer, read_topic
from tests.integration.brokers import Broker
from tests.integration.conftest import poll

NODES = 3
KEYS = 30
QUOTA = 100
LIMITS = (50, 80, 100)


def replicated_config(cluster: Broker, tmp_path: Any, receiver_url: str) -> dict[str, Any]:
    config = isolated_config(
        "replicated",
        kafka={"bootstrap_servers": cluster.bootstrap_servers(), "replication_factor": NODES},
        partitions=2,
        data_dir=tmp_path / "data",
    )
    config["monitor"]["configuration"] = {"target_path": f"{receiver_url}/alerts"}
    config["monitor"]["global_trigger_limits"] = list(LIMITS)
    config["delivery"] = {"allow_networks": ["127.0.0.0/8"], "timeout": 5}
    return config


async def leader_of(settings: Settings, topic: str) -> int:
    """The node id that leads partition 0 of ``topic``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return int(next(p["leader"] for p in described["partitions"] if p["partition"] == 0))


async def replication_factors(settings: Settings) -> dict[str, int]:
    """Replicas of every topic of the worker's app id and of its contract topics."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        ours = [
            name
            for name in await admin.list_topics()
            if name.startswith(settings.app_id) or name.startswith("replicated.")
        ]
        described = await admin.describe_topics(ours)
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"][0]["replicas"]) for t in described}


@pytest.mark.timeout(400)
async def test_triggers_flow_while_a_node_is_killed_and_restarted(
    cluster, tmp_path, cli, start_worker, receiver
):
    config = replicated_config(cluster, tmp_path, receiver.url)
    settings = Settings.model_validate(config)
    status, _, err = await cli(config, "topics", "create")
    assert status == 0, err
    keys = [f"replicated-key-{i}" for i in range(KEYS)]
    sessions = {
        key: {"org_id": "org-r", "quota_max": QUOTA, "quota_renewal_rate": 3600} for key in keys
    }
    status, _, err = await cli(config, "sessions", "put", "-", stdin=orjson.dumps(sessions))
    assert status == 0, err
    worker = await start_worker(config)
    await worker.wait_ready()  # mid-stream: the worker has its partitions before the kill

    victim = await leader_of(settings, settings.topics.requests)
    sent = 0
    async with producer(settings) as client:

        async def send_round() -> None:
            nonlocal sent
            for key in keys:
                record = {"ts": time.time(), "org_id": "org-r", "key": key, "count": 5}
                await client.send(settings.topics.requests, orjson.dumps(record), key=key.encode())
            sent += 1

        # 20 rounds of 5 requests take every key to 100%: a third before the kill, a third
        # while the node is down, the rest after it is back.
        for _ in range(7):
            await send_round()
        await client.flush()
        # In a thread: the webhook receiver answers on this test's event loop.
        await asyncio.to_thread(cluster.must, "kill", str(victim))
        for _ in range(7):
            await send_round()
        await client.flush()
        await asyncio.to_thread(cluster.must, "start")
        for _ in range(6):
            await send_round()
        await client.flush()
    assert sent * 5 == QUOTA

    expected = KEYS * len(LIMITS)
    await receiver.wait_for(expected, timeout=120)

    async def all_triggers() -> list[Any]:
        records = await read_topic(settings, settings.topics.triggers) or []
        return records if len(records) >= expected else []

    triggers = [orjson.loads(record.value) for record in await poll(all_triggers, timeout=60)]
    fired = sorted((t["key"], int(t["trigger_limit"])) for t in triggers)
    assert fired == sorted((key, limit) for key in keys for limit in LIMITS)
    ids = [t["id"] for t in triggers]
    assert len(ids) == len(set(ids)) == expected
    bodies = [json.loads(hook.body) for hook in receiver.received]
    assert {(body["key"], int(body["trigger_limit"])) for body in bodies} == set(fired)
    assert worker.running
    factors = await replication_factors(settings)
    assert any(name.endswith("-changelog") for name in factors)
    assert set(factors.values()) == {NODES}, factors


@pytest.mark.timeout(400)
async def test_a_worker_starts_and_counts_while_a_node_is_down(
    cluster, tmp_path, cli, start_worker, receiver
):
    config = replicated_config(cluster, tmp_path, receiver.url)
    config["app_id"] = "qp-replicated-degraded"
    config["topics"] = {
        name: f"degraded.{topic.split('.', 1)[1]}" for name, topic in config["topics"].items()
    }
    settings = Settings.model_validate(config)
    # Node 1 first in the metadata the worker starts from: faust asked it for the controller,
    # once, to create the worker's internal topics.
    await asyncio.to_thread(cluster.must, "kill", "1")
    try:
        status, _, err = await cli(config, "topics", "create")
        assert status == 0, err
        key = "degraded-key"
        session = {key: {"org_id": "org-d", "quota_max": 10, "quota_renewal_rate": 3600}}
        status, _, err = await cli(config, "sessions", "put", "-", stdin=orjson.dumps(session))
        assert status == 0, err
        worker = await start_worker(config)
        await worker.wait_ready()
        async with producer(settings) as client:
            for _ in range(10):
                record = {"ts": time.time(), "org_id": "org-d", "key": key, "count": 1}
                await client.send(settings.topics.requests, orjson.dumps(record), key=key.encode())
        await receiver.wait_for(len(LIMITS), timeout=60)
        limits = sorted(int(json.loads(hook.body)["trigger_limit"]) for hook in receiver.received)
        assert limits == list(LIMITS)
        assert worker.running
    finally:
        await asyncio.to_thread(cluster.must, "start")
