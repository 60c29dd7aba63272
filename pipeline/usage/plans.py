"""What a batch does to the tables, decided before anything is written (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import failure_reason
from pipeline.usage.held import HoldPolicy, HoldTally, Room


@dataclass
class BatchPlan:
    """A batch's effect: table writes, events to emit, and the records it could not process."""

    #: Table name -> key -> its new value; None deletes the key.
    writes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: (record key, TriggerEvent bytes) to emit, in order.
    triggers: list[tuple[str, bytes]] = field(default_factory=list)
    #: Index of a record in the batch -> why it could not be processed (to pipeline.rejected).
    failed: dict[int, str] = field(default_factory=dict)
    #: What happened to held requests.
    tally: HoldTally = field(default_factory=HoldTally)

    def write(self, table: str, key: str, value: Any) -> None:
        self.writes.setdefault(table, {})[key] = value

    def fail(self, index: int, exc: BaseException) -> None:
        self.failed[index] = failure_reason(exc)

    def merge(self, other: BatchPlan) -> None:
        """Add what ``other`` (planned after this) does; its tally is shared, not added."""
        for table, writes in other.writes.items():
            self.writes.setdefault(table, {}).update(writes)
        self.triggers += other.triggers
        self.failed.update(other.failed)


@dataclass(frozen=True)
class HoldContext:
    """What holding requests needs to know about the batch."""

    policy: HoldPolicy
    #: Unix seconds (wall clock) of the batch.
    now: float
    partition: int
    #: Subjects the partition may still start holding.
    room: Room


class WorkingTables:
    """Copies of what the tables hold for a batch's subjects, changed as its entries are
    planned one by one (each reads what the entries before it wrote), every change also
    recorded in ``plan``."""

    def __init__(self, plan: BatchPlan, tables: Mapping[str, Mapping[str, Any]]) -> None:
        self.plan = plan
        self._tables = {name: dict(values) for name, values in tables.items()}

    def get(self, table: str, key: str) -> Any:
        return self._tables[table].get(key)

    def has(self, table: str, key: str) -> bool:
        return key in self._tables[table]

    def change(self, table: str, key: str, value: Any) -> None:
        """Set (or, with None, delete) ``key`` of ``table``."""
        self.plan.write(table, key, value)
        if value is None:
            self._tables[table].pop(key, None)
        else:
            self._tables[table][key] = value
