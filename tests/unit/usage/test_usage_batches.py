"""The usage stage's batch logic (plan_key_batch, plan_partials_batch) over plain dict tables:
random traffic, random interleaving of keys, random batch boundaries."""

from __future__ import annotations

import itertools
from collections import defaultdict

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import MonitorConfig
from pipeline.records.requests import RequestCount
from pipeline.records.subjects import Session
from pipeline.usage.held import HoldPolicy, Room
from pipeline.usage.keys import KEY_USAGE, KeyTables, plan_key_batch
from pipeline.usage.orgs import ORG_USAGE, OrgTables, plan_partials_batch
from pipeline.usage.partials import Partial, PartialSums
from pipeline.usage.plans import HoldContext
from pipeline.usage.quota import Limits, UsageState, apply_records
from pipeline.usage.watching import compact_session

MONITOR = MonitorConfig(
    enable_trigger_monitors=True,
    global_trigger_limits=(25, 50, 100),
    monitor_user_keys=True,
    monitor_org_keys=True,
)
KEYS = ["alpha", "beta", "gamma"]
QUOTAS = {"alpha": (20, 30), "beta": (7, 0), "gamma": (50, 10)}  # quota_max, renewal


def sessions_table() -> dict:
    return {
        key: compact_session(Session(org_id="org1", quota_max=quota, quota_renewal_rate=renewal))
        for key, (quota, renewal) in QUOTAS.items()
    }


def hold_context(now: float = 1000.0) -> HoldContext:
    return HoldContext(HoldPolicy(), now, 0, Room(100))


def apply_key_batch(sessions, usage, records, monitor, held=None):
    """What the agent does with a plan: emit its triggers, then write its states."""
    held = {} if held is None else held
    plan = plan_key_batch(KeyTables(sessions, usage, held), records, monitor, hold_context())
    assert plan.failed == {}
    usage.update(plan.writes.get(KEY_USAGE, {}))
    held.update(plan.writes.get("held_requests", {}))
    return plan.triggers


def fired_ids(triggers) -> list[tuple[str, str, float]]:
    events = [orjson.loads(payload) for _, payload in triggers]
    return [(e["key"], e["trigger_limit"], e["period_start"]) for e in events]


def per_key_model(records: list[RequestCount]) -> dict[str, list[tuple[str, str, float]]]:
    """Each key on its own, all records at once, through the reference per-subject logic."""
    expected: dict[str, list] = {}
    for key in KEYS:
        quota, renewal = QUOTAS[key]
        limits = Limits(quota, renewal, frozenset({25.0, 50.0, 100.0}))
        counts = [(r.ts, r.count) for r in records if r.key == key]
        applied = apply_records(UsageState(), counts, limits)
        expected[key] = [(key, f"{c.threshold:g}", c.period_start) for c in applied.crossings]
    return expected


traffic = st.lists(
    st.tuples(st.sampled_from(KEYS), st.integers(0, 20), st.integers(1, 9)), max_size=80
).map(
    lambda rows: [
        RequestCount(float(ts), "org1", key, count, None)
        for (key, _, count), ts in zip(
            rows, itertools.accumulate(gap for _, gap, _ in rows), strict=True
        )
    ]
)


@settings(max_examples=200, deadline=None)
@given(records=traffic, cuts=st.lists(st.integers(0, 80), max_size=10))
def test_any_batching_of_interleaved_keys_fires_what_each_key_alone_fires(records, cuts):
    sessions, usage = sessions_table(), {}
    triggers = []
    bounds = sorted({0, len(records), *(c for c in cuts if c <= len(records))})
    for lo, hi in itertools.pairwise(bounds):
        triggers.extend(apply_key_batch(sessions, usage, records[lo:hi], MONITOR))

    by_key: dict[str, list] = defaultdict(list)
    for fired in fired_ids(triggers):
        by_key[fired[0]].append(fired)
    expected = per_key_model(records)
    assert {key: by_key.get(key, []) for key in KEYS} == expected
    for key in KEYS:
        total = sum(r.count for r in records if r.key == key)
        state = UsageState.from_stored(usage.get(key))
        kept = sum(p.usage for p in (state.current, state.previous) if p is not None)
        assert kept <= total
        if QUOTAS[key][1] == 0:  # never renews: everything is in one period
            assert kept == total


def test_keys_without_session_are_held_and_count_for_their_org():
    usage: dict = {}
    held: dict = {}
    records = [RequestCount(1.0, "org1", "stranger", 5, None)]
    assert apply_key_batch(sessions_table(), usage, records, MONITOR, held) == []
    assert usage == {}
    assert held["stranger"]["requests"] == 5

    partials = PartialSums()
    partials.add_all(records)
    orgs = {"org1": {"quota_max": 10, "quota_renewal_rate": 0, "trigger_limits": []}}
    plan = plan_partials_batch(
        list(enumerate(Partial(org, b) for org, b in partials.items())),
        OrgTables(orgs, {}, {}),
        MONITOR,
        hold_context(),
    )
    triggers = plan.triggers
    assert [orjson.loads(p)["trigger_limit"] for _, p in triggers] == ["25", "50"]
    assert [orjson.loads(p)["key"] for _, p in triggers] == ["", ""]
    assert UsageState.from_stored(plan.writes[ORG_USAGE]["org1"]).current.usage == 5


def test_session_org_wins_over_the_gateways_org():
    sessions = {"alpha": compact_session(Session(org_id="acme", quota_max=1))}
    triggers = apply_key_batch(
        sessions, {}, [RequestCount(1.0, "other", "alpha", 1, None)], MONITOR
    )
    assert {orjson.loads(p)["org"] for _, p in triggers} == {"acme"}


def test_partial_sums_bucket_by_second_keeping_the_earliest_time():
    partials = PartialSums()
    counts = [(10.7, "o1", 1), (10.2, "o1", 2), (11.0, "o1", 4), (9.9, "o1", 8), (10.5, "o2", 16)]
    partials.add_all(RequestCount(ts, org, "k", count, None) for ts, org, count in counts)
    assert list(partials.items()) == [
        ("o1", [(9.9, 8), (10.2, 3), (11.0, 4)]),
        ("o2", [(10.5, 16)]),
    ]


def test_planning_writes_nothing():
    usage: dict = {}
    plan = plan_key_batch(
        KeyTables(sessions_table(), usage, {}),
        [RequestCount(1.0, "org1", "alpha", 20, None)],
        MONITOR,
        hold_context(),
    )
    assert usage == {}
    assert set(plan.writes[KEY_USAGE]) == {"alpha"}
    assert len(plan.triggers) == 3
