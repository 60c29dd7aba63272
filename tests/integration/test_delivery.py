"""Webhook delivery on a real broker and worker: retries with the same webhook-id, dead letters
for permanent failures and exhausted retries, and SSRF refusals."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from jsonschema import Draft202012Validator

from pipeline.devtools.local import free_port
from pipeline.devtools.receiver import WebhookReceiver
from pipeline.engine.clients import admin_client
from pipeline.usage.quota import Crossing
from pipeline.usage.triggers import trigger_event
from tests.integration.conftest import (
    consume,
    key_partition,
    poll,
    produce,
    read_to_end,
    request_count,
    wait_for_table,
)

DEAD_LETTER = Draft202012Validator(
    json.loads((Path(__file__).parents[2] / "schemas" / "dead_letter.json").read_text())
)


def answering(*statuses: int):
    """A responder answering the given statuses in turn, then the last one forever."""
    answers = list(statuses)

    def respond(_received) -> web.Response:
        status = answers.pop(0) if len(answers) > 1 else answers[0]
        return web.Response(status=status)

    return respond


async def one_trigger(
    make_config, cli, topics_of, start_worker, receiver, webhook=None, **delivery
):
    """A worker whose monitor webhook is the receiver (``webhook`` adds to its configuration),
    and one key crossing 50%."""
    config = make_config(
        monitor={
            "global_trigger_limits": [50],
            "configuration": {"target_path": f"{receiver.url}/hook", **(webhook or {})},
        },
        delivery=delivery,
    )
    settings = await topics_of(config)
    sessions = {"hook-key": {"org_id": "o1", "quota_max": 2, "quota_renewal_rate": 0}}
    status, _, err = await cli(config, "sessions", "put", "-", stdin=orjson.dumps(sessions))
    assert status == 0, err
    await start_worker(config)
    await wait_for_table(settings, "sessions", lambda s: "hook-key" in s)
    await produce(
        settings.kafka.bootstrap_servers,
        settings.topics.requests,
        [request_count("hook-key", time.time(), 1, org="o1")],
    )
    return settings


async def test_failing_twice_then_succeeding_delivers_once_with_one_webhook_id(
    make_config, cli, topics_of, start_worker, receiver
):
    receiver.responder = answering(500, 500, 200)
    settings = await one_trigger(
        make_config, cli, topics_of, start_worker, receiver, retry_schedule=[0.2, 0.2, 0.2]
    )
    hooks = await receiver.wait_for(3, timeout=60)
    assert len({hook.headers["webhook-id"] for hook in hooks}) == 1
    assert len({hook.body for hook in hooks}) == 1
    triggers = await consume(
        settings.kafka.bootstrap_servers, settings.topics.triggers, until=lambda r: len(r) >= 1
    )
    assert hooks[0].headers["webhook-id"] == orjson.loads(triggers[0].value)["id"]
    assert await read_to_end(settings.kafka.bootstrap_servers, settings.topics.dlq) == []


async def test_429_waits_for_retry_after_then_delivers_once(
    make_config, cli, topics_of, start_worker, receiver
):
    def rate_limited_once(received) -> web.Response:
        if len(receiver.received) == 1:
            return web.Response(status=429, headers={"Retry-After": "2"})
        return web.Response(status=200)

    receiver.responder = rate_limited_once
    settings = await one_trigger(
        make_config,
        cli,
        topics_of,
        start_worker,
        receiver,
        retry_schedule=[0.1],
        rate_limit_wait=0.5,
    )
    first, second = await receiver.wait_for(2, timeout=60)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    # The schedule says 0.1 s and the floor for 429 0.5 s: only Retry-After explains the wait.
    assert second.received_at - first.received_at >= 2
    assert await read_to_end(settings.kafka.bootstrap_servers, settings.topics.dlq) == []


async def test_a_timed_out_attempt_is_retried_with_the_same_webhook_id(
    make_config, cli, topics_of, start_worker, receiver
):
    released = asyncio.Event()

    async def hang_first(received) -> web.Response:
        if len(receiver.received) == 1:
            await released.wait()  # longer than the delivery timeout: set at teardown
        return web.Response(status=200)

    receiver.responder = hang_first
    try:
        settings = await one_trigger(
            make_config, cli, topics_of, start_worker, receiver, retry_schedule=[0.1], timeout=1
        )
        first, second = await receiver.wait_for(2, timeout=60)
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        assert await read_to_end(settings.kafka.bootstrap_servers, settings.topics.dlq) == []
    finally:
        released.set()


@pytest.mark.parametrize("status", [410, 400])
async def test_permanent_failure_is_dead_lettered_after_one_attempt(
    make_config, cli, topics_of, start_worker, receiver, status
):
    receiver.responder = answering(status)
    settings = await one_trigger(
        make_config, cli, topics_of, start_worker, receiver, retry_schedule=[0.2]
    )
    records = await consume(
        settings.kafka.bootstrap_servers, settings.topics.dlq, until=lambda r: len(r) >= 1
    )
    letter = orjson.loads(records[0].value)
    DEAD_LETTER.validate(letter)
    assert letter["last_status"] == status
    assert letter["attempts"] == 1
    assert letter["target"] == f"{receiver.url}/hook"
    assert letter["event"]["event"] == "TriggerExceeded"
    assert records[0].key == letter["id"].encode()
    assert len(receiver.received) == 1


async def test_retries_running_out_dead_letter_with_the_last_status(
    make_config, cli, topics_of, start_worker, receiver
):
    receiver.responder = answering(503)
    settings = await one_trigger(
        make_config, cli, topics_of, start_worker, receiver, retry_schedule=[0.1, 0.1]
    )
    records = await consume(
        settings.kafka.bootstrap_servers, settings.topics.dlq, until=lambda r: len(r) >= 1
    )
    letter = orjson.loads(records[0].value)
    assert letter["attempts"] == 3
    assert letter["last_status"] == 503
    assert "retries exhausted" in letter["last_error"]
    assert len(receiver.received) == 3


async def test_loopback_target_is_refused_unless_allow_listed(
    make_config, cli, topics_of, start_worker, receiver
):
    settings = await one_trigger(
        make_config, cli, topics_of, start_worker, receiver, allow_networks=[]
    )
    records = await consume(
        settings.kafka.bootstrap_servers, settings.topics.dlq, until=lambda r: len(r) >= 1
    )
    letter = orjson.loads(records[0].value)
    assert "refused" in letter["last_error"]
    assert letter["last_status"] is None
    assert receiver.received == []


async def test_template_path_shapes_the_body(
    make_config, cli, topics_of, start_worker, receiver, tmp_path
):
    template = tmp_path / "body.json"
    template.write_text(
        '{"alert": "{{ key }} reached {{ trigger_limit }}%", "org": {{ org | tojson }}}'
    )
    webhook = {"template_path": str(template), "method": "PUT"}
    await one_trigger(make_config, cli, topics_of, start_worker, receiver, webhook=webhook)
    hooks = await receiver.wait_for(1, timeout=60)
    assert hooks[0].method == "PUT"
    assert orjson.loads(hooks[0].body) == {"alert": "hook-key reached 50%", "org": "o1"}


async def test_org_trigger_webhook_receives_every_trigger_of_its_org(
    make_config, cli, topics_of, start_worker, receiver
):
    config = make_config(
        monitor={
            "global_trigger_limits": [50],
            "configuration": {"target_path": f"{receiver.url}/monitor"},
        },
    )
    settings = await topics_of(config)
    sessions = {"org-key": {"org_id": "acme", "quota_max": 2, "quota_renewal_rate": 0}}
    orgs = {
        "acme": {
            "quota_max": 2,
            "quota_renewal_rate": 0,
            "event_options": {"trigger_event": {"webhook": f"{receiver.url}/acme"}},
        }
    }
    for kind, entries in (("sessions", sessions), ("orgs", orgs)):
        status, _, err = await cli(config, kind, "put", "-", stdin=orjson.dumps(entries))
        assert status == 0, err
    await start_worker(config)
    await wait_for_table(settings, "sessions", lambda s: "org-key" in s)
    await produce(
        settings.kafka.bootstrap_servers,
        settings.topics.requests,
        [request_count("org-key", time.time(), 1, org="acme")],
    )
    hooks = await receiver.wait_for(4, timeout=60)
    seen = {(hook.path, orjson.loads(hook.body)["key"]) for hook in hooks}
    # The key's trigger and the org's own (key "") reach both the monitor and the org webhook.
    assert seen == {("/monitor", "org-key"), ("/monitor", ""), ("/acme", "org-key"), ("/acme", "")}


async def test_every_worker_knows_the_org_webhook_of_the_global_table(
    make_config, cli, topics_of, start_worker, receiver, tmp_path
):
    config = make_config(monitor={"global_trigger_limits": [50]})
    settings = await topics_of(config)
    orgs = {
        "acme": {
            "quota_max": -1,
            "event_options": {"trigger_event": {"webhook": f"{receiver.url}/org"}},
        }
    }
    status, _, err = await cli(config, "orgs", "put", "-", stdin=orjson.dumps(orgs))
    assert status == 0, err
    keys = [f"both-{i}" for i in range(40)]
    sessions = {key: {"org_id": "acme", "quota_max": 2, "quota_renewal_rate": 0} for key in keys}
    status, _, err = await cli(config, "sessions", "put", "-", stdin=orjson.dumps(sessions))
    assert status == 0, err
    await start_worker(config, name="one")
    second = {**config, "data_dir": str(tmp_path / "second"), "web": {"port": free_port()}}
    await start_worker(second, name="two")
    await wait_for_table(settings, "sessions", lambda s: s.keys() >= set(keys))
    assert {key_partition(key, settings.kafka.partitions) for key in keys} == {0, 1}

    await produce(
        settings.kafka.bootstrap_servers,
        settings.topics.requests,
        [request_count(key, time.time(), 1, org="acme") for key in keys],
    )
    # The triggers of both partitions, so of both workers, reach the org's webhook.
    hooks = await receiver.wait_for(len(keys), timeout=90, where=lambda h: h.path == "/org")
    assert {orjson.loads(hook.body)["key"] for hook in hooks} == set(keys)


async def test_dlq_list_show_and_redrive_after_the_receiver_recovers(
    make_config, cli, topics_of, start_worker, receiver
):
    receiver.responder = answering(410)
    settings = await one_trigger(
        make_config, cli, topics_of, start_worker, receiver, retry_schedule=[0.2]
    )
    records = await consume(
        settings.kafka.bootstrap_servers, settings.topics.dlq, until=lambda r: len(r) >= 1
    )
    event_id = orjson.loads(records[0].value)["id"]
    config = make_config(delivery={"retry_schedule": [0.2]})
    config.update(app_id=settings.app_id, topics=settings.topics.model_dump())
    config["monitor"]["configuration"] = {"target_path": f"{receiver.url}/hook"}

    status, out, err = await cli(config, "dlq", "list")
    assert status == 0, err
    assert event_id in out
    status, out, err = await cli(config, "dlq", "show", event_id)
    assert status == 0, err
    assert '"last_status": 410' in out

    status, out, err = await cli(config, "dlq", "redrive", "--dry-run")
    assert status == 0, err
    assert f"would re-deliver {event_id}" in out
    assert len(receiver.received) == 1

    receiver.responder = answering(200)
    status, out, err = await cli(config, "dlq", "redrive", "--target", f"{receiver.url}/hook")
    assert status == 0, err
    assert "queued 1 deliveries" in out
    hooks = await receiver.wait_for(2, timeout=60)
    assert hooks[1].headers["webhook-id"] == event_id == hooks[0].headers["webhook-id"]


async def test_replay_redelivers_triggers_with_their_ids_and_refuses_requests(
    make_config, cli, topics_of, start_worker, receiver
):
    settings = await one_trigger(make_config, cli, topics_of, start_worker, receiver)
    first = await receiver.wait_for(1, timeout=60)
    config = make_config()
    config.update(app_id=settings.app_id, topics=settings.topics.model_dump())
    config["monitor"]["configuration"] = {"target_path": f"{receiver.url}/hook"}

    status, _, err = await cli(config, "replay", "--topic", settings.topics.requests)
    assert status == 2
    assert "count its usage twice" in err
    assert len(err.strip().splitlines()) == 1

    status, out, err = await cli(
        config, "replay", "--since", str(time.time() - 600), "--key", "hook-key"
    )
    assert status == 0, err
    assert "queued 1 deliveries" in out
    hooks = await receiver.wait_for(2, timeout=60)
    assert hooks[1].headers["webhook-id"] == first[0].headers["webhook-id"]
    assert hooks[1].body == first[0].body


@pytest.fixture
async def dead_endpoint():
    """A server that accepts requests and never answers (until the test ends)."""
    release = asyncio.Event()

    async def hang(_request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    release.set()
    await runner.cleanup()


async def test_a_dead_endpoint_does_not_hold_back_a_healthy_one(
    make_config, cli, topics_of, start_worker, receiver, dead_endpoint
):
    config = make_config(
        monitor={
            "global_trigger_limits": [100],
            "configuration": {"target_path": f"{dead_endpoint}/hook"},
        },
        delivery={"timeout": 2, "retry_schedule": [30]},
    )
    settings = await topics_of(config)
    keys = [f"many-{i}" for i in range(30)]
    sessions = {key: {"org_id": "acme", "quota_max": 1, "quota_renewal_rate": 0} for key in keys}
    orgs = {"acme": {"event_options": {"trigger_event": {"webhook": f"{receiver.url}/acme"}}}}
    for kind, entries in (("sessions", sessions), ("orgs", orgs)):
        status, _, err = await cli(config, kind, "put", "-", stdin=orjson.dumps(entries))
        assert status == 0, err
    await start_worker(config)
    await wait_for_table(settings, "sessions", lambda s: s.keys() >= set(keys))
    now = time.time()
    await produce(
        settings.kafka.bootstrap_servers,
        settings.topics.requests,
        [request_count(key, now, 1, org="acme") for key in keys],
    )
    # Every key's trigger reaches the healthy org webhook while the monitor target hangs.
    hooks = await receiver.wait_for(len(keys), timeout=60)
    assert {orjson.loads(hook.body)["key"] for hook in hooks} == set(keys)


@pytest.mark.timeout(300)
async def test_delivery_worker_killed_mid_stream_loses_nothing(
    make_config, cli, topics_of, start_worker, receiver
):
    config = make_config(
        monitor={
            "global_trigger_limits": [100],
            "configuration": {"target_path": f"{receiver.url}/hook"},
        },
        delivery={"per_endpoint_concurrency": 2},
    )
    settings = await topics_of(config)
    keys = [f"kill-{i}" for i in range(200)]
    sessions = {key: {"org_id": "o1", "quota_max": 1, "quota_renewal_rate": 0} for key in keys}
    status, _, err = await cli(config, "sessions", "put", "-", stdin=orjson.dumps(sessions))
    assert status == 0, err
    worker = await start_worker(config)
    await wait_for_table(settings, "sessions", lambda s: s.keys() >= set(keys))
    await produce(
        settings.kafka.bootstrap_servers,
        settings.topics.requests,
        [request_count(key, time.time(), 1, org="o1") for key in keys],
    )
    await receiver.wait_for(20, timeout=60)
    worker.kill()
    await start_worker(config, name="restarted")

    triggers = await consume(
        settings.kafka.bootstrap_servers,
        settings.topics.triggers,
        until=lambda r: len({orjson.loads(x.value)["id"] for x in r}) >= len(keys),
        timeout=120,
    )
    expected = {orjson.loads(record.value)["id"] for record in triggers}
    assert {orjson.loads(record.value)["key"] for record in triggers} == set(keys)
    # Every event arrives at least once; a repeat after the crash carries the same webhook-id.
    try:
        await receiver.wait_for(
            len(expected),
            timeout=120,
            where=lambda hook: hook is first_of(receiver, hook.headers["webhook-id"]),
        )
    except TimeoutError:
        raise AssertionError(await undelivered(settings, triggers, receiver)) from None
    assert {hook.headers["webhook-id"] for hook in receiver.received} == expected


async def undelivered(settings, triggers, receiver) -> str:
    """Where the undelivered triggers sit, beside the offsets the group committed."""
    delivered = {hook.headers["webhook-id"] for hook in receiver.received}
    missing = sorted(
        (record.partition, record.offset)
        for record in triggers
        if orjson.loads(record.value)["id"] not in delivered
    )
    async with admin_client(settings) as admin:
        offsets = await admin.list_consumer_group_offsets(settings.app_id)
    commits = {
        tp.partition: meta.offset
        for tp, meta in offsets.items()
        if tp.topic == settings.topics.triggers
    }
    return f"{len(missing)} undelivered at (partition, offset) {missing[:20]}; committed {commits}"


def first_of(receiver, webhook_id):
    return next(h for h in receiver.received if h.headers["webhook-id"] == webhook_id)


def org_triggers(org: str, count: int) -> list[tuple[bytes, bytes]]:
    """``count`` distinct key triggers of ``org``, straight into quota.triggers."""
    crossing = Crossing(threshold=80, usage=80, period_start=0.0, period_end=3600.0, ts=1.0)
    events = []
    for i in range(count):
        key = f"{org}-key-{i}"
        event = trigger_event("key", org_id=org, key=key, quota_max=100, crossing=crossing)
        events.append((key.encode(), orjson.dumps(event)))
    return events


@pytest.mark.timeout(240)
async def test_a_retry_tier_full_of_jobs_not_due_yet_does_not_stop_fresh_deliveries(
    make_config, cli, topics_of, start_worker, receiver
):
    # More waiting jobs than faust buffers per agent (4096): a tier agent waits for its head's
    # due time, and its buffer must not fill up and stop the worker's other topics.
    waiting = 5000
    failing = WebhookReceiver(status=500)
    await failing.start()
    try:
        config = make_config(
            monitor={"configuration": {}}, delivery={"retry_schedule": [600], "timeout": 5}
        )
        settings = await topics_of(config)
        orgs = {
            "down": {"event_options": {"trigger_event": {"webhook": f"{failing.url}/down"}}},
            "up": {"event_options": {"trigger_event": {"webhook": f"{receiver.url}/up"}}},
        }
        status, _, err = await cli(config, "orgs", "put", "-", stdin=orjson.dumps(orgs))
        assert status == 0, err
        await start_worker(config)
        await wait_for_table(settings, "orgs", lambda s: s.keys() >= set(orgs))
        bootstrap = settings.kafka.bootstrap_servers
        await produce(bootstrap, settings.topics.triggers, org_triggers("down", waiting))
        tier = f"{settings.app_id}-retry-0"
        await poll(lambda: holds(bootstrap, tier, waiting), timeout=120)

        await produce(bootstrap, settings.topics.triggers, org_triggers("up", 50))
        hooks = await receiver.wait_for(50, timeout=60)
    finally:
        await failing.stop()
    assert {orjson.loads(hook.body)["org"] for hook in hooks} == {"up"}


async def holds(bootstrap: str, topic: str, count: int) -> bool:
    return len(await read_to_end(bootstrap, topic)) >= count
