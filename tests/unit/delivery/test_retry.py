"""pipeline.delivery.retry: when a failed delivery is tried again, and when it is dead-lettered."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.config import DeliverySettings
from pipeline.delivery.retry import GiveUp, RetryAt, RetryPolicy, decide, svix_schedule
from pipeline.errors import DeliveryError, PermanentDeliveryError, RetriableDeliveryError

NOW = 1764331200.0
# Float sums near NOW are exact to about 2e-7 s.
SLACK = 1e-6
POLICY = RetryPolicy(schedule=svix_schedule())


def retry_in(
    error: DeliveryError,
    *,
    attempts_made: int = 1,
    policy: RetryPolicy = POLICY,
    seed: int = 0,
) -> float:
    """Seconds until the retry ``decide`` schedules (failing the test if it gives up)."""
    decision = decide(
        error, attempts_made=attempts_made, policy=policy, now=NOW, rng=random.Random(seed)
    )
    assert isinstance(decision, RetryAt), decision
    assert decision.attempt == attempts_made + 1
    return decision.due - NOW


def give_up_reason(
    error: DeliveryError, *, attempts_made: int = 1, policy: RetryPolicy = POLICY
) -> str:
    decision = decide(
        error, attempts_made=attempts_made, policy=policy, now=NOW, rng=random.Random(0)
    )
    assert isinstance(decision, GiveUp), decision
    return decision.reason


def server_error(*, status: int = 500, retry_after: float | None = None) -> RetriableDeliveryError:
    return RetriableDeliveryError(
        f"endpoint answered {status}", status=status, retry_after=retry_after
    )


def test_svix_schedule_is_the_config_default() -> None:
    assert svix_schedule() == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert svix_schedule() == DeliverySettings().retry_schedule
    assert RetryPolicy().schedule == svix_schedule()


@pytest.mark.parametrize("seed", range(20))
def test_500_on_attempt_1_retries_in_5_seconds_with_jitter(seed: int) -> None:
    assert 4.0 <= retry_in(server_error(), seed=seed) <= 6.0


def test_jitter_spreads_retries() -> None:
    waits = {retry_in(server_error(), seed=seed) for seed in range(20)}

    assert len(waits) > 1


def test_same_seed_same_decision() -> None:
    assert retry_in(server_error(), seed=7) == retry_in(server_error(), seed=7)


def test_no_jitter_waits_exactly_the_schedule() -> None:
    policy = RetryPolicy(schedule=(5, 300), jitter=0)

    assert retry_in(server_error(), policy=policy) == pytest.approx(5, abs=SLACK)
    assert retry_in(server_error(), attempts_made=2, policy=policy) == pytest.approx(300, abs=SLACK)


def test_the_schedule_is_walked_in_order_then_exhausted() -> None:
    schedule = svix_schedule()
    for attempts_made, base in enumerate(schedule, start=1):
        wait = retry_in(server_error(status=503), attempts_made=attempts_made)
        assert base * 0.8 - SLACK <= wait <= base * 1.2 + SLACK, (attempts_made, wait)

    reason = give_up_reason(server_error(status=503), attempts_made=len(schedule) + 1)

    assert len(schedule) + 1 == 8
    assert reason.startswith("retries exhausted after 8 attempts: ")
    assert "endpoint answered 503" in reason
    assert "503" in reason


@pytest.mark.parametrize("status", [400, 410])
def test_permanent_status_gives_up_at_once_with_the_status(status: int) -> None:
    error = PermanentDeliveryError(f"endpoint answered {status}", status=status)

    reason = give_up_reason(error)

    assert str(status) in reason
    assert "exhausted" not in reason


def test_permanent_error_without_status_gives_its_message() -> None:
    error = PermanentDeliveryError("target resolves to a private address")

    assert give_up_reason(error) == "target resolves to a private address"


def test_a_bare_delivery_error_is_not_retried() -> None:
    assert give_up_reason(DeliveryError("unexpected", status=None)) == "unexpected"


def test_429_without_retry_after_waits_at_least_a_minute() -> None:
    for seed in range(20):
        assert retry_in(server_error(status=429), seed=seed) >= 60


def test_429_on_a_later_attempt_keeps_the_longer_schedule() -> None:
    wait = retry_in(server_error(status=429), attempts_made=2)

    assert 240 - SLACK <= wait <= 360 + SLACK


def test_retry_after_120_is_honoured() -> None:
    assert retry_in(server_error(status=429, retry_after=120)) == pytest.approx(120, abs=SLACK)
    assert retry_in(server_error(status=503, retry_after=120)) == pytest.approx(120, abs=SLACK)


def test_retry_after_of_10_days_is_clamped_to_max_retry_after() -> None:
    error = server_error(status=503, retry_after=10 * 86400)

    assert retry_in(error) == pytest.approx(POLICY.max_retry_after, abs=SLACK)
    policy = RetryPolicy(schedule=(5,), max_retry_after=600)
    assert retry_in(error, policy=policy) == pytest.approx(600, abs=SLACK)


def test_retry_after_never_brings_a_retry_forward() -> None:
    wait = retry_in(server_error(status=503, retry_after=1), attempts_made=2)

    assert 240 - SLACK <= wait <= 360 + SLACK


def test_zero_length_schedule_gives_up_at_once() -> None:
    reason = give_up_reason(server_error(), policy=RetryPolicy(schedule=()))

    assert reason.startswith("retries exhausted after 1 attempts: ")


def test_attempts_made_counts_the_failed_attempt() -> None:
    with pytest.raises(ValueError, match="attempts_made"):
        decide(server_error(), attempts_made=0, policy=POLICY, now=NOW, rng=random.Random(0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schedule": (5, -1)}, "retry delays"),
        ({"jitter": -0.1}, "jitter"),
        ({"jitter": 1.0}, "jitter"),
        ({"min_rate_limit_wait": -1}, "rate-limit"),
        ({"max_retry_after": -1}, "rate-limit"),
    ],
)
def test_unusable_policies_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)


@given(
    attempts_made=st.integers(min_value=1, max_value=len(svix_schedule())),
    seed=st.integers(),
    status=st.sampled_from([None, 408, 429, 500, 502, 503, 504]),
    retry_after=st.none() | st.floats(min_value=0, max_value=30 * 86400),
    jitter=st.floats(min_value=0, max_value=0.9),
    now=st.floats(min_value=0, max_value=2e9),
)
def test_the_wait_stays_within_its_bounds(
    attempts_made: int,
    seed: int,
    status: int | None,
    retry_after: float | None,
    jitter: float,
    now: float,
) -> None:
    policy = RetryPolicy(schedule=svix_schedule(), jitter=jitter)
    error = RetriableDeliveryError("failed", status=status, retry_after=retry_after)

    decision = decide(
        error, attempts_made=attempts_made, policy=policy, now=now, rng=random.Random(seed)
    )

    assert isinstance(decision, RetryAt)
    assert decision.attempt == attempts_made + 1
    base = policy.schedule[attempts_made - 1]
    upper = base * (1 + jitter)
    if status == 429:
        upper = max(upper, policy.min_rate_limit_wait)
    if retry_after is not None:
        upper = max(upper, min(retry_after, policy.max_retry_after))
    wait = decision.due - now
    assert base * (1 - jitter) - SLACK <= wait <= upper + SLACK


@given(
    attempts_made=st.integers(min_value=1, max_value=100),
    seed=st.integers(),
    status=st.none() | st.integers(min_value=300, max_value=499),
)
def test_a_permanent_error_never_retries(attempts_made: int, seed: int, status: int | None) -> None:
    error = PermanentDeliveryError("refused", status=status)

    decision = decide(
        error, attempts_made=attempts_made, policy=POLICY, now=NOW, rng=random.Random(seed)
    )

    assert isinstance(decision, GiveUp)
    assert "exhausted" not in decision.reason
