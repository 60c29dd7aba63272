"""pipeline.usage.keys: sessions and requests in any order count the same; a record our code
cannot process is isolated."""

from __future__ import annotations

import itertools

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import MonitorConfig
from pipeline.records.requests import RequestCount
from pipeline.records.subjects import Session
from pipeline.usage.held import HoldPolicy, Room
from pipeline.usage.keys import (
    HELD_REQUESTS,
    KEY_USAGE,
    SESSIONS,
    KeyTables,
    plan_key_batch,
    plan_session_batch,
)
from pipeline.usage.plans import BatchPlan, HoldContext
from pipeline.usage.quota import UsageState

MONITOR = MonitorConfig(
    enable_trigger_monitors=True,
    global_trigger_limits=(25, 50, 100),
    monitor_user_keys=True,
    monitor_org_keys=True,
)
SESSION_OF = {
    "alpha": Session(org_id="acme", quota_max=20, quota_renewal_rate=30),
    "beta": Session(org_id="acme", quota_max=7, quota_renewal_rate=0),
}


class Tables:
    """Dict tables that take plans as the agents write them."""

    def __init__(self) -> None:
        self.sessions: dict = {}
        self.usage: dict = {}
        self.held: dict = {}
        self.fired: list[dict] = []

    def stored(self) -> KeyTables:
        return KeyTables(self.sessions, self.usage, self.held)

    def take(self, plan: BatchPlan) -> BatchPlan:
        assert plan.failed == {}, plan.failed
        self.fired += [orjson.loads(payload) for _, payload in plan.triggers]
        for name, table in ((SESSIONS, self.sessions), (KEY_USAGE, self.usage)):
            table_writes(table, plan.writes.get(name, {}))
        table_writes(self.held, plan.writes.get(HELD_REQUESTS, {}))
        return plan

    def requests(
        self, records: list[RequestCount], now: float = 1000.0, offsets: list[int] | None = None
    ) -> BatchPlan:
        context = HoldContext(HoldPolicy(), now, 0, Room(100))
        return self.take(plan_key_batch(self.stored(), records, MONITOR, context, offsets))

    def sessions_put(self, *entries: tuple[str, Session | None]) -> BatchPlan:
        indexed = [(i, key, session) for i, (key, session) in enumerate(entries)]
        return self.take(plan_session_batch(indexed, self.stored(), MONITOR))

    def ids(self) -> list[str]:
        return sorted(event["id"] for event in self.fired)

    def usage_of(self, key: str) -> int:
        state = UsageState.from_stored(self.usage.get(key))
        return sum(p.usage for p in (state.current, state.previous) if p is not None)


def table_writes(table: dict, writes: dict) -> None:
    for key, value in writes.items():
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value


traffic = st.lists(
    st.tuples(st.sampled_from(list(SESSION_OF)), st.integers(0, 20), st.integers(1, 5)),
    max_size=60,
).map(
    lambda rows: [
        RequestCount(float(ts), "acme", key, count, None)
        for (key, _, count), ts in zip(
            rows, itertools.accumulate(gap for _, gap, _ in rows), strict=True
        )
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    records=traffic,
    cuts=st.lists(st.integers(0, 60), max_size=8),
    arrivals=st.fixed_dictionaries({key: st.integers(0, 60) for key in SESSION_OF}),
)
def test_usage_and_triggers_do_not_depend_on_when_the_session_comes(records, cuts, arrivals):
    first = Tables()
    first.sessions_put(*SESSION_OF.items())
    first.requests(records)

    late = Tables()
    bounds = sorted({0, len(records), *(c for c in cuts if c <= len(records))})
    bounds = sorted(set(bounds) | {min(a, len(records)) for a in arrivals.values()})
    for lo, hi in itertools.pairwise([*bounds, len(records)]):
        for key, at in arrivals.items():
            if min(at, len(records)) == lo and key not in late.sessions:
                late.sessions_put((key, SESSION_OF[key]))
        late.requests(records[lo:hi])
    for key, session in SESSION_OF.items():
        if key not in late.sessions:
            late.sessions_put((key, session))

    assert late.ids() == first.ids()
    assert late.held == {}
    for key in SESSION_OF:
        assert late.usage_of(key) == first.usage_of(key)


def test_held_requests_fire_when_the_session_comes_with_the_gateways_org():
    tables = Tables()
    plan = tables.requests([RequestCount(5.0, "gw-org", "gamma", 10, None)])
    assert plan.tally.subjects == 1
    assert tables.fired == []
    assert tables.usage == {}

    released = tables.sessions_put(("gamma", Session(quota_max=10, quota_renewal_rate=60)))

    assert [e["trigger_limit"] for e in tables.fired] == ["25", "50", "100"]
    assert {e["org"] for e in tables.fired} == {"gw-org"}  # the session names none
    assert (released.tally.released, released.tally.subjects) == (10, -1)
    assert tables.held == {}
    assert tables.usage_of("gamma") == 10


def test_a_session_read_again_after_a_crash_does_not_apply_its_held_requests_twice():
    tables = Tables()
    tables.requests([RequestCount(5.0, "acme", "gamma", 3, None)])
    held_before = dict(tables.held)
    session = Session(quota_max=10, quota_renewal_rate=60)
    tables.sessions_put(("gamma", session))

    # The crash: the usage state was written, the held entry's deletion was not.
    tables.held.update(held_before)
    again = tables.sessions_put(("gamma", session))

    assert tables.usage_of("gamma") == 3
    assert again.triggers == []
    assert tables.held == {}


def test_a_tombstone_drops_what_is_held_and_stops_monitoring():
    tables = Tables()
    tables.sessions_put(("alpha", SESSION_OF["alpha"]))
    tables.requests([RequestCount(1.0, "acme", "alpha", 2, None)])
    tables.requests([RequestCount(1.0, "acme", "gamma", 4, None)])

    plan = tables.sessions_put(("alpha", None), ("gamma", None))

    assert plan.tally.dropped == {"deleted": 4}
    assert tables.sessions == {}
    assert tables.usage == {}
    assert tables.held == {}


def test_entries_of_a_batch_apply_in_order():
    tables = Tables()
    tables.requests([RequestCount(1.0, "acme", "alpha", 3, None)])
    reset = Session(quota_max=20, quota_renewal_rate=30, reset_quota=True)

    tables.sessions_put(("alpha", SESSION_OF["alpha"]), ("alpha", reset))

    state = UsageState.from_stored(tables.usage["alpha"])
    assert state.current is None
    assert state.previous is not None
    assert state.previous.usage == 3


def test_a_key_whose_stored_state_is_broken_is_rejected_and_the_others_count():
    tables = Tables()
    tables.sessions_put(*SESSION_OF.items())
    tables.usage["beta"] = {"current": {"start": "x"}}  # written by something else
    records = [
        RequestCount(1.0, "acme", "beta", 1, None),
        RequestCount(1.0, "acme", "alpha", 5, None),
        RequestCount(2.0, "acme", "beta", 1, None),
    ]

    plan = plan_key_batch(
        tables.stored(), records, MONITOR, HoldContext(HoldPolicy(), 1000.0, 0, Room(9))
    )

    assert sorted(plan.failed) == [0, 2]
    assert all(reason.startswith("could not be processed: ") for reason in plan.failed.values())
    assert set(plan.writes[KEY_USAGE]) == {"alpha"}
    assert [orjson.loads(p)["trigger_limit"] for _, p in plan.triggers] == ["25"]


def test_a_session_our_code_cannot_store_is_rejected_alone():
    tables = Tables()
    tables.held["beta"] = {"since": 1.0}  # broken: no buckets
    indexed = [(0, "beta", SESSION_OF["beta"]), (1, "alpha", SESSION_OF["alpha"])]

    plan = plan_session_batch(indexed, tables.stored(), MONITOR)

    assert list(plan.failed) == [0]
    assert set(plan.writes[SESSIONS]) == {"alpha"}


# --- read again after a crash: each key's state keeps the offset of its last request --------


def offsets_of(records: list[RequestCount], start: int = 0) -> list[int]:
    return list(range(start, start + len(records)))


@settings(max_examples=200, deadline=None)
@given(
    records=traffic,
    cuts=st.lists(st.integers(0, 60), max_size=8),
    rewinds=st.lists(st.integers(0, 60), max_size=8),
    session_at=st.integers(0, 60),
)
def test_records_read_again_from_any_earlier_offset_count_once(
    records: list[RequestCount], cuts: list[int], rewinds: list[int], session_at: int
) -> None:
    """Batches cut anywhere; after each, a crash may read again from any earlier offset (the
    partition's mark lost with the tables written); a session may come at any point. Usage and
    triggers are those of reading every record once."""
    once, crashing = Tables(), Tables()
    for tables in (once, crashing):
        tables.sessions_put(("beta", SESSION_OF["beta"]))
    once.sessions_put(("alpha", SESSION_OF["alpha"]))
    once.requests(records, offsets=offsets_of(records))

    position, bounds = 0, sorted({*cuts, len(records)})
    replays = iter(rewinds)
    while position < len(records):
        if position >= session_at and "alpha" not in crashing.sessions:
            crashing.sessions_put(("alpha", SESSION_OF["alpha"]))
        end = next(bound for bound in bounds if bound > position)
        crashing.requests(
            records[position:end], offsets=offsets_of(records[position:end], position)
        )
        again = next(replays, None)
        # The crash: read again from an earlier offset, as the partition's mark was not written.
        position = min(again, end) if again is not None and again < end else end
    crashing.sessions_put(("alpha", SESSION_OF["alpha"]))

    for key in SESSION_OF:
        assert crashing.usage_of(key) == once.usage_of(key), key
    assert crashing.ids() == once.ids()


def test_a_batch_read_again_whole_changes_nothing() -> None:
    tables = Tables()
    tables.sessions_put(("alpha", SESSION_OF["alpha"]))
    batch = [RequestCount(float(i), "acme", "alpha", 2, None) for i in range(5)]
    tables.requests(batch, offsets=[10, 11, 12, 13, 14])
    assert UsageState.from_stored(tables.usage["alpha"]).applied == 14

    again = tables.requests(batch, offsets=[10, 11, 12, 13, 14])
    assert again.writes == {}
    assert again.triggers == []
    assert tables.usage_of("alpha") == 10


def test_requests_held_and_read_again_are_held_once_and_released_once() -> None:
    tables = Tables()
    batch = [RequestCount(float(i), "acme", "alpha", 1, None) for i in range(6)]
    tables.requests(batch[:4], offsets=[0, 1, 2, 3])
    tables.requests(batch, offsets=[0, 1, 2, 3, 4, 5])  # read again from 0: 4 and 5 are new
    assert tables.held["alpha"]["requests"] == 6
    tables.sessions_put(("alpha", SESSION_OF["alpha"]))
    assert tables.usage_of("alpha") == 6
    tables.requests(batch, offsets=[0, 1, 2, 3, 4, 5])  # once more, now with the session
    assert tables.usage_of("alpha") == 6
