"""Quota periods and threshold crossing (pipeline.usage.quota), against a small reference model."""

from __future__ import annotations

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.usage.quota import NEVER, Limits, Period, UsageState, apply_records, reached, reset


def limits(quota_max: float = 100, renewal_rate: float = 60, thresholds=(50, 80)) -> Limits:
    return Limits(quota_max=quota_max, renewal_rate=renewal_rate, thresholds=frozenset(thresholds))


def fired(records, lim, state=None):
    applied = apply_records(state or UsageState(), records, lim)
    return [(c.threshold, c.usage, c.period_start) for c in applied.crossings], applied


def test_first_record_opens_a_period_of_the_renewal_rate():
    _, applied = fired([(1000.5, 1)], limits(renewal_rate=60))
    assert applied.state.current == Period(start=1000.5, end=1060.5, usage=1)
    assert applied.state.previous is None


def test_threshold_fires_when_usage_first_reaches_it():
    crossings, _ = fired([(0, 49), (1, 1), (2, 1)], limits(thresholds=[50]))
    assert crossings == [(50, 50, 0)]


def test_one_record_jumping_several_thresholds_fires_each_ascending():
    crossings, _ = fired([(0, 95)], limits(thresholds=[80, 50, 90, 100]))
    assert [threshold for threshold, _, _ in crossings] == [50, 80, 90]


def test_each_threshold_fires_once_per_period_and_again_after_renewal():
    records = [(0, 60), (10, 30), (59.9, 30), (60, 60), (61, 60)]
    crossings, applied = fired(records, limits(renewal_rate=60, thresholds=[50, 100]))
    assert crossings == [(50, 60, 0), (100, 120, 0), (50, 60, 60), (100, 120, 60)]
    assert applied.state.previous == Period(0, 60, 120, frozenset({50, 100}))


def test_next_period_opens_at_the_first_record_after_the_end_not_at_the_end():
    _, applied = fired([(0, 1), (200, 1)], limits(renewal_rate=60))
    assert applied.state.current.start == 200
    assert applied.state.current.end == 260


def test_unlimited_quota_counts_but_never_fires():
    crossings, applied = fired([(0, 10**9)], limits(quota_max=0))
    assert crossings == []
    assert applied.state.current.usage == 10**9


def test_never_renewing_quota_is_one_period_forever():
    crossings, applied = fired([(0, 40), (10**9, 60)], limits(renewal_rate=0, thresholds=[100]))
    assert crossings == [(100, 100, 0)]
    assert applied.state.current.end == NEVER
    assert applied.state.previous is None


def test_late_record_counts_in_the_previous_period_and_fires_only_there():
    state = fired([(0, 40), (70, 10)], limits(renewal_rate=60, thresholds=[50]))[1].state
    crossings, applied = fired([(30, 20)], limits(renewal_rate=60, thresholds=[50]), state)
    assert crossings == [(50, 60, 0)]
    assert applied.state.current.usage == 10
    assert applied.state.current.fired == frozenset()


def test_record_older_than_every_kept_period_is_dropped_and_reported():
    state = fired([(0, 1), (100, 1), (200, 1)], limits(renewal_rate=60))[1].state
    crossings, applied = fired([(50, 7)], limits(renewal_rate=60), state)
    assert crossings == []
    assert applied.dropped == 7
    assert applied.state == state


def test_record_between_the_kept_periods_counts_in_the_current_one_without_firing():
    state = fired([(0, 1), (100, 1), (200, 1)], limits(renewal_rate=60))[1].state
    crossings, applied = fired([(170, 80)], limits(renewal_rate=60, thresholds=[50]), state)
    assert crossings == []
    assert applied.dropped == 0
    assert applied.state.current.usage == 81
    # The next on-time record fires what the late one reached.
    crossings, _ = fired([(201, 1)], limits(renewal_rate=60, thresholds=[50]), applied.state)
    assert crossings == [(50, 82, 200)]


def test_first_period_takes_records_that_arrive_after_it_opened_but_happened_before():
    crossings, applied = fired([(10, 1), (5, 60)], limits(renewal_rate=0, thresholds=[50]))
    assert crossings == []
    assert applied.state.current == Period(10, NEVER, 61)


def test_thresholds_added_mid_period_fire_on_the_next_record_when_already_reached():
    state = fired([(0, 70)], limits(thresholds=[80]))[1].state
    crossings, _ = fired([(1, 1)], limits(thresholds=[50, 80]), state)
    assert crossings == [(50, 71, 0)]


def test_fractional_threshold_compares_exactly():
    assert reached(Period(0, 60, usage=824), limits(quota_max=1000, thresholds=[82.5])) == []
    assert reached(Period(0, 60, usage=825), limits(quota_max=1000, thresholds=[82.5])) == [82.5]


def test_reset_closes_the_current_period():
    state = fired([(0, 60)], limits(thresholds=[50]))[1].state
    after = reset(state)
    assert after.current is None
    assert after.previous == state.current
    crossings, _ = fired([(5, 50)], limits(thresholds=[50]), after)
    assert crossings == [(50, 50, 5)]
    assert reset(UsageState()) == UsageState()


def test_state_round_trips_through_json():
    state = UsageState(Period(10.5, NEVER, 7, frozenset({50.0, 82.5})), Period(0, 10.5, 3))
    assert UsageState.from_json(state.to_json()) == state


# --- properties -------------------------------------------------------------------------------


def reference_crossings(records, lim):
    """In-order traffic, computed another way: cumulative sums per period, then per threshold
    the first record whose running total reaches it."""
    periods: list[list[tuple[float, int]]] = []
    end = -math.inf
    for ts, count in records:
        if ts >= end:
            periods.append([])
            end = ts + lim.renewal_rate if lim.renewal_rate > 0 else math.inf
        periods[-1].append((ts, count))
    expected = []
    for period in periods:
        start = period[0][0]
        totals = list(itertools.accumulate(count for _, count in period))
        hits = []
        for threshold in lim.thresholds:
            if lim.quota_max <= 0:
                continue
            first = next(
                (i for i, total in enumerate(totals) if total * 100 >= threshold * lim.quota_max),
                None,
            )
            if first is not None:
                hits.append((first, threshold, totals[first], start))
        expected.extend((t, usage, start) for _, t, usage, start in sorted(hits))
    return expected, periods


in_order_records = st.lists(
    st.tuples(st.integers(0, 30), st.integers(1, 40)), min_size=1, max_size=60
).map(
    lambda gaps: list(
        zip(itertools.accumulate(g for g, _ in gaps), (c for _, c in gaps), strict=True)
    )
)
limits_strategy = st.builds(
    Limits,
    quota_max=st.sampled_from([0, 1, 7, 100, 250.5]),
    renewal_rate=st.sampled_from([0, 10, 45, 100]),
    thresholds=st.frozensets(
        st.sampled_from([0.5, 10, 33.3, 50, 80, 82.5, 99.99, 100]), max_size=5
    ),
)


@settings(max_examples=300, deadline=None)
@given(records=in_order_records, lim=limits_strategy)
def test_in_order_traffic_matches_the_reference_model(records, lim):
    crossings, applied = fired(records, lim)
    expected, periods = reference_crossings(records, lim)
    assert crossings == expected
    assert applied.state.current.usage == sum(count for _, count in periods[-1])
    assert applied.dropped == 0


@settings(max_examples=300, deadline=None)
@given(
    records=st.lists(st.tuples(st.integers(0, 300), st.integers(1, 40)), max_size=60),
    lim=limits_strategy,
    cuts=st.lists(st.integers(0, 60), max_size=8),
)
def test_batching_never_changes_the_outcome(records, lim, cuts):
    whole_crossings, whole = fired(records, lim)
    state, crossings, dropped = UsageState(), [], 0
    bounds = sorted({0, len(records), *(c for c in cuts if c <= len(records))})
    for lo, hi in itertools.pairwise(bounds):
        applied = apply_records(state, records[lo:hi], lim)
        state, dropped = applied.state, dropped + applied.dropped
        crossings.extend((c.threshold, c.usage, c.period_start) for c in applied.crossings)
    assert crossings == whole_crossings
    assert state == whole.state
    assert dropped == whole.dropped


@settings(max_examples=300, deadline=None)
@given(
    records=st.lists(st.tuples(st.integers(0, 300), st.integers(1, 40)), max_size=60),
    lim=limits_strategy,
)
def test_out_of_order_traffic_fires_each_threshold_at_most_once_per_period(records, lim):
    crossings, applied = fired(records, lim)
    keys = [(start, threshold) for threshold, _, start in crossings]
    assert len(keys) == len(set(keys))
    kept = [p for p in (applied.state.current, applied.state.previous) if p is not None]
    counted = sum(p.usage for p in kept)
    assert counted + applied.dropped <= sum(count for _, count in records)
    for threshold, usage, _ in crossings:
        assert usage * 100 >= threshold * lim.quota_max > 0
