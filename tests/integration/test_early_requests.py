"""Requests count whatever the order in which they and their session (or org) arrive: on a
backlog read by a worker with a fresh app id, and live, seconds before the session."""

from __future__ import annotations

import random
import time
from collections import defaultdict

import aiohttp
import orjson

from pipeline.usage.quota import Limits, UsageState, apply_records
from pipeline.usage.triggers import trigger_id
from tests.integration.conftest import (
    consume,
    poll,
    produce,
    request_count,
    scrape,
    wait_for_table,
)

TOKEN = "api-token-early-requests"
LIMITS = (50.0, 80.0)


def held(metrics: dict, subject: str) -> float:
    return metrics.get(("quota_pipeline_held_requests", (("subject", subject),)), 0.0)


def current_usage(state: dict | None) -> int:
    period = UsageState.from_stored(state).current
    return period.usage if period is not None else 0


async def test_a_fresh_app_id_on_a_backlog_counts_what_a_warm_worker_counts(
    make_config, cli, topics_of, start_worker
):
    """Requests first, their sessions and orgs after them: a worker that starts then reads
    all of it and counts exactly what the pure model (a worker that had every session first)
    counts, with the same trigger ids."""
    config = make_config()
    settings = await topics_of(config)
    rng = random.Random(17)
    orgs = {f"org-{i}": 300 + 100 * i for i in range(3)}
    quotas = {f"key-{i:03}": rng.randint(10, 40) for i in range(40)}
    org_of = {key: f"org-{i % 3}" for i, key in enumerate(quotas)}
    base = time.time()
    records: list[tuple[str, float, int]] = []
    for n in range(1500):
        key = rng.choice(list(quotas))
        records.append((key, base + n * 0.01, rng.randint(1, 2)))
    await produce(
        settings.kafka.bootstrap_servers,
        settings.topics.requests,
        [request_count(key, ts, count, org=org_of[key]) for key, ts, count in records],
    )
    sessions = {
        key: {"org_id": org_of[key], "quota_max": quota, "quota_renewal_rate": 0}
        for key, quota in quotas.items()
    }
    assert (await cli(config, "sessions", "put", "-", stdin=orjson.dumps(sessions)))[0] == 0
    org_records = {
        org: {"quota_max": quota, "quota_renewal_rate": 0} for org, quota in orgs.items()
    }
    assert (await cli(config, "orgs", "put", "-", stdin=orjson.dumps(org_records)))[0] == 0

    # The model: each key's records in the order produced, from a fresh state.
    counts: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for key, ts, count in records:
        counts[key].append((ts, count))
    expected_ids = set()
    expected_usage = {}
    for key, key_counts in counts.items():
        limits = Limits(quotas[key], 0, frozenset(LIMITS))
        applied = apply_records(UsageState(), key_counts, limits)
        expected_usage[key] = sum(count for _, count in key_counts)
        expected_ids |= {
            trigger_id("key", key, crossing.period_start, crossing.threshold)
            for crossing in applied.crossings
        }
    org_usage = defaultdict(int)
    for key, _, count in records:
        org_usage[org_of[key]] += count
    expected_org_limits = {
        (org, limit)
        for org, used in org_usage.items()
        for limit in LIMITS
        if used * 100 >= limit * orgs[org]
    }

    await start_worker(config)

    await wait_for_table(
        settings,
        "key_usage",
        lambda state: {key: current_usage(state.get(key)) for key in counts} == expected_usage,
        timeout=120,
    )
    await wait_for_table(
        settings,
        "org_usage",
        lambda state: {org: current_usage(state.get(org)) for org in orgs} == dict(org_usage),
        timeout=60,
    )
    key_ids = len(expected_ids)
    triggers = await consume(
        settings.kafka.bootstrap_servers,
        settings.topics.triggers,
        until=lambda found: len(found) >= key_ids + len(expected_org_limits),
        timeout=60,
    )
    events = [orjson.loads(record.value) for record in triggers]
    fired_keys = [event["id"] for event in events if event["subject"] == "key"]
    fired_orgs = [
        (event["org"], float(event["trigger_limit"]))
        for event in events
        if event["subject"] == "org"
    ]
    assert sorted(fired_keys) == sorted(expected_ids)  # each once, the same ids
    assert sorted(fired_orgs) == sorted(expected_org_limits)


async def test_requests_seconds_before_their_session_or_org_count_when_it_comes(
    make_config, cli, topics_of, start_worker, receiver
):
    config = make_config(
        monitor={"configuration": {"target_path": f"{receiver.url}/hook"}},
        web={"token": TOKEN},
    )
    settings = await topics_of(config)
    worker = await start_worker(config)
    await worker.wait_ready()
    now = time.time()
    # A new key of a new org: neither its session nor its org record exists yet.
    await produce(
        settings.kafka.bootstrap_servers,
        settings.topics.requests,
        [request_count("new-key-1", now + i * 0.1, 2, org="new-org") for i in range(5)],
    )
    metrics = await poll(
        lambda: _held_both(worker.web_url), timeout=60
    )  # synchronised on what the worker says it holds
    assert held(metrics, "key") == 10
    assert held(metrics, "org") == 10

    session = {"new-key-1": {"org_id": "new-org", "quota_max": 10, "quota_renewal_rate": 3600}}
    assert (await cli(config, "sessions", "put", "-", stdin=orjson.dumps(session)))[0] == 0
    hooks = await receiver.wait_for(
        2, timeout=60, where=lambda hook: orjson.loads(hook.body)["key"] == "new-key-1"
    )
    assert [orjson.loads(hook.body)["trigger_limit"] for hook in hooks] == ["50", "80"]

    org = {"new-org": {"quota_max": 12, "quota_renewal_rate": 3600}}
    assert (await cli(config, "orgs", "put", "-", stdin=orjson.dumps(org)))[0] == 0
    org_hooks = await receiver.wait_for(
        2,
        timeout=60,
        where=lambda hook: (
            (body := orjson.loads(hook.body))["org"] == "new-org" and body["key"] == ""
        ),
    )
    assert [orjson.loads(hook.body)["trigger_limit"] for hook in org_hooks] == ["50", "80"]

    # The webhooks go out before the states are written (a crash between them repeats an
    # event rather than losing one): the usage shows once the batch has ended.
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http:

        async def usage_of(path: str) -> int:
            async with http.get(f"{worker.web_url}{path}") as response:
                return int((await response.json()).get("usage", 0))

        await poll(lambda: _equals(usage_of("/quota/new-key-1"), 10))
        await poll(lambda: _equals(usage_of("/orgs/new-org/quota"), 10))
    metrics = await scrape(worker.web_url)
    assert held(metrics, "key") == held(metrics, "org") == 0
    released = ("quota_pipeline_held_requests_released_total", (("subject", "key"),))
    assert metrics[released] == 10


async def _held_both(web_url: str) -> dict | None:
    metrics = await scrape(web_url)
    return metrics if held(metrics, "key") == 10 and held(metrics, "org") == 10 else None


async def _equals(value, expected) -> bool:
    return await value == expected
