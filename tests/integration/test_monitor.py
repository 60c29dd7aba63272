"""Monitor semantics on a real broker and worker: key and org triggers, own and global limits,
renewal, unlimited and never-renewing quotas, the monitor switches, tombstones and resets.

Request timestamps are event time chosen by the test, so periods roll without waiting.
"""

from __future__ import annotations

import orjson
import pytest

from tests.integration.conftest import (
    consume,
    produce,
    read_to_end,
    request_count,
    table_state,
    wait_for_table,
)

T0 = 1_700_000_000.0


def usage_of(state: dict, subject: str) -> int | None:
    current = (state.get(subject) or {}).get("current")
    return None if current is None else current["usage"]


def trigger_set(records) -> set[tuple]:
    events = [orjson.loads(record.value) for record in records]
    return {
        (e["subject"], e["key"] or e["org"], e["trigger_limit"], e["period_start"]) for e in events
    }


async def put(cli, config, kind: str, entries: dict) -> None:
    status, _, err = await cli(config, kind, "put", "-", stdin=orjson.dumps(entries))
    assert status == 0, err


async def test_key_and_org_triggers_fire_once_per_period_with_own_and_global_limits(
    make_config, cli, topics_of, start_worker
):
    config = make_config()  # global limits 50 and 80; keys and orgs watched
    settings = await topics_of(config)
    sessions = {
        "k-global": {"org_id": "acme", "quota_max": 10, "quota_renewal_rate": 100},
        "k-own": {
            "org_id": "acme",
            "quota_max": 10,
            "quota_renewal_rate": 100,
            "monitor": {"trigger_limits": [30]},
        },
        "k-unlimited": {"org_id": "globex", "quota_max": 0, "quota_renewal_rate": 100},
        "k-never": {"org_id": "globex", "quota_max": 10, "quota_renewal_rate": 0},
    }
    orgs = {
        "acme": {"quota_max": 100, "quota_renewal_rate": 1000},
        "globex": {"quota_max": 10, "quota_renewal_rate": 0, "monitor": {"trigger_limits": [100]}},
    }
    await put(cli, config, "sessions", sessions)
    await put(cli, config, "orgs", orgs)
    await start_worker(config)
    await wait_for_table(settings, "sessions", lambda s: s.keys() >= sessions.keys())
    await wait_for_table(settings, "orgs", lambda s: s.keys() >= orgs.keys())

    bootstrap, requests = settings.kafka.bootstrap_servers, settings.topics.requests
    await produce(
        bootstrap,
        requests,
        [
            request_count("k-global", T0, 5, org="acme"),
            request_count("k-global", T0 + 1, 3, org="acme"),
            request_count("k-own", T0, 4, org="acme"),
            request_count("k-unlimited", T0, 1000, org="globex"),
            request_count("k-never", T0, 5, org="globex"),
        ],
    )
    # Org periods open at the first partial the org agent sees; partitions are read in no
    # particular order, so the later record waits until the earlier ones were counted.
    await wait_for_table(settings, "org_usage", lambda s: usage_of(s, "acme") == 12)
    await produce(bootstrap, requests, [request_count("k-nosession", T0 + 2, 40, org="acme")])
    first = {
        ("key", "k-global", "50", T0),
        ("key", "k-global", "80", T0),
        ("key", "k-own", "30", T0),
        ("key", "k-never", "50", T0),
        ("org", "acme", "50", T0),
        ("org", "globex", "100", T0),
    }
    records = await consume(
        bootstrap, settings.topics.triggers, until=lambda r: len(r) >= len(first)
    )
    assert trigger_set(records) == first

    # The next period of k-global opens at its first record after the end: one record there
    # jumps past both thresholds and fires both, ascending. k-never's period never ends.
    await produce(
        bootstrap,
        requests,
        [
            request_count("k-global", T0 + 150, 8, org="acme"),
            request_count("k-never", T0 + 10**6, 3, org="globex"),
        ],
    )
    second = {
        ("key", "k-global", "50", T0 + 150),
        ("key", "k-global", "80", T0 + 150),
        ("key", "k-never", "80", T0),
    }
    records = await consume(
        bootstrap, settings.topics.triggers, until=lambda r: len(r) >= len(first | second)
    )
    assert len(records) == len(first | second)
    assert trigger_set(records) == first | second
    k_global = [
        orjson.loads(r.value) for r in records if orjson.loads(r.value)["key"] == "k-global"
    ]
    assert [e["trigger_limit"] for e in k_global[-2:]] == ["50", "80"]
    assert [e["usage"] for e in k_global[-2:]] == [8, 8]

    # Every acme request counts, with a session or without: 5 + 3 + 4 + 40 + 8.
    await wait_for_table(settings, "org_usage", lambda s: usage_of(s, "acme") == 60)
    key_usage = await wait_for_table(settings, "key_usage", lambda s: "k-unlimited" in s)
    assert key_usage["k-unlimited"]["current"]["usage"] == 1000
    assert "k-nosession" not in key_usage


@pytest.mark.parametrize(
    ("switches", "expected_subjects"),
    [
        ({"monitor_user_keys": False}, {"org"}),
        ({"monitor_org_keys": False}, {"key"}),
        ({"enable_trigger_monitors": False}, set()),
    ],
    ids=["keys-off", "orgs-off", "all-off"],
)
async def test_monitor_switches_choose_what_is_watched(
    make_config, cli, topics_of, start_worker, switches, expected_subjects
):
    config = make_config(monitor=switches)
    settings = await topics_of(config)
    await put(cli, config, "sessions", {"k1": {"org_id": "o1", "quota_max": 10}})
    await put(cli, config, "orgs", {"o1": {"quota_max": 10}})
    await start_worker(config)
    await wait_for_table(settings, "sessions", lambda s: "k1" in s)
    await wait_for_table(settings, "orgs", lambda s: "o1" in s)

    bootstrap = settings.kafka.bootstrap_servers
    await produce(bootstrap, settings.topics.requests, [request_count("k1", T0, 9, org="o1")])
    # Usage counts whatever is watched. A second record after the first is the barrier: once
    # its usage shows, the first batch's triggers (sent before the next batch) are written.
    await wait_for_table(settings, "key_usage", lambda s: usage_of(s, "k1") == 9)
    await produce(bootstrap, settings.topics.requests, [request_count("k1", T0, 1, org="o1")])
    await wait_for_table(settings, "key_usage", lambda s: usage_of(s, "k1") == 10)
    await wait_for_table(settings, "org_usage", lambda s: usage_of(s, "o1") == 10)

    records = await read_to_end(bootstrap, settings.topics.triggers)
    assert {orjson.loads(r.value)["subject"] for r in records} == expected_subjects
    if expected_subjects:
        assert len(records) == 2  # 50 and 80, once each


async def test_reset_quota_tombstone_and_invalid_session(make_config, cli, topics_of, start_worker):
    config = make_config()
    settings = await topics_of(config)
    bootstrap, requests = settings.kafka.bootstrap_servers, settings.topics.requests
    session = {"org_id": "o1", "quota_max": 10, "quota_renewal_rate": 3600}
    await put(cli, config, "sessions", {"k1": session, "k2": session})
    await start_worker(config)
    await wait_for_table(settings, "sessions", lambda s: {"k1", "k2"} <= s.keys())

    await produce(bootstrap, requests, [request_count("k1", T0, 5, org="o1")])
    await consume(bootstrap, settings.topics.triggers, until=lambda r: len(r) >= 1)

    # reset_quota closes the current period: the same threshold fires again in a new one.
    await put(cli, config, "sessions", {"k1": {**session, "reset_quota": True}})
    await wait_for_table(settings, "key_usage", lambda s: s["k1"]["current"] is None)
    await produce(bootstrap, requests, [request_count("k1", T0 + 1, 5, org="o1")])
    records = await consume(bootstrap, settings.topics.triggers, until=lambda r: len(r) >= 2)
    assert trigger_set(records) == {("key", "k1", "50", T0), ("key", "k1", "50", T0 + 1)}

    # A tombstone stops monitoring the key and forgets its usage.
    status, _, err = await cli(config, "sessions", "put", "-", stdin=b'{"k1": null}')
    assert status == 0, err
    await wait_for_table(settings, "sessions", lambda s: "k1" not in s)
    await wait_for_table(settings, "key_usage", lambda s: "k1" not in s)

    # An invalid session is rejected with its reason; the previous one stays in force.
    await produce(
        bootstrap,
        settings.topics.sessions,
        [(b"k2", orjson.dumps({**session, "monitor": {"trigger_limits": [150]}}))],
    )
    rejected = await consume(bootstrap, settings.topics.rejected, until=lambda r: len(r) >= 1)
    reason = orjson.loads(rejected[0].value)["reason"]
    assert "trigger_limits" in reason
    assert "150" in reason

    await produce(
        bootstrap,
        requests,
        [request_count("k1", T0 + 2, 100, org="o1"), request_count("k2", T0, 8, org="o1")],
    )
    records = await consume(bootstrap, settings.topics.triggers, until=lambda r: len(r) >= 4)
    assert trigger_set(records) - {("key", "k1", "50", T0), ("key", "k1", "50", T0 + 1)} == {
        ("key", "k2", "50", T0),
        ("key", "k2", "80", T0),
    }
    await wait_for_table(settings, "key_usage", lambda s: usage_of(s, "k2") == 8)
    assert "k1" not in await table_state(settings, "key_usage")
