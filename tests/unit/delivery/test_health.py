"""pipeline.delivery.breaker: an endpoint's circuit breaker opens, probes and closes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.delivery.breaker import BreakerPolicy, EndpointHealth

T0 = 1764331200.0
POLICY = BreakerPolicy()


def recorded(
    oks: Iterable[bool],
    *,
    start: float = T0,
    step: float = 1.0,
    health: EndpointHealth | None = None,
) -> EndpointHealth:
    """``health`` (a fresh breaker by default) after one outcome every ``step`` seconds."""
    health = health or EndpointHealth(policy=POLICY)
    for i, ok in enumerate(oks):
        health = health.record(ok, start + i * step)
    return health


def opened_at(when: float) -> EndpointHealth:
    """A breaker that opened at ``when`` on its tenth failure in ten seconds."""
    health = recorded([False] * 10, start=when - 9)
    assert health.state == "open"
    assert health.opened_at == when
    return health


def probing(health: EndpointHealth, now: float) -> EndpointHealth:
    allowed, health = health.admit(now)
    assert allowed
    assert health.state == "half_open"
    return health


def test_a_new_breaker_is_closed() -> None:
    health = EndpointHealth()

    assert health.state == "closed"
    assert health.allows(T0)
    assert health.admit(T0) == (True, health)
    assert health.retry_at(T0) is None


def test_9_failures_of_9_keep_it_closed() -> None:
    health = recorded([False] * 9)

    assert health.state == "closed"
    assert health.allows(T0 + 9)
    assert len(health.outcomes) == 9


@pytest.mark.parametrize(
    "oks",
    [
        [False] * 7 + [True] * 3,
        [True] * 3 + [False] * 7,
        [False, True, False, False, True, False, False, True, False, False],
    ],
)
def test_7_failures_and_3_successes_open_it(oks: list[bool]) -> None:
    health = recorded(oks)

    assert health.state == "open"
    assert not health.allows(T0 + 9)
    assert health.opened_at == T0 + 9
    assert health.open_for == POLICY.open_for


def test_6_failures_and_4_successes_keep_it_closed() -> None:
    health = recorded([False] * 6 + [True] * 4)

    assert health.state == "closed"
    assert health.allows(T0 + 9)


def test_outcomes_older_than_the_window_do_not_count() -> None:
    old = recorded([False] * 5)
    now = T0 + 4 + POLICY.window + 1

    health = recorded([False] * 5, start=now, health=old)

    assert health.state == "closed"
    assert [when for when, _ in health.outcomes] == [now + i for i in range(5)]


def test_outcomes_inside_the_window_count() -> None:
    early = recorded([False] * 5)

    health = recorded([False] * 5, start=T0 + POLICY.window - 10, health=early)

    assert health.state == "open"


def test_the_outcomes_kept_are_bounded() -> None:
    health = recorded([True] * 1000, step=0.01)

    assert len(health.outcomes) == POLICY.max_outcomes
    assert health.outcomes[-1] == (T0 + 999 * 0.01, True)


def test_an_open_breaker_refuses_until_open_for_has_passed() -> None:
    health = opened_at(T0)

    assert not health.allows(T0 + POLICY.open_for - 0.001)
    assert health.admit(T0 + POLICY.open_for - 0.001) == (False, health)
    assert health.retry_at(T0 + 1) == T0 + POLICY.open_for
    assert health.allows(T0 + POLICY.open_for)
    assert health.retry_at(T0 + POLICY.open_for) is None


def test_then_it_allows_exactly_one_probe() -> None:
    now = T0 + POLICY.open_for
    health = probing(opened_at(T0), now)

    assert not health.allows(now)
    assert health.admit(now) == (False, health)
    assert not health.allows(now + 10)
    # Until the probe's outcome arrives, callers are told to come back when it would be replaced.
    assert health.retry_at(now) == now + POLICY.open_for


def test_a_successful_probe_closes_it_with_a_clean_history() -> None:
    now = T0 + POLICY.open_for
    health = probing(opened_at(T0), now).record(True, now + 1)

    assert health == EndpointHealth(policy=POLICY)
    assert health.allows(now + 1)
    assert health.retry_at(now + 1) is None
    # A clean history: nine more failures are not yet enough to open it again.
    assert recorded([False] * 9, start=now + 2, health=health).state == "closed"


def test_a_failed_probe_doubles_open_for_up_to_max_open_for() -> None:
    health = opened_at(T0)
    open_fors = []
    for _ in range(7):
        assert health.opened_at is not None
        probe_at = health.opened_at + health.open_for
        health = probing(health, probe_at).record(False, probe_at + 1)
        assert health.state == "open"
        assert health.opened_at == probe_at + 1
        assert health.retry_at(probe_at + 1) == probe_at + 1 + health.open_for
        open_fors.append(health.open_for)

    assert open_fors == [60, 120, 240, 480, 600, 600, 600]


def test_open_for_starts_over_after_the_breaker_closes() -> None:
    health = opened_at(T0)
    health = probing(health, T0 + 30).record(False, T0 + 31)
    assert health.open_for == 60
    health = probing(health, T0 + 91).record(True, T0 + 92)

    health = recorded([False] * 10, start=T0 + 100, health=health)

    assert health.state == "open"
    assert health.open_for == POLICY.open_for


def test_outcomes_of_requests_sent_before_it_opened_are_ignored() -> None:
    health = opened_at(T0)

    assert health.record(True, T0 + 1) == health
    assert health.record(False, T0 + 2) == health


def test_an_outcome_after_the_pause_decides_even_without_admit() -> None:
    # A caller that only asked allows() still lets the breaker close or reopen.
    health = opened_at(T0)
    now = T0 + POLICY.open_for

    assert health.record(True, now).state == "closed"
    failed = health.record(False, now)
    assert failed.state == "open"
    assert failed.open_for == 2 * POLICY.open_for


def test_a_lost_probe_is_replaced_after_open_for() -> None:
    now = T0 + POLICY.open_for
    health = probing(opened_at(T0), now)

    assert not health.allows(now + POLICY.open_for - 0.001)
    replaced = probing(health, now + POLICY.open_for)

    assert replaced.probe_at == now + POLICY.open_for
    assert not replaced.allows(now + POLICY.open_for)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window": 0},
        {"min_requests": 0},
        {"failure_ratio": 0},
        {"failure_ratio": 1.5},
        {"open_for": 0},
        {"open_for": 700},
        {"max_outcomes": 5},
    ],
)
def test_unusable_policies_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"required|must"):
        BreakerPolicy(**kwargs)


@given(
    oks=st.lists(st.booleans(), max_size=POLICY.min_requests - 1),
    steps=st.lists(st.floats(min_value=0, max_value=1000), min_size=POLICY.min_requests),
)
def test_fewer_than_min_requests_outcomes_always_allow(oks: list[bool], steps: list[float]) -> None:
    health = EndpointHealth(policy=POLICY)
    now = T0
    for ok, step in zip(oks, steps, strict=False):
        now += step
        health = health.record(ok, now)
        assert health.allows(now)
        assert health.retry_at(now) is None

    assert health.state == "closed"


# One step of a caller: wait some seconds, then ask (admit) or report an outcome (record).
step_strategy = st.tuples(
    st.floats(min_value=0, max_value=700), st.sampled_from(["admit", "ok", "fail"])
)


@given(steps=st.lists(step_strategy, max_size=200))
def test_any_sequence_keeps_the_breaker_consistent(steps: list[tuple[float, str]]) -> None:
    health = EndpointHealth(policy=POLICY)
    now = T0
    for wait, action in steps:
        now += wait
        if action == "admit":
            allowed, after = health.admit(now)
            assert allowed == health.allows(now)
            assert not after.allows(now) or after.state == "closed"
            health = after
        else:
            health = health.record(action == "ok", now)

        assert (health.retry_at(now) is None) == health.allows(now)
        if health.state == "closed":
            assert health.opened_at is None
            assert len(health.outcomes) <= POLICY.max_outcomes
            # Pruning happens on record, so the window is measured from the latest outcome.
            if health.outcomes:
                latest = health.outcomes[-1][0]
                assert all(when > latest - POLICY.window for when, _ in health.outcomes)
        else:
            assert not health.outcomes
            assert POLICY.open_for <= health.open_for <= POLICY.max_open_for
            retry_at = health.retry_at(now)
            assert retry_at is None or now < retry_at <= now + POLICY.max_open_for


@given(
    st.lists(
        st.tuples(st.floats(min_value=0, max_value=200), st.booleans()), min_size=1, max_size=300
    )
)
def test_a_closed_breaker_judges_exactly_the_outcomes_in_its_window(
    steps: list[tuple[float, bool]],
) -> None:
    """Against the plain definition: the last ``max_outcomes`` outcomes of the last ``window``
    seconds, and the breaker opens when enough of them are failures."""
    health, now, history = EndpointHealth(policy=POLICY), T0, []
    for gap, ok in steps:
        now += gap
        health = health.record(ok, now)
        history.append((now, ok))
        window = [o for o in history if o[0] > now - POLICY.window][-POLICY.max_outcomes :]
        failures = sum(1 for _, succeeded in window if not succeeded)
        if len(window) >= POLICY.min_requests and failures / len(window) >= POLICY.failure_ratio:
            assert health.state == "open"
            return
        assert health.outcomes == tuple(window)
        assert health.failures == failures
