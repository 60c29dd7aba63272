"""pipeline.usage.orgs: each partial applied once per org, whatever else shares its origin;
partials of orgs without a record held until it comes."""

from __future__ import annotations

import itertools

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import MonitorConfig
from pipeline.records.subjects import Org
from pipeline.usage.held import HoldPolicy, Room
from pipeline.usage.orgs import (
    HELD_PARTIALS,
    ORG_USAGE,
    ORGS,
    OrgTables,
    plan_orgs_batch,
    plan_partials_batch,
)
from pipeline.usage.partials import (
    MAX_BUCKETS_PER_PARTIAL,
    Partial,
    decode_partial,
    encode_partials,
)
from pipeline.usage.plans import BatchPlan, HoldContext
from pipeline.usage.quota import UsageState

MONITOR = MonitorConfig(
    enable_trigger_monitors=True,
    global_trigger_limits=(50, 100),
    monitor_user_keys=True,
    monitor_org_keys=True,
)
ORG = Org(quota_max=10, quota_renewal_rate=0)


class Tables:
    def __init__(self) -> None:
        self.orgs: dict = {}
        self.usage: dict = {}
        self.held: dict = {}
        self.fired: list[dict] = []

    def take(self, plan: BatchPlan) -> BatchPlan:
        assert plan.failed == {}, plan.failed
        self.fired += [orjson.loads(payload) for _, payload in plan.triggers]
        for name, table in ((ORGS, self.orgs), (ORG_USAGE, self.usage), (HELD_PARTIALS, self.held)):
            for key, value in plan.writes.get(name, {}).items():
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value
        return plan

    def partials(self, *partials: Partial) -> BatchPlan:
        context = HoldContext(HoldPolicy(), 1000.0, 0, Room(100))
        stored = OrgTables(self.orgs, self.usage, self.held)
        return self.take(plan_partials_batch(list(enumerate(partials)), stored, MONITOR, context))

    def orgs_put(self, *entries: tuple[str, Org | None]) -> BatchPlan:
        indexed = [(i, org_id, org) for i, (org_id, org) in enumerate(entries)]
        return self.take(
            plan_orgs_batch(indexed, OrgTables(self.orgs, self.usage, self.held), MONITOR)
        )

    def usage_of(self, org: str) -> int:
        state = UsageState.from_stored(self.usage.get(org))
        return state.current.usage if state.current is not None else 0


def test_orgs_sharing_an_origin_each_apply_their_partial_in_one_batch_or_two():
    tables = Tables()
    tables.orgs_put(("a", ORG), ("b", ORG), ("c", ORG))

    tables.partials(Partial("a", [(1.0, 2)], (0, 100, 0)), Partial("b", [(1.0, 3)], (0, 100, 0)))
    tables.partials(Partial("c", [(1.0, 4)], (0, 100, 0)))

    assert [tables.usage_of(org) for org in "abc"] == [2, 3, 4]


def test_a_partial_sent_twice_is_applied_once_and_its_parts_each_once():
    tables = Tables()
    tables.orgs_put(("a", ORG))
    first = Partial("a", [(1.0, 2)], (0, 100, 0))
    second_part = Partial("a", [(2.0, 1)], (0, 100, 1))

    tables.partials(first, first, second_part)
    tables.partials(first, second_part, Partial("a", [(3.0, 1)], (1, 5, 0)))

    assert tables.usage_of("a") == 4


def test_partials_of_an_org_without_a_record_are_held_until_it_comes():
    tables = Tables()
    plan = tables.partials(Partial("a", [(1.0, 4)], (0, 1, 0)), Partial("a", [(2.0, 6)], (1, 7, 0)))
    assert plan.tally.subjects == 1
    assert tables.usage_of("a") == 0  # (its usage state keeps the origins applied)
    # Read twice while held: held once.
    tables.partials(Partial("a", [(1.0, 4)], (0, 1, 0)))
    assert tables.held["a"]["requests"] == 10

    released = tables.orgs_put(("a", ORG))

    assert released.tally.released == 10
    assert [event["trigger_limit"] for event in tables.fired] == ["50", "100"]
    assert tables.usage_of("a") == 10
    # The origins held come along: a partial read again after the release is not re-applied.
    tables.partials(Partial("a", [(2.0, 6)], (1, 7, 0)))
    assert tables.usage_of("a") == 10


def test_an_org_tombstone_forgets_usage_and_what_is_held():
    tables = Tables()
    tables.orgs_put(("a", ORG))
    tables.partials(Partial("a", [(1.0, 1)], (0, 1, 0)), Partial("b", [(1.0, 2)], (0, 1, 0)))

    plan = tables.orgs_put(("a", None), ("b", None))

    assert plan.tally.dropped == {"deleted": 2}
    assert tables.orgs == tables.held == {}
    assert tables.usage_of("a") == tables.usage_of("b") == 0
    # The origins applied stay: a partial read again after the org comes back is not counted.
    tables.orgs_put(("a", ORG))
    tables.partials(Partial("a", [(1.0, 1)], (0, 1, 0)))
    assert tables.usage_of("a") == 0


def test_without_org_triggers_nothing_is_held_for_an_org_without_a_record():
    monitor = MONITOR.model_copy(update={"monitor_org_keys": False})
    context = HoldContext(HoldPolicy(), 1000.0, 0, Room(100))
    plan = plan_partials_batch(
        [(0, Partial("a", [(1.0, 4)], (0, 1, 0)))], OrgTables({}, {}, {}), monitor, context
    )
    assert plan.writes == {}
    assert plan.tally.subjects == 0


def test_many_seconds_are_sent_in_parts_that_all_apply():
    buckets = [(float(second), 1) for second in range(MAX_BUCKETS_PER_PARTIAL * 2 + 5)]
    records = encode_partials("a", buckets, stream=2, offset=99)
    assert len(records) == 3
    assert max(len(record) for record in records) < 300_000

    tables = Tables()
    tables.orgs_put(("a", Org(quota_max=10**6, quota_renewal_rate=0)))
    tables.partials(*(decode_partial(record) for record in records))

    assert tables.usage_of("a") == len(buckets)


@settings(max_examples=100, deadline=None)
@given(
    counts=st.lists(st.integers(1, 4), min_size=1, max_size=12),
    org_at=st.integers(0, 12),
    cuts=st.lists(st.integers(0, 12), max_size=4),
)
def test_org_usage_does_not_depend_on_when_the_org_record_comes(counts, org_at, cuts):
    partials = [Partial("a", [(float(i), c)], (0, i, 0)) for i, c in enumerate(counts)]
    first = Tables()
    first.orgs_put(("a", ORG))
    first.partials(*partials)

    late = Tables()
    bounds = sorted(
        {0, len(partials), min(org_at, len(partials)), *(c for c in cuts if c <= len(partials))}
    )
    for lo, hi in itertools.pairwise(bounds):
        if lo == min(org_at, len(partials)):
            late.orgs_put(("a", ORG))
        late.partials(*partials[lo:hi])
    if "a" not in late.orgs:
        late.orgs_put(("a", ORG))

    assert late.usage_of("a") == first.usage_of("a") == sum(counts)
    assert sorted(e["id"] for e in late.fired) == sorted(e["id"] for e in first.fired)
