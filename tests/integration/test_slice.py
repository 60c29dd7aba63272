"""The thin slice on a real broker: sessions in, request counts in, a webhook out."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import orjson
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from jsonschema import Draft202012Validator

from tests.integration.conftest import (
    consume,
    produce,
    request_count,
    scrape,
    sessions_loaded,
)

SCHEMAS = Path(__file__).parents[2] / "schemas"
TYK_FIELDS = {"event", "message", "org", "key", "trigger_limit", "usage_percentage"}


def for_key(key: str):
    return lambda hook: orjson.loads(hook.body)["key"] == key


def schema(name: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads((SCHEMAS / name).read_text()))


async def test_topics_create_is_idempotent_with_contract_cleanup_policies(make_config, cli):
    config = make_config()
    status, out, _ = await cli(config, "topics", "create", "--partitions", "3")
    assert status == 0
    assert out.count("created") == 7
    status, out, _ = await cli(config, "topics", "create")
    assert status == 0
    assert "created" not in out
    assert out.count("exists") == 7

    admin = AIOKafkaAdminClient(bootstrap_servers=config["kafka"]["bootstrap_servers"])
    await admin.start()
    try:
        topics = config["topics"]
        described = await admin.describe_topics([topics["sessions"], topics["requests"]])
        assert {len(t["partitions"]) for t in described} == {3}
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, topics[name])
            for name in ("requests", "sessions", "orgs", "dlq")
        ]
        responses = await admin.describe_configs(resources)
        policies = {}
        for response in responses:
            for resource in response.to_object()["resources"]:
                values = {c["config_names"]: c["config_value"] for c in resource["config_entries"]}
                policies[resource["resource_name"]] = values["cleanup.policy"]
        assert policies == {
            topics["requests"]: "delete",
            topics["sessions"]: "compact",
            topics["orgs"]: "compact",
            topics["dlq"]: "delete",
        }
    finally:
        await admin.close()


async def test_worker_posts_tyk_payload_when_a_key_crosses_global_thresholds(
    make_config, cli, topics_of, start_worker, receiver
):
    config = make_config(
        monitor={
            "configuration": {
                "target_path": f"{receiver.url}/alerts",
                "header_map": {"X-Team": "quota"},
            }
        }
    )
    settings = await topics_of(config)
    sessions = {"key-abc123": {"org_id": "org1", "quota_max": 10, "quota_renewal_rate": 3600}}
    status, _, err = await cli(config, "sessions", "put", "-", stdin=orjson.dumps(sessions))
    assert status == 0, err
    await start_worker(config)
    await sessions_loaded(settings, receiver, cli, config, "key-abc123")

    now = time.time()
    await produce(
        settings.kafka.bootstrap_servers,
        settings.topics.requests,
        [request_count("key-abc123", now + i) for i in range(9)],
    )

    hooks = await receiver.wait_for(2, timeout=60, where=for_key("key-abc123"))
    bodies = [orjson.loads(hook.body) for hook in hooks]
    assert [body["trigger_limit"] for body in bodies] == ["50", "80"]
    for body in bodies:
        assert set(body) == TYK_FIELDS
        assert body["event"] == "TriggerExceeded"
        assert body["message"] == "Quota trigger reached"
        assert body["org"] == "org1"
        assert body["key"] == "key-abc123"
    assert [body["usage_percentage"] for body in bodies] == [50, 80]
    assert all(hook.path == "/alerts" and hook.method == "POST" for hook in hooks)
    assert all(hook.headers["X-Team"] == "quota" for hook in hooks)

    def ours(records):
        return [record for record in records if record.key == b"key-abc123"]

    records = await consume(
        settings.kafka.bootstrap_servers,
        settings.topics.triggers,
        until=lambda r: len(ours(r)) >= 2,
    )
    triggers = ours(records)
    events = [orjson.loads(record.value) for record in triggers]
    for event in events:
        schema("trigger_event.json").validate(event)
    assert [hook.headers["webhook-id"] for hook in hooks] == [event["id"] for event in events]
    assert [event["usage"] for event in events] == [5, 8]
    assert all(record.key == b"key-abc123" for record in triggers)


async def test_bad_records_are_rejected_with_a_reason_while_good_ones_flow(
    make_config, cli, topics_of, start_worker, receiver
):
    config = make_config(monitor={"configuration": {"target_path": f"{receiver.url}/hook"}})
    settings = await topics_of(config)
    sessions = {"good-key-1": {"org_id": "org1", "quota_max": 2, "quota_renewal_rate": 60}}
    status, _, err = await cli(config, "sessions", "put", "-", stdin=orjson.dumps(sessions))
    assert status == 0, err
    worker = await start_worker(config)
    await sessions_loaded(settings, receiver, cli, config, "good-key-1")

    bad = [
        (b"good-key-1", b"not json"),
        (b"good-key-1", orjson.dumps({"ts": 1, "org_id": "org1", "key": "good-key-1", "count": 0})),
        (b"good-key-1", orjson.dumps({"org_id": "org1", "key": "good-key-1"})),
    ]
    now = time.time()
    await produce(
        settings.kafka.bootstrap_servers,
        settings.topics.requests,
        [*bad, request_count("good-key-1", now), request_count("good-key-1", now + 1)],
    )

    hooks = await receiver.wait_for(2, timeout=60, where=for_key("good-key-1"))
    assert [orjson.loads(h.body)["trigger_limit"] for h in hooks] == ["50", "80"]
    rejected = await consume(
        settings.kafka.bootstrap_servers, settings.topics.rejected, until=lambda r: len(r) >= 3
    )
    payloads = [orjson.loads(record.value) for record in rejected]
    for payload in payloads:
        schema("rejected.json").validate(payload)
        assert payload["topic"] == settings.topics.requests
    by_value = {base64.b64decode(p["value_b64"]): p["reason"] for p in payloads}
    assert by_value.keys() == {value for _, value in bad}
    assert "not JSON" in by_value[b"not json"]
    assert "count" in by_value[bad[1][1]]
    assert "ts" in by_value[bad[2][1]]
    offsets = sorted(p["offset"] for p in payloads)
    assert len(set(offsets)) == 3

    metrics = await scrape(worker.web_url)
    from_requests = (("topic", settings.topics.requests),)
    assert metrics["quota_pipeline_rejected_records_total", from_requests] == 3
    delivered = ("channel", "webhook"), ("outcome", "Delivered")
    # The two triggers, and the sessions_loaded marker's.
    assert metrics["quota_pipeline_deliveries_total", delivered] >= 2


async def test_requests_before_their_session_count_once_it_comes(
    make_config, cli, topics_of, start_worker, receiver
):
    config = make_config(monitor={"configuration": {"target_path": f"{receiver.url}/hook"}})
    settings = await topics_of(config)
    await start_worker(config)
    bootstrap, requests = settings.kafka.bootstrap_servers, settings.topics.requests
    # Without a session, 100 requests are held. The marker's webhook, after them in the same
    # partition, proves the worker has read them.
    now = time.time()
    await produce(bootstrap, requests, [request_count("late-key-1", now, count=100)])
    await sessions_loaded(settings, receiver, cli, config, "late-key-1")
    assert not [h for h in receiver.received if for_key("late-key-1")(h)]

    sessions = {"late-key-1": {"org_id": "org1", "quota_max": 10, "quota_renewal_rate": 3600}}
    status, _, err = await cli(config, "sessions", "put", "-", stdin=orjson.dumps(sessions))
    assert status == 0, err
    hooks = await receiver.wait_for(2, timeout=60, where=for_key("late-key-1"))
    await produce(bootstrap, requests, [request_count("late-key-1", now + 1, count=5)])
    await sessions_loaded(settings, receiver, cli, config, "late-key-1")

    hooks = [h for h in receiver.received if for_key("late-key-1")(h)]
    ours = [orjson.loads(h.body) for h in hooks]
    # The held 100 fire both thresholds at once when the session comes; nothing fires twice.
    assert [(b["trigger_limit"], b["usage_percentage"]) for b in ours] == [
        ("50", 1000),
        ("80", 1000),
    ]
