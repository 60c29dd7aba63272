"""pipeline.usage.held: requests held per second of event time, within their bounds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.usage.held import (
    Held,
    HeldLedger,
    HoldPolicy,
    HoldTally,
    PartitionHeld,
    Room,
    hold,
    sweep,
)

POLICY = HoldPolicy(seconds=100, max_subjects=2, max_buckets=3)


def held_now(entry, counts, *, now=1000.0, room=None, tally=None, policy=POLICY):
    return hold(
        entry,
        counts,
        now=now,
        partition=3,
        policy=policy,
        room=room if room is not None else Room(5),
        tally=tally if tally is not None else HoldTally(),
    )


def test_counts_go_to_per_second_buckets_that_keep_their_earliest_time():
    tally = HoldTally()
    entry = held_now(None, [(10.7, 1), (10.2, 2), (11.0, 4)], tally=tally)

    assert entry is not None
    assert entry.counts() == [(10.2, 3), (11.0, 4)]
    assert (entry.requests, entry.since, entry.partition) == (7, 1000.0, 3)
    assert (tally.subjects, tally.requests, tally.dropped) == (1, 7, {})


def test_a_second_hold_adds_to_the_first_without_a_new_subject():
    first = held_now(None, [(10.0, 1)])
    tally = HoldTally()
    entry = held_now(first, [(9.5, 2), (12.0, 1)], now=1050.0, tally=tally)

    assert entry is not None
    assert entry.counts() == [(9.5, 2), (10.0, 1), (12.0, 1)]
    assert entry.since == 1000.0  # the first request's hold
    assert (tally.subjects, tally.requests) == (0, 3)


def test_an_expired_hold_is_dropped_and_a_new_one_starts():
    old = held_now(None, [(10.0, 4)])
    tally = HoldTally()
    entry = held_now(old, [(500.0, 1)], now=1101.0, tally=tally)

    assert entry is not None
    assert (entry.counts(), entry.since) == ([(500.0, 1)], 1101.0)
    assert tally.dropped == {"expired": 4}
    assert (tally.subjects, tally.requests) == (0, -3)


def test_no_room_drops_a_new_subject():
    tally = HoldTally()
    assert held_now(None, [(1.0, 2), (2.0, 3)], room=Room(0), tally=tally) is None
    assert tally.dropped == {"full": 5}


def test_too_many_buckets_merge_into_coarser_ones_keeping_their_earliest_times():
    tally = HoldTally()
    counts = [(1.5, 1), (2.0, 1), (3.0, 1), (14.0, 7), (1.2, 2)]
    entry = held_now(None, counts, tally=tally)  # 3 buckets at most: 14.0 makes a 4th

    assert entry is not None
    assert entry.grain == 10.0
    assert entry.counts() == [(1.2, 5), (14.0, 7)]  # [0, 10) and [10, 20)
    assert entry.requests == 12
    assert tally.dropped == {}
    assert Held.from_stored(entry.to_json()) == entry


def test_buckets_coarsen_as_far_as_they_must():
    entry = held_now(None, [(day * 86_400.0, 1) for day in range(10)])

    assert entry is not None
    assert entry.grain == 86_400.0  # a bucket a day: more than 3 of them, the last grain
    assert len(entry.counts()) == 10
    assert entry.requests == 10


def test_room_is_taken_once_per_new_subject():
    room = Room(1)
    assert room.take()
    assert not room.take()
    assert room.free == 0


@settings(max_examples=100, deadline=None)
@given(
    counts=st.lists(st.tuples(st.floats(0, 50, allow_nan=False), st.integers(1, 1000)), min_size=1)
)
def test_what_is_held_or_dropped_adds_up_to_what_came(counts):
    tally = HoldTally()
    entry = held_now(None, counts, tally=tally)
    held = entry.requests if entry is not None else 0
    assert held + sum(tally.dropped.values()) == sum(count for _, count in counts)
    assert entry is None or len(entry.buckets) <= POLICY.max_buckets or entry.grain == 86_400
    assert entry is None or sum(c for _, c in entry.counts()) == entry.requests


def test_stored_form_round_trips():
    entry = held_now(None, [(10.5, 2), (11.0, 1)])
    assert entry is not None
    entry.org_id = "org9"

    assert Held.from_stored(entry.to_json()) == entry
    assert Held.from_stored(None) is None


def test_sweep_drops_expired_subjects_and_counts_the_rest():
    fresh = held_now(None, [(1.0, 2)], now=1000.0)
    stale = held_now(None, [(1.0, 5)], now=800.0)
    assert fresh is not None
    assert stale is not None
    tally = HoldTally()

    expired, counted = sweep(
        [("a", fresh.to_json()), ("b", stale.to_json())],
        now=1000.0,
        epoch=7,
        policy=POLICY,
        tally=tally,
    )

    assert expired == ["b"]
    assert counted == PartitionHeld(subjects=1, requests=2, swept_at=1000.0, epoch=7)
    assert tally.dropped == {"expired": 5}


def test_ledger_sweeps_per_epoch_and_interval_and_keeps_counts():
    ledger = HeldLedger(sweep_every=60)
    assert ledger.needs_sweep(0, now=0.0, epoch=1)
    ledger.swept(0, PartitionHeld(subjects=1, requests=4, swept_at=100.0, epoch=1))
    assert not ledger.needs_sweep(0, now=159.0, epoch=1)
    assert ledger.needs_sweep(0, now=160.0, epoch=1)
    assert ledger.needs_sweep(0, now=101.0, epoch=2)  # a rebalance since

    ledger.add(0, HoldTally(subjects=1, requests=3))
    ledger.add(5, HoldTally(subjects=1, requests=3))  # not counted yet: ignored
    assert ledger.totals() == (2, 7)
    assert ledger.room(0, POLICY).free == 0
    assert ledger.room(5, POLICY).free == 2
