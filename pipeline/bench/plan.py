"""`quota-pipeline bench`, pure part: the load it produces, percentiles and target verdicts.

No I/O and no clock: the bench modules turn these plans into Kafka records and timings.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, TypeAlias

#: The share of the records the heavy organisation sends in the skewed run (issue 7: 90%).
HEAVY_SHARE = 0.9
#: Each record counts 1 to this many requests: gateways pre-aggregate (RequestCount.count).
COUNT_MAX = 10
#: In the latency run, one record in this many is a threshold-crossing one (``--crossing-every``).
#: Real keys cross a few thresholds per quota period, so crossings are rare beside the records
#: that count. One in 1,000 at half a usage rate of 230,000 to 330,000 records/s is 115 to 165
#: webhooks/s. One in 100 (until 0.9.0) made 1,150 to 1,640 webhooks/s there: about 30% of the
#: webhook rate this bench measures, on top of half the records, so the machine ran at about
#: 80% of its capacity rather than half.
CROSSING_EVERY = 1000

Verdict: TypeAlias = Literal["met", "not met", "n/a"]


def parse_skew(text: str) -> float:
    """The exponent S of ``zipf:S`` (a finite number above 0); ValueError otherwise."""
    kind, sep, value = text.partition(":")
    if kind != "zipf" or not sep:
        raise ValueError(f"--skew must look like zipf:S (for example zipf:1.2), not {text!r}")
    try:
        exponent = float(value)
    except ValueError:
        raise ValueError(f"--skew zipf:S needs a number S, not {value!r}") from None
    if not math.isfinite(exponent) or exponent <= 0:
        raise ValueError(f"--skew zipf:S needs S > 0, not {value!r}")
    return exponent


class KeySampler:
    """Draws key indexes in ``range(n)``: uniformly, or zipf with ``exponent`` (index 0 is the
    most frequent, index r has weight 1 / (r + 1) ** exponent)."""

    def __init__(self, n: int, exponent: float | None = None) -> None:
        if n < 1:
            raise ValueError("a sampler needs at least one key")
        self.n = n
        self.exponent = exponent
        self._cumulative: list[float] = (
            []
            if exponent is None
            else list(itertools.accumulate((r + 1) ** -exponent for r in range(n)))
        )

    def draw(self, rng: random.Random) -> int:
        if not self._cumulative:
            return rng.randrange(self.n)
        point = rng.random() * self._cumulative[-1]
        return min(bisect.bisect_right(self._cumulative, point), self.n - 1)


class PlannedRecord(NamedTuple):
    """One request count of the load: which key, which org, how many requests."""

    key: int
    org: int
    requests: int


@dataclass(frozen=True)
class OrgLayout:
    """Which organisation each key belongs to.

    Even: key i belongs to org ``i % orgs``. Skewed: the heavy org 0 owns ``heavy_keys`` keys
    (the same share of the keys as of the records, so each key carries about the load it
    carries in the even run) and the other keys are spread over the other orgs.
    """

    keys: int
    orgs: int
    heavy_share: float | None = None

    @property
    def heavy_keys(self) -> int:
        """Keys of the heavy org (every key when there is no other org to give any to)."""
        if self.heavy_share is None:
            return 0
        if self.orgs == 1 or self.keys == 1:
            return self.keys
        return min(self.keys - 1, max(1, round(self.keys * self.heavy_share)))

    def org_of(self, key: int) -> int:
        if self.heavy_share is None:
            return key % self.orgs
        heavy = self.heavy_keys
        return 0 if key < heavy else 1 + (key - heavy) % (self.orgs - 1)


def plan_load(
    records: int,
    layout: OrgLayout,
    *,
    exponent: float | None = None,
    seed: int = 1,
) -> Iterator[PlannedRecord]:
    """``records`` request counts. Keys follow the sampler (uniform, or zipf with
    ``exponent``); in a skewed layout the heavy org sends ``heavy_share`` of the records."""
    rng = random.Random(seed)  # noqa: S311 - load generation, not cryptography
    heavy = layout.heavy_keys
    if layout.heavy_share is None or heavy == layout.keys:
        everyone = KeySampler(layout.keys, exponent)
        for _ in range(records):
            key = everyone.draw(rng)
            yield PlannedRecord(key, layout.org_of(key), rng.randint(1, COUNT_MAX))
        return
    heavy_sampler = KeySampler(heavy, exponent)
    rest_sampler = KeySampler(layout.keys - heavy, exponent)
    for _ in range(records):
        if rng.random() < layout.heavy_share:
            key = heavy_sampler.draw(rng)
        else:
            key = heavy + rest_sampler.draw(rng)
        yield PlannedRecord(key, layout.org_of(key), rng.randint(1, COUNT_MAX))


def latency_plan(
    background_keys: int, every: int, *, exponent: float | None = None, seed: int = 1
) -> Iterator[tuple[bool, int]]:
    """The records of the latency run, endlessly: (crossing, key index) each.

    Every ``every``-th record goes to a fresh crossing key (quota 1, so that record fires its
    one threshold). The others go to background keys that never cross, drawn as the usage run
    draws its keys (uniform, or zipf with ``exponent``): the load is half the measured maximum
    *of the same traffic*. (Round robin over the keys, as before 0.7.0, gave every record a key
    of its own in a batch, the costliest traffic there is: half of the zipf run's rate was then
    nearly all a worker could take.)
    """
    rng = random.Random(seed)  # noqa: S311 - load generation, not cryptography
    background = KeySampler(background_keys, exponent)
    for index in itertools.count():
        if index % every == every - 1:
            yield True, index // every
        else:
            yield False, background.draw(rng)


def crossing_keys(records: int, every: int) -> int:
    """How many crossing records (and keys) ``records`` records of the latency run hold."""
    return records // every


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 <= q <= 100) of non-empty ``values``."""
    if not values:
        raise ValueError("no values")
    if not 0 <= q <= 100:
        raise ValueError("q must be within [0, 100]")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Target:
    """A figure's target from issue 7."""

    #: The value to reach.
    threshold: float
    #: True when the figure must be at least the threshold, False when at most.
    at_least: bool
    #: Units of the figure and the threshold, for the table.
    unit: str = ""
    #: The target is set at this many active keys; a run with fewer can only fail it.
    at_keys: int = 0

    def text(self) -> str:
        bound = ">=" if self.at_least else "<="
        keys = f" at {self.at_keys:,} keys" if self.at_keys else ""
        return f"{bound} {self.threshold:,g}{self.unit}{keys}"


TARGETS: dict[str, Target] = {
    "usage_over_ceiling": Target(0.5, at_least=True),
    "latency_p99_s": Target(1.0, at_least=False, unit=" s"),
    "peak_rss_mb": Target(1500, at_least=False, unit=" MB", at_keys=1_000_000),
    "recovery_s": Target(60, at_least=False, unit=" s", at_keys=1_000_000),
    "skewed_over_uniform": Target(0.8, at_least=True),
    "webhooks_per_s": Target(2000, at_least=True, unit="/s"),
    "kept_beside_hanging": Target(0.8, at_least=True),
    "emails_per_s": Target(300, at_least=True, unit="/s"),
}


def verdict(target: Target, value: float | None, active_keys: int = 0) -> Verdict:
    """Whether ``value`` meets ``target``; "n/a" when it was not measured, or when it was
    measured at fewer keys than the target's and still within it (memory and recovery time
    only grow with keys, so being over the bound at fewer keys already fails)."""
    if value is None:
        return "n/a"
    within = value >= target.threshold if target.at_least else value <= target.threshold
    if not within:
        return "not met"
    if active_keys < target.at_keys:
        return "n/a"
    return "met"
