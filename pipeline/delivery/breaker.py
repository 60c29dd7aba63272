"""Per-endpoint circuit breaker (pure): pause deliveries to an endpoint that keeps failing."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, TypeAlias

BreakerState: TypeAlias = Literal["closed", "open", "half_open"]
#: One attempt's outcome: (unix seconds, succeeded).
Outcome: TypeAlias = tuple[float, bool]


@dataclass(frozen=True)
class BreakerPolicy:
    """When a breaker opens and for how long (Convoy's defaults)."""

    #: Seconds of outcomes that count.
    window: float = 300
    #: Fewer outcomes than this in the window never open the breaker.
    min_requests: int = 10
    #: The share of failures in the window that opens the breaker.
    failure_ratio: float = 0.7
    #: Seconds the breaker stays open the first time.
    open_for: float = 30
    #: Each failed probe doubles the open time, up to this.
    max_open_for: float = 600
    #: The most recent outcomes kept, so a busy endpoint costs a bounded amount per record.
    max_outcomes: int = 100

    def __post_init__(self) -> None:
        if self.window <= 0 or self.min_requests < 1 or not 0 < self.failure_ratio <= 1:
            raise ValueError("window > 0, min_requests >= 1 and 0 < failure_ratio <= 1 required")
        if not 0 < self.open_for <= self.max_open_for:
            raise ValueError("0 < open_for <= max_open_for required")
        if self.max_outcomes < self.min_requests:
            raise ValueError("max_outcomes must be >= min_requests")


@dataclass(frozen=True)
class EndpointHealth:
    """An endpoint's breaker: an immutable value; every change returns a new one.

    closed      requests go; outcomes in the last ``window`` seconds are kept, and once there
                are ``min_requests`` of them with ``failure_ratio`` failures (Convoy: >= 70% of
                >= 10 in 5 min) the breaker opens.
    open        requests are refused until ``opened_at + open_for``; then one probe may go.
    half_open   the probe is in flight and everything else is refused. Its success closes the
                breaker with a clean history; its failure reopens it for twice as long, up to
                ``max_open_for``. A probe whose outcome never arrives is replaced after
                ``open_for``, so a lost probe cannot pause the endpoint forever.

    Take the probe with ``admit`` (``allows`` only asks) and report every outcome to ``record``.
    """

    policy: BreakerPolicy = BreakerPolicy()
    state: BreakerState = "closed"
    #: Outcomes in the window, oldest first (closed only).
    outcomes: tuple[Outcome, ...] = ()
    #: How many of ``outcomes`` failed.
    failures: int = 0
    #: When the breaker last opened (open and half_open).
    opened_at: float | None = None
    #: How long this opening lasts (open and half_open).
    open_for: float = 0.0
    #: When the probe in flight was admitted (half_open only).
    probe_at: float | None = None

    def allows(self, now: float) -> bool:
        """Whether a request may go now, without taking the probe."""
        return self.state == "closed" or now >= self._next_probe_at()

    def admit(self, now: float) -> tuple[bool, EndpointHealth]:
        """Whether a request may go now, and the breaker after letting it (the probe) go."""
        if not self.allows(now):
            return False, self
        if self.state == "closed":
            return True, self
        return True, replace(self, state="half_open", probe_at=now)

    def retry_at(self, now: float) -> float | None:
        """None when a request may go now; otherwise when the next probe may go."""
        return None if self.allows(now) else self._next_probe_at()

    def record(self, ok: bool, now: float) -> EndpointHealth:
        """The breaker after one attempt's outcome (a probe's, while not closed)."""
        if self.state == "closed":
            return self._counted(ok, now)
        # An outcome before the probe was due is a request that started before the breaker
        # opened: it says nothing new. After that it can only be the probe's, even if the caller
        # asked allows() rather than admit(), so it still decides.
        if self.state == "open" and now < self._next_probe_at():
            return self
        if ok:
            return EndpointHealth(policy=self.policy)
        return self._opened(now, min(self.open_for * 2, self.policy.max_open_for))

    def _counted(self, ok: bool, now: float) -> EndpointHealth:
        # Called on every delivery: trims only the outcomes that leave the window (oldest
        # first) and keeps the failure count alongside, instead of rescanning the whole window.
        horizon = now - self.policy.window
        outcomes = self.outcomes
        stale = 0
        while stale < len(outcomes) and outcomes[stale][0] <= horizon:
            stale += 1
        stale = max(stale, len(outcomes) + 1 - self.policy.max_outcomes)
        failures = self.failures - sum(1 for _, succeeded in outcomes[:stale] if not succeeded)
        outcomes = (*outcomes[stale:], (now, ok))
        failures += not ok
        if (
            len(outcomes) >= self.policy.min_requests
            and failures / len(outcomes) >= self.policy.failure_ratio
        ):
            return self._opened(now, self.policy.open_for)
        return EndpointHealth(policy=self.policy, outcomes=outcomes, failures=failures)

    def _opened(self, now: float, open_for: float) -> EndpointHealth:
        # History is dropped: after the pause the endpoint is judged afresh.
        return EndpointHealth(policy=self.policy, state="open", opened_at=now, open_for=open_for)

    def _next_probe_at(self) -> float:
        started = self.probe_at if self.state == "half_open" else self.opened_at
        assert started is not None, f"a {self.state} breaker has a start time"
        return started + self.open_for
