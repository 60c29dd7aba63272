"""What `quota-pipeline bench` was asked to measure, and what it measured."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from pipeline.bench.delivery import DeliveryBench
from pipeline.bench.ingest import IngestBenchResult
from pipeline.bench.latency import LatencyBench
from pipeline.bench.memory import MemoryBench
from pipeline.bench.plan import CROSSING_EVERY
from pipeline.bench.sessions import SessionsBenchResult
from pipeline.bench.usage import UsageRun


@dataclass(frozen=True)
class BenchOptions:
    """What `quota-pipeline bench` was asked to measure."""

    records: int
    keys: int
    orgs: int
    partitions: int
    workers: int = 1
    #: The key distribution as given (``zipf:S``), None for uniform keys.
    skew: str | None = None
    #: Its exponent S.
    exponent: float | None = None
    #: Seconds of steady load in the latency run; 0 skips it.
    latency_seconds: float = 20.0
    #: One record in this many of the latency run crosses a threshold.
    crossing_every: int = CROSSING_EVERY
    #: Keys of the memory run; 0 skips it.
    active_keys: int = 0
    deliveries: int = 0
    emails: int = 0
    #: Tyk Pump records of the ingest run; None: as many as ``records``; 0 skips it.
    ingest_records: int | None = None
    #: Sessions of the sessions run (sync from a stand-in Tyk Gateway, one worker applying
    #: them); 0 skips it.
    sessions: int = 100_000

    @property
    def ingest_load(self) -> int:
        """Records of the ingest run (0: skipped)."""
        return self.records if self.ingest_records is None else self.ingest_records


@dataclass(frozen=True)
class BenchResult:
    """What one bench run measured."""

    options: BenchOptions
    produce_per_s: float
    #: The ceiling of each pass over the load, records/s.
    ceiling_passes: tuple[float, ...]
    #: The usage stage with keys spread evenly over the orgs.
    usage: UsageRun
    #: The usage stage when one org sends ``heavy_share`` of the records.
    skewed: UsageRun
    #: The heavy org's share of the skewed run's records, as produced.
    heavy_share: float
    latency: LatencyBench | None = None
    memory: MemoryBench | None = None
    deliveries: DeliveryBench | None = None
    emails_per_s: float | None = None
    ingest: IngestBenchResult | None = None
    sessions: SessionsBenchResult | None = None

    @property
    def ceiling_per_s(self) -> float:
        """The median pass: a single pass is noisy on a shared machine (278,982 to 502,233
        records/s between runs of one day, up to a quarter apart within a run)."""
        return statistics.median(self.ceiling_passes)

    @property
    def ratio(self) -> float:
        """Usage stage / ceiling, both in records/s."""
        return self.usage.records_per_s / self.ceiling_per_s if self.ceiling_per_s else 0.0

    @property
    def skewed_over_uniform(self) -> float:
        return self.skewed.records_per_s / self.usage.records_per_s
