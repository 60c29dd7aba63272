"""Per-batch partial sums of an organisation's requests (pure).

The usage agent sees an org's traffic spread over every partition of gateway.requests. Rather
than re-keying every record by org id, it sends one partial per org per batch to an internal
topic keyed by org id, so the org agent handles a small message per batch whatever the org's
size. Partials keep per-second buckets of event time, each stamped with the earliest event time
in it, so that the org agent places requests in the right quota period.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any, NamedTuple

import orjson

from pipeline.errors import InvalidRecord
from pipeline.models import RequestCount

Bucket = tuple[float, int]


class PartialSums:
    """Accumulates one batch: org id -> second (a whole float) -> [earliest ts, count]."""

    def __init__(self) -> None:
        self._orgs: dict[str, dict[float, list[Any]]] = defaultdict(dict)

    def add_all(self, records: Iterable[RequestCount]) -> None:
        """Every record counts for its org (whether or not its key has a session)."""
        orgs = self._orgs
        for record in records:
            ts, count = record.ts, record.count
            seconds = orgs[record.org_id]
            second = ts // 1
            bucket = seconds.get(second)
            if bucket is None:
                seconds[second] = [ts, count]
            else:
                # Not min(): a call per record, for the rare late one.
                if ts < bucket[0]:  # noqa: PLR1730
                    bucket[0] = ts
                bucket[1] += count

    def items(self) -> Iterable[tuple[str, list[Bucket]]]:
        """Each org with its buckets in event-time order."""
        for org_id, seconds in self._orgs.items():
            yield org_id, [(ts, count) for ts, count in sorted(seconds.values())]


class Partial(NamedTuple):
    org_id: str
    buckets: list[Bucket]
    #: (partition, offset) of the last gateway.requests record of the batch it sums, so that
    #: the org agent applies it once (pipeline.watermarks); None from a release before 0.4.0.
    origin: tuple[int, int] | None = None


def encode_partial(org_id: str, buckets: list[Bucket], origin: tuple[int, int]) -> bytes:
    return orjson.dumps({"org_id": org_id, "buckets": buckets, "origin": origin})


def decode_partial(raw: bytes | None) -> Partial:
    """Our own internal records; a bad one means a bug or a foreign producer: reject it."""
    try:
        data = orjson.loads(raw or b"")
        org_id = data["org_id"]
        buckets = [(float(ts), int(count)) for ts, count in data["buckets"]]
        origin = data.get("origin")
        if origin is not None:
            partition, offset = origin
            origin = (int(partition), int(offset))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidRecord(f"not an org partial: {exc}") from exc
    if not isinstance(org_id, str) or not org_id:
        raise InvalidRecord("org partial without an org id")
    return Partial(org_id, buckets, origin)
