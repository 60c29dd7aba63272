"""Exactly once under failure: a worker killed with SIGKILL mid-stream and restarted, and two
workers sharing the partitions with one stopped. Usage equals the ground truth and every
(subject, period, threshold) is in quota.triggers exactly once for a read_committed consumer.

Every threshold of every key and org is crossed: 10 limits x (40 keys + 2 orgs) = 420 triggers.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from pipeline.devtools.local import free_port
from tests.integration.conftest import produce, read_to_end, request_count, wait_for_table

T0 = 1_700_000_000.0
KEYS = [f"eo-key-{i:03d}" for i in range(40)]
ORGS = ["eo-org-a", "eo-org-b"]
LIMITS = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
RECORDS = 60_000
KEY_QUOTA = RECORDS // len(KEYS)
ORG_QUOTA = RECORDS // len(ORGS)


def org_of(key: str) -> str:
    return ORGS[int(key[-3:]) % len(ORGS)]


def traffic(start: int, stop: int) -> list[tuple[bytes, bytes]]:
    """Deterministic traffic: keys round-robin, one request each, event time rising."""
    return [
        request_count(KEYS[i % len(KEYS)], T0 + i * 0.001, 1, org=org_of(KEYS[i % len(KEYS)]))
        for i in range(start, stop)
    ]


def expected_triggers() -> Counter:
    """Every threshold of every key and org, once: the traffic reaches 100% of each quota."""
    subjects = [("key", key) for key in KEYS] + [("org", org) for org in ORGS]
    return Counter((kind, subject, str(limit)) for kind, subject in subjects for limit in LIMITS)


def fired(records) -> Counter:
    events = [orjson.loads(record.value) for record in records]
    return Counter((e["subject"], e["key"] or e["org"], e["trigger_limit"]) for e in events)


def total(state: dict) -> int:
    return sum((value.get("current") or {}).get("usage", 0) for value in state.values())


async def setup(make_config, cli, topics_of):
    config = make_config(
        monitor={"global_trigger_limits": LIMITS}, kafka={"processing_guarantee": "exactly_once"}
    )
    settings = await topics_of(config)
    sessions = {
        key: {"org_id": org_of(key), "quota_max": KEY_QUOTA, "quota_renewal_rate": 0}
        for key in KEYS
    }
    orgs = {org: {"quota_max": ORG_QUOTA, "quota_renewal_rate": 0} for org in ORGS}
    for kind, entries in (("sessions", sessions), ("orgs", orgs)):
        status, _, err = await cli(config, kind, "put", "-", stdin=orjson.dumps(entries))
        assert status == 0, err
    return config, settings


async def requests_partitions_by_member(settings) -> list[list[int]]:
    """The partitions of gateway.requests each member of the worker group holds, sorted."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([settings.app_id])
    finally:
        await admin.close()
    [(_error, _group, _state, _type, _protocol, members)] = response.groups
    held = []
    for *_member, assignment in members:
        topics = dict(ConsumerProtocolMemberAssignment.decode(assignment).assignment)
        held.append(sorted(topics.get(settings.topics.requests, [])))
    return sorted(held)


async def wait_until_loaded(settings) -> None:
    await wait_for_table(settings, "sessions", lambda s: s.keys() >= set(KEYS))
    await wait_for_table(settings, "orgs", lambda s: s.keys() >= set(ORGS))


async def assert_exactly_once(settings) -> None:
    await wait_for_table(settings, "key_usage", lambda s: total(s) == RECORDS, timeout=180)
    await wait_for_table(settings, "org_usage", lambda s: total(s) == RECORDS, timeout=180)
    key_usage = await wait_for_table(settings, "key_usage", lambda s: True)
    assert {key: state["current"]["usage"] for key, state in key_usage.items()} == dict.fromkeys(
        KEYS, KEY_QUOTA
    )
    expected = expected_triggers()
    triggers: list = []
    async with asyncio.timeout(120):
        while sum(fired(triggers).values()) < sum(expected.values()):
            triggers = await read_to_end(settings.kafka.bootstrap_servers, settings.topics.triggers)
            await asyncio.sleep(0.5)  # poll interval
    assert fired(triggers) == expected


@pytest.mark.timeout(400)
async def test_worker_killed_mid_stream_loses_and_repeats_nothing(
    make_config, cli, topics_of, start_worker
):
    config, settings = await setup(make_config, cli, topics_of)
    worker = await start_worker(config)
    await wait_until_loaded(settings)
    await produce(settings.kafka.bootstrap_servers, settings.topics.requests, traffic(0, RECORDS))

    await wait_for_table(settings, "key_usage", lambda s: total(s) >= RECORDS // 5, timeout=120)
    worker.kill()
    at_kill = total(await wait_for_table(settings, "key_usage", lambda s: True))
    assert at_kill < RECORDS, "the worker had counted everything: the kill tested nothing"
    await start_worker(config, name="restarted")

    await assert_exactly_once(settings)


@pytest.mark.timeout(400)
async def test_two_workers_share_partitions_and_one_carries_on_alone(
    make_config, cli, topics_of, start_worker
):
    config, settings = await setup(make_config, cli, topics_of)
    first = await start_worker(config, name="first")
    second_config = {**config, "web": {"port": free_port()}, "data_dir": config["data_dir"] + "-2"}
    second = await start_worker(second_config, name="second")
    for worker in (first, second):
        await worker.wait_ready()
    await wait_until_loaded(settings)
    assert await requests_partitions_by_member(settings) == [[0], [1]]

    half = RECORDS // 2
    await produce(settings.kafka.bootstrap_servers, settings.topics.requests, traffic(0, half))
    await wait_for_table(settings, "key_usage", lambda s: total(s) >= half // 2, timeout=120)
    first.stop()
    await produce(
        settings.kafka.bootstrap_servers, settings.topics.requests, traffic(half, RECORDS)
    )

    await assert_exactly_once(settings)
