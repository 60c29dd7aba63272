"""pipeline.engine.activity: when each agent last finished a batch, how long it took, and who
is told."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.engine.activity import AgentActivity, AgentSeen

T0 = 1764331200.0


class Told:
    """A listener that keeps what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, float]] = []

    def __call__(self, agent: str, seconds: float, at: float) -> None:
        self.calls.append((agent, seconds, at))


async def test_a_batch_that_returns_is_observed_and_the_listeners_told() -> None:
    activity = AgentActivity()
    told, also = Told(), Told()
    activity.listen(told)
    activity.listen(also)
    handled: list[list[int]] = []

    async def handle(batch: list[int]) -> None:
        handled.append(batch)

    before = time.time()
    await activity.timed("usage", handle)([1, 2, 3])
    after = time.time()

    assert handled == [[1, 2, 3]]
    seen = activity.seen["usage"]
    assert before <= seen.at <= after
    assert 0 <= seen.seconds <= after - before + 0.01
    assert seen.batches == 1
    assert told.calls == also.calls == [("usage", seen.seconds, seen.at)]


async def test_each_batch_counts_and_the_latest_is_kept() -> None:
    activity = AgentActivity()
    told = Told()
    activity.listen(told)

    async def handle(record: str) -> None:
        return None

    usage, delivery = activity.timed("usage", handle), activity.timed("delivery", handle)
    for _ in range(3):
        await usage("r")
    await delivery("r")

    assert activity.seen["usage"].batches == 3
    assert activity.seen["delivery"].batches == 1
    assert [agent for agent, _, _ in told.calls] == ["usage"] * 3 + ["delivery"]
    assert activity.seen["usage"].at == told.calls[2][2]


async def test_a_batch_that_raises_is_no_batch_done() -> None:
    activity = AgentActivity()
    told = Told()
    activity.listen(told)
    fail = True

    async def handle(batch: list[int]) -> None:
        if fail:
            raise RuntimeError("broker gone")

    timed = activity.timed("usage", handle)
    with pytest.raises(RuntimeError, match="broker gone"):
        await timed([1])

    assert activity.seen == {}
    assert told.calls == []
    assert activity.snapshot(T0) == {}

    fail = False
    await timed([1])
    assert activity.seen["usage"].batches == 1
    assert len(told.calls) == 1


def test_a_snapshot_says_how_long_ago_how_long_and_how_many_per_agent_by_name() -> None:
    activity = AgentActivity()
    activity.observe("usage", 0.25, T0)
    activity.observe("delivery", 0.5, T0 + 2)
    activity.observe("usage", 0.125, T0 + 4)

    assert activity.snapshot(T0 + 10) == {
        "delivery": {"ago": 8.0, "seconds": 0.5, "batches": 1},
        "usage": {"ago": 6.0, "seconds": 0.125, "batches": 2},
    }
    assert list(activity.snapshot(T0 + 10)) == ["delivery", "usage"]
    assert activity.seen["usage"] == AgentSeen(T0 + 4, 0.125, 2)


def test_a_batch_that_ended_after_now_was_just_now() -> None:
    # Another clock read, or a clock set back: never "-3 s ago".
    activity = AgentActivity()
    activity.observe("usage", 0.1, T0 + 3)

    assert activity.snapshot(T0)["usage"]["ago"] == 0.0


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(0, 60), st.floats(0, 4e9)),
        min_size=1,
        max_size=10,
    ),
    st.floats(0, 4e9),
)
def test_ago_is_never_negative(batches: list[tuple[str, float, float]], now: float) -> None:
    activity = AgentActivity()
    for agent, seconds, at in batches:
        activity.observe(agent, seconds, at)

    snapshot = activity.snapshot(now)

    assert set(snapshot) == {agent for agent, _, _ in batches}
    for agent, entry in snapshot.items():
        assert entry["ago"] >= 0
        assert math.isclose(entry["ago"], max(0.0, now - activity.seen[agent].at))
        assert entry["batches"] == sum(name == agent for name, _, _ in batches)
