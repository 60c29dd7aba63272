"""Hits summed per key and second of event time, as gateway.requests records, and the hits
that count for their org only as org partials (pure).

A sum's ``ts`` is its second, not the earliest event time in it. A key's requests of one
second come from every source partition (Tyk Pump spreads them), each partition's sum at its
own moment: with the earliest time, a sum that came after another of the same second would be
older than the quota period the first one opened, and a late record fires nothing itself
(docs/contract.md). Whole seconds keep them in one period, and match Tyk, whose quota
periods are counted in whole seconds (``quota_renews``).
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from pipeline.usage.partials import PartialSums, encode_partials


def _second(item: tuple[tuple[str, str, str | None, float], int]) -> float:
    return item[0][3]


class Aggregate:
    """The hits of one source partition's batch."""

    def __init__(self) -> None:
        #: (key, org id, api id, second) -> requests
        self._keyed: dict[tuple[str, str, str | None, float], int] = {}
        self._org_only = PartialSums()

    def add(self, ts: float, org_id: str, key: str, api_id: str | None) -> None:
        """One hit, its fields as arguments: the readers' AddHit."""
        second = ts // 1
        if key:
            group = (key, org_id, api_id, second)
            keyed = self._keyed
            keyed[group] = keyed.get(group, 0) + 1
        else:
            self._org_only.add(org_id, second, 1)

    def request_counts(self) -> Iterator[tuple[bytes, bytes]]:
        """(record key, RequestCount) of every key's second, earliest second first: the usage
        stage opens a key's period at the first record it applies, and a record before that
        counts without firing. In first-seen order, a batch of messages out of time order
        (Tyk Pump flushes its buffer as it fills) could open the period at a later second and
        leave the last threshold crossed by an earlier one, never fired."""
        for (key, org_id, api_id, second), count in sorted(self._keyed.items(), key=_second):
            value = {"ts": second, "org_id": org_id, "key": key, "count": count}
            if api_id is not None:
                value["api_id"] = api_id
            yield key.encode(), orjson.dumps(value)

    def org_partials(self, stream: str, offset: int) -> Iterator[tuple[bytes, bytes]]:
        """(record key, partial) of every org's hits that count for it only; ``stream`` and
        ``offset`` (the batch's last source offset) make their origin, which the org agent
        keeps per stream to apply each partial once."""
        for org_id, buckets in self._org_only.items():
            for value in encode_partials(org_id, buckets, stream, offset):
                yield org_id.encode(), value
