"""When to try a failed delivery again (pure): a jittered schedule, Retry-After, or give up."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TypeAlias

from pipeline.errors import DeliveryError, RetriableDeliveryError

TOO_MANY_REQUESTS = 429

_SVIX_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)


def svix_schedule() -> tuple[float, ...]:
    """Svix's delays, the config default: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h."""
    return _SVIX_SCHEDULE


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait before each retry of a retriable failure."""

    #: Seconds before retry 1, 2, ...; its length is the number of retries.
    schedule: tuple[float, ...] = _SVIX_SCHEDULE
    #: Each delay is scaled by a uniform factor in [1 - jitter, 1 + jitter].
    jitter: float = 0.2
    #: The least wait after a 429 (Svix waits at least a minute).
    min_rate_limit_wait: float = 60
    #: Retry-After is honoured up to this many seconds.
    max_retry_after: float = 3600

    def __post_init__(self) -> None:
        if any(delay < 0 for delay in self.schedule):
            raise ValueError("retry delays must be >= 0")
        # A jitter of 1 or more could make a wait negative.
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if self.min_rate_limit_wait < 0 or self.max_retry_after < 0:
            raise ValueError("rate-limit waits must be >= 0")


@dataclass(frozen=True)
class RetryAt:
    """Attempt the delivery again at ``due``."""

    #: Unix seconds.
    due: float
    #: The number of the next attempt: 2 for the first retry.
    attempt: int


@dataclass(frozen=True)
class GiveUp:
    """Dead-letter the delivery."""

    #: The last error and its status, or why the retries ran out.
    reason: str


Decision: TypeAlias = RetryAt | GiveUp


def decide(
    error: DeliveryError,
    *,
    attempts_made: int,
    policy: RetryPolicy,
    now: float,
    rng: random.Random,
) -> Decision:
    """Retry or give up after attempt number ``attempts_made`` failed with ``error``."""
    if attempts_made < 1:
        raise ValueError("attempts_made counts the failed attempt, so it is >= 1")
    # Only errors that say they are retriable get another attempt; a bare DeliveryError does not.
    if not isinstance(error, RetriableDeliveryError):
        return GiveUp(_describe(error))
    if attempts_made > len(policy.schedule):
        return GiveUp(f"retries exhausted after {attempts_made} attempts: {_describe(error)}")
    base = policy.schedule[attempts_made - 1]
    # Jitter spreads retries of a failed batch so they do not hit the endpoint all at once.
    wait = base * rng.uniform(1 - policy.jitter, 1 + policy.jitter)
    if error.status == TOO_MANY_REQUESTS:
        wait = max(wait, policy.min_rate_limit_wait)
    if error.retry_after is not None:
        # Retry-After may delay us, within bounds, but never bring a retry forward.
        wait = max(wait, min(error.retry_after, policy.max_retry_after))
    return RetryAt(due=now + wait, attempt=attempts_made + 1)


def _describe(error: DeliveryError) -> str:
    if error.status is None:
        return str(error)
    return f"{error} (status {error.status})"
