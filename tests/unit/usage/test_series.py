"""pipeline.usage.series: the bounded (time, usage) series of a subject's current period, and its
place in the stored usage state."""

from __future__ import annotations

import itertools

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import MonitorConfig
from pipeline.records.requests import RequestCount
from pipeline.records.subjects import Org, Session
from pipeline.usage.held import HoldPolicy, Room
from pipeline.usage.keys import (
    HELD_REQUESTS,
    KEY_USAGE,
    SESSIONS,
    KeyTables,
    plan_key_batch,
    plan_session_batch,
)
from pipeline.usage.orgs import (
    HELD_PARTIALS,
    ORG_USAGE,
    ORGS,
    OrgTables,
    plan_orgs_batch,
    plan_partials_batch,
)
from pipeline.usage.partials import Partial
from pipeline.usage.plans import HoldContext
from pipeline.usage.quota import NEVER, Limits, Period, UsageState, apply_records, reset
from pipeline.usage.series import NEVER_BUCKET, SAMPLES, sample, sampled, sampled_json

#: 2,400 s: buckets of 100 s.
PERIOD = Period(1000.0, 3400.0)
LIMITS = Limits(quota_max=100, renewal_rate=2400, thresholds=frozenset({50.0}))


def test_points_of_one_bucket_make_one_point_at_the_latest_time():
    series = sampled((), PERIOD, 1010.0, 3)
    assert series == ((1010.0, 3),)
    series = sampled(series, PERIOD, 1099.0, 5)
    assert series == ((1099.0, 5),)
    series = sampled(series, PERIOD, 1100.0, 6)  # the next bucket
    assert series == ((1099.0, 5), (1100.0, 6))


def test_each_bucket_is_a_samples_th_of_the_period():
    series: tuple[tuple[float, int], ...] = ()
    for usage, at in enumerate(range(1000, 3400, 50), start=1):
        series = sampled(series, PERIOD, float(at), usage)
    assert len(series) == SAMPLES
    assert [at for at, _ in series] == [float(at) for at in range(1050, 3400, 100)]
    assert series[-1] == (3350.0, 48)


def test_unchanged_usage_adds_nothing():
    series = sampled((), PERIOD, 1010.0, 3)
    assert sampled(series, PERIOD, 2000.0, 3) is series
    assert sampled((), PERIOD, 2000.0, 0) == ()


def test_late_records_update_the_last_points_usage_only():
    series = sampled(sampled((), PERIOD, 1010.0, 3), PERIOD, 1500.0, 4)
    series = sampled(series, PERIOD, 1020.0, 9)  # a batch of late records only
    assert series == ((1010.0, 3), (1500.0, 9))


def test_records_from_before_the_period_count_at_its_start():
    assert sampled((), PERIOD, 900.0, 2) == ((1000.0, 2),)


def test_a_new_period_starts_a_fresh_series():
    series = sampled(sampled((), PERIOD, 1010.0, 3), PERIOD, 3300.0, 90)
    following = Period(3500.0, 5900.0)
    assert sampled(series, following, 3510.0, 90) == ((3510.0, 90),)
    assert sampled(series, following, 3510.0, 1) == ((3510.0, 1),)


def test_usage_never_decreases_along_the_series():
    series = sampled(sampled((), PERIOD, 1010.0, 3), PERIOD, 1500.0, 7)
    # Not from this period's run (usage only grows): the points above it go.
    assert sampled(series, PERIOD, 1600.0, 5) == ((1010.0, 3), (1600.0, 5))


def test_a_period_that_never_ends_keeps_hourly_points_and_only_the_last_samples():
    forever = Period(0.0, NEVER)
    series: tuple[tuple[float, int], ...] = ()
    for hour in range(SAMPLES + 6):
        series = sampled(series, forever, hour * NEVER_BUCKET + 10, 2 * hour + 1)
        series = sampled(series, forever, hour * NEVER_BUCKET + 20, 2 * hour + 2)
    assert len(series) == SAMPLES
    assert series[0] == (6 * NEVER_BUCKET + 20, 14)
    assert series[-1] == ((SAMPLES + 5) * NEVER_BUCKET + 20, 2 * (SAMPLES + 5) + 2)


def test_sample_uses_the_latest_event_time_of_the_records_applied():
    records = [(1020.0, 1), (1150.0, 2), (1140.0, 4)]
    state = sample(apply_records(UsageState(), records, LIMITS).state, records)
    assert state.series == ((1150.0, 7),)
    assert sample(state, [(1030.0, 0)]) is state


def test_apply_records_leaves_the_series_as_it_was():
    state = UsageState(Period(1000.0, 3400.0, 3), series=((1010.0, 3),))
    applied = apply_records(state, [(1500.0, 2)], LIMITS)
    assert applied.state.series == ((1010.0, 3),)
    assert applied.state.current == Period(1000.0, 3400.0, 5)


def test_a_reset_starts_a_fresh_series():
    state = UsageState(Period(1000.0, 3400.0, 3), series=((1010.0, 3),))
    assert reset(state).series == ()
    assert reset(UsageState(series=((1.0, 1),))) == UsageState()
    assert reset(UsageState()) == UsageState()


# --- stored JSON -------------------------------------------------------------------------------


def test_the_series_is_stored_as_pairs_only_when_there_is_one():
    state = UsageState(Period(1000.0, 3400.0, 5), series=((1010.0, 3), (1500.5, 5)))
    stored = orjson.loads(orjson.dumps(state.to_json()))  # as the tables encode values
    assert stored["series"] == [[1010.0, 3], [1500.5, 5]]
    assert UsageState.from_json(stored) == state
    assert UsageState.from_json(state.to_json()) == state  # (a working copy, not encoded)
    assert "series" not in UsageState(Period(1000.0, 3400.0, 5)).to_json()


def test_a_state_stored_without_a_series_loads_with_none():
    data = {"current": {"start": 1.5, "end": None, "usage": 7, "fired": [50]}, "previous": None}
    assert UsageState.from_json(data) == UsageState(Period(1.5, NEVER, 7, frozenset({50})))


def test_a_state_with_a_series_loads_in_code_that_ignores_it():
    data = UsageState(Period(1.5, NEVER, 7), series=((2.0, 7),)).to_json()
    # What the previous from_json read.
    current = data.get("current")
    assert current is not None
    assert (current["usage"], data.get("absorbed"), data.get("origins")) == (7, None, None)


# --- the planners ------------------------------------------------------------------------------

MONITOR = MonitorConfig(
    enable_trigger_monitors=True,
    global_trigger_limits=(50, 100),
    monitor_user_keys=True,
    monitor_org_keys=True,
)
CONTEXT = HoldContext(HoldPolicy(), 1000.0, 0, Room(100))
SESSION = Session(org_id="acme", quota_max=100, quota_renewal_rate=2400)


def series_of(stored: dict | None) -> tuple[tuple[float, int], ...]:
    return UsageState.from_stored(stored).series


def test_the_key_planner_samples_each_batch_and_a_reset_starts_afresh():
    plan = plan_session_batch([(0, "k", SESSION)], KeyTables({}, {}, {}), MONITOR)
    sessions = plan.writes[SESSIONS]
    usage: dict = {}
    for batch in ([(1000.0, 2), (1050.0, 1)], [(1090.0, 4)], [(1700.0, 1)]):
        records = [RequestCount(ts, "acme", "k", count, None) for ts, count in batch]
        plan = plan_key_batch(KeyTables(sessions, usage, {}), records, MONITOR, CONTEXT)
        usage.update(plan.writes[KEY_USAGE])
    assert series_of(usage["k"]) == ((1090.0, 7), (1700.0, 8))

    resetting = Session(org_id="acme", quota_max=100, quota_renewal_rate=2400, reset_quota=True)
    plan = plan_session_batch([(0, "k", resetting)], KeyTables(sessions, usage, {}), MONITOR)
    assert series_of(plan.writes[KEY_USAGE]["k"]) == ()


def test_requests_held_for_a_key_are_sampled_when_its_session_comes():
    records = [RequestCount(ts, "acme", "k", 2, None) for ts in (1000.0, 1500.0)]
    held = plan_key_batch(KeyTables({}, {}, {}), records, MONITOR, CONTEXT).writes[HELD_REQUESTS]
    plan = plan_session_batch([(0, "k", SESSION)], KeyTables({}, {}, held), MONITOR)
    assert series_of(plan.writes[KEY_USAGE]["k"]) == ((1500.0, 4),)


def test_the_org_planners_sample_applied_and_released_usage():
    org = Org(quota_max=100, quota_renewal_rate=2400)
    # Held while the org has no record, then released when it comes.
    usage = plan_partials_batch(
        [(0, Partial("o", [(1000.0, 2), (1200.0, 3)], (0, 1, 0)))],
        OrgTables({}, {}, {}),
        MONITOR,
        CONTEXT,
    ).writes
    plan = plan_orgs_batch(
        [(0, "o", org)], OrgTables({}, usage[ORG_USAGE], usage[HELD_PARTIALS]), MONITOR
    )
    assert series_of(plan.writes[ORG_USAGE]["o"]) == ((1200.0, 5),)
    later = plan_partials_batch(
        [(0, Partial("o", [(1900.0, 1)], (0, 2, 0)))],
        OrgTables(plan.writes[ORGS], plan.writes[ORG_USAGE], {}),
        MONITOR,
        CONTEXT,
    )
    assert series_of(later.writes[ORG_USAGE]["o"]) == ((1200.0, 5), (1900.0, 6))


# --- properties -------------------------------------------------------------------------------

batch = st.lists(st.tuples(st.integers(-50, 400), st.integers(1, 9)), min_size=1, max_size=12)
#: As often more batches than samples as fewer.
batches = st.integers(0, 2 * SAMPLES).flatmap(lambda n: st.lists(batch, min_size=n, max_size=n))


@settings(max_examples=200, deadline=None)
@given(
    batches=batches,
    renewal_rate=st.sampled_from([0, 24, 100, 250]),
    drift=st.sampled_from([0, 5, 40, 3000]),  # (3000: more hours than samples, forever)
    resets=st.sets(st.integers(0, 2 * SAMPLES), max_size=3),
)
def test_the_series_stays_small_ordered_and_ends_at_the_periods_usage(
    batches, renewal_rate, drift, resets
):
    limits = Limits(quota_max=50, renewal_rate=renewal_rate, thresholds=frozenset({50.0, 100.0}))
    state = UsageState()
    clock = itertools.count(0, drift)
    for number, batch in enumerate(batches):
        if number in resets:
            state = reset(state)
        # Event times mostly advance, batch to batch; some records come late.
        now = next(clock)
        records = [(float(now + ts), count) for ts, count in batch]
        applied = apply_records(state, records, limits).state
        state = sample(applied, records)
        # The key planner's shortcut writes the same.
        assert orjson.dumps(sampled_json(applied, records)) == orjson.dumps(state.to_json())
        state = UsageState.from_json(orjson.loads(orjson.dumps(state.to_json())))
        current, series = state.current, state.series
        assert current is not None
        assert 0 < len(series) <= SAMPLES
        times = [at for at, _ in series]
        usages = [usage for _, usage in series]
        assert times == sorted(set(times))
        assert usages == sorted(usages)
        assert all(current.holds(at) for at in times)
        assert usages[-1] == current.usage
