"""Applied-offset marks: a record read any number of times, in any batching, is applied once.

The reads model what faust and a restart do to a partition: batches of the next records, seeks
back to an earlier offset (a lagging commit after a crash), and the last record again.
"""

from __future__ import annotations

from collections import Counter

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import MonitorConfig
from pipeline.records.requests import RequestCount
from pipeline.records.subjects import Session
from pipeline.usage.held import HoldPolicy, Room
from pipeline.usage.keys import KEY_USAGE, KeyTables, plan_key_batch
from pipeline.usage.orgs import ORG_USAGE, OrgTables, plan_partials_batch
from pipeline.usage.partials import Partial, decode_partial, encode_partials, is_new, marked
from pipeline.usage.plans import HoldContext
from pipeline.usage.quota import UsageState
from pipeline.usage.watching import compact_session
from pipeline.usage.watermarks import mark_key, unapplied

MONITOR = MonitorConfig(
    enable_trigger_monitors=True, monitor_user_keys=True, global_trigger_limits=(10, 50, 100)
)
CONTEXT = HoldContext(HoldPolicy(), 1000.0, 0, Room(10))


def plan_keys(sessions, usage, records):
    return plan_key_batch(KeyTables(sessions, usage, {}), records, MONITOR, CONTEXT)


# Each step: read the next n records, or step back n records (a seek), or repeat the last one.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("next"), st.integers(1, 7)),
        st.tuples(st.just("back"), st.integers(1, 12)),
        st.tuples(st.just("again"), st.just(1)),
    ),
    max_size=40,
)


def reads(total: int, plan: list[tuple[str, int]]) -> list[list[int]]:
    """The batches of offsets a reader following ``plan`` hands out, then the rest in order."""
    batches, position = [], 0
    for step, n in plan:
        if step == "next" and position < total:
            batches.append(list(range(position, min(total, position + n))))
            position = min(total, position + n)
        elif step == "back":
            position = max(0, position - n)
        elif step == "again" and position > 0:
            batches.append([position - 1])
    if position < total:
        batches.append(list(range(position, total)))
    return batches


@settings(max_examples=300, deadline=None)
@given(total=st.integers(0, 40), plan=steps)
def test_every_offset_is_applied_once_and_in_order(total, plan):
    applied: list[int] = []
    mark = None
    for batch in reads(total, plan):
        fresh = unapplied(batch, lambda offset: offset, mark)
        applied.extend(fresh)
        if fresh:
            mark = fresh[-1]
    assert applied == list(range(total))


def test_without_a_mark_everything_is_new():
    assert unapplied([3, 4], lambda offset: offset, None) == [3, 4]
    assert unapplied([3, 4], lambda offset: offset, 3) == [4]


@settings(max_examples=150, deadline=None)
@given(plan=steps, counts=st.lists(st.integers(1, 9), min_size=1, max_size=30))
def test_usage_and_triggers_are_exact_however_the_records_are_read_again(plan, counts):
    """The usage agent's path: drop what the mark covers, plan, write states and the mark."""
    sessions = {"k": compact_session(Session(org_id="o", quota_max=100, quota_renewal_rate=0))}
    records = [RequestCount(float(i), "o", "k", count, None) for i, count in enumerate(counts)]
    usage: dict = {}
    marks: dict = {}
    fired = []
    for batch in reads(len(records), plan):
        fresh = unapplied(batch, lambda offset: offset, marks.get(mark_key("requests", 0)))
        if not fresh:
            continue
        result = plan_keys(sessions, usage, [records[i] for i in fresh])
        fired.extend(orjson.loads(payload)["trigger_limit"] for _, payload in result.triggers)
        usage.update(result.writes[KEY_USAGE])
        marks[mark_key("requests", 0)] = fresh[-1]
    assert UsageState.from_stored(usage["k"]).current.usage == sum(counts)
    crossed = [limit for limit in (10, 50, 100) if sum(counts) >= limit]
    assert fired == [str(limit) for limit in crossed]


def partial(origin_partition: int, offset: int, count: int = 1, part: int = 0) -> Partial:
    return Partial("org", [(float(offset), count)], (origin_partition, offset, part))


def test_a_partial_is_new_after_the_last_applied_of_its_origin():
    marks = marked(marked(None, (0, 20, 0)), (1, 5, 1))
    assert marks == {"0": [20, 0], "1": [5, 1]}
    assert not is_new((0, 20, 0), marks)
    assert not is_new((0, 10, 3), marks)
    assert is_new((0, 20, 1), marks)
    assert is_new((1, 6, 0), marks)
    assert is_new((2, 0, 0), marks)
    assert is_new(None, marks)


def apply_partials(usage: dict, partials: list[Partial]) -> None:
    orgs = {"org": {"quota_max": 10, "quota_renewal_rate": 0, "trigger_limits": []}}
    plan = plan_partials_batch(
        list(enumerate(partials)), OrgTables(orgs, usage, {}), MONITOR, CONTEXT
    )
    usage.update(plan.writes.get(ORG_USAGE, {}))


def test_partials_of_interleaved_origins_are_applied_once_each():
    usage: dict = {}
    apply_partials(usage, [partial(0, 10), partial(1, 5), partial(0, 20)])
    # Read again from an earlier offset of the partials partition, with one new partial.
    apply_partials(usage, [partial(1, 5), partial(0, 20), partial(1, 9)])
    assert UsageState.from_stored(usage["org"]).current.usage == 4


def test_a_partial_repeated_within_one_batch_counts_once():
    usage: dict = {}
    apply_partials(usage, [partial(2, 7, 4), partial(2, 7, 4)])
    assert UsageState.from_stored(usage["org"]).current.usage == 4


def test_partials_without_an_origin_are_always_applied():
    usage: dict = {}
    old = Partial("org", [(1.0, 3)])
    apply_partials(usage, [old, old])
    assert UsageState.from_stored(usage["org"]).current.usage == 6


def test_a_partial_carries_its_origin_through_kafka():
    [raw] = encode_partials("org", [(1.5, 2)], stream=3, offset=41)
    assert decode_partial(raw) == Partial("org", [(1.5, 2)], (3, 41, 0))
    # Before 0.11.0 an origin had two numbers (one part); before 0.4.0 there was none.
    before = orjson.dumps({"org_id": "org", "buckets": [], "origin": [3, 41]})
    assert decode_partial(before).origin == (3, 41, 0)
    assert decode_partial(orjson.dumps({"org_id": "org", "buckets": []})).origin is None


def test_every_subject_fires_once_per_threshold_across_reads():
    """Several keys interleaved in one partition, read with a seek back in the middle."""
    sessions = {
        key: compact_session(Session(org_id="o", quota_max=20, quota_renewal_rate=0))
        for key in ("a", "b")
    }
    records = [RequestCount(float(i), "o", "ab"[i % 2], 1, None) for i in range(40)]
    usage: dict = {}
    mark = None
    fired: Counter = Counter()
    for batch in (list(range(0, 25)), list(range(15, 40)), [39]):
        fresh = unapplied(batch, lambda offset: offset, mark)
        result = plan_keys(sessions, usage, [records[i] for i in fresh])
        fired.update((key, orjson.loads(p)["trigger_limit"]) for key, p in result.triggers)
        usage.update(result.writes.get(KEY_USAGE, {}))
        mark = fresh[-1] if fresh else mark
    assert fired == Counter({(k, limit): 1 for k in "ab" for limit in ("10", "50", "100")})
    assert {k: UsageState.from_stored(usage[k]).current.usage for k in "ab"} == {"a": 20, "b": 20}
