"""Per-batch partial sums of an organisation's requests (pure).

The usage agent sees an org's traffic spread over every partition of gateway.requests. Rather
than re-keying every record by org id, it sends one partial per org per batch to an internal
topic keyed by org id, so the org agent handles a small message per batch whatever the org's
size. Partials keep per-second buckets of event time, each stamped with the earliest event time
in it, so that the org agent places requests in the right quota period.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, NamedTuple

import msgspec
import orjson

from pipeline.errors import InvalidRecord
from pipeline.records.checks import MAX_ID_LENGTH
from pipeline.records.requests import RequestCount

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

    def add(self, org_id: str, ts: float, count: int) -> None:
        """``count`` requests of ``org_id`` at ``ts``."""
        seconds = self._orgs[org_id]
        bucket = seconds.get(ts // 1)
        if bucket is None:
            seconds[ts // 1] = [ts, count]
        else:
            bucket[0] = min(bucket[0], ts)
            bucket[1] += count

    def items(self) -> Iterable[tuple[str, list[Bucket]]]:
        """Each org with its buckets in event-time order."""
        for org_id, seconds in self._orgs.items():
            yield org_id, [(ts, count) for ts, count in sorted(seconds.values())]


#: The most per-second buckets in one partial record. A batch's records of one org can span
#: tens of thousands of seconds (a backlog of sparse traffic): its buckets are then sent in
#: parts, each far below Kafka's record limit (about 250 KB at most).
MAX_BUCKETS_PER_PARTIAL = 10_000

#: Where a partial comes from: (stream, offset of the last record of the batch it sums, part).
#: The stream is a partition of gateway.requests (a number), or a source partition of the
#: ingest stage (``"<topic>/<partition>"``). An org's partials from one stream come in
#: increasing origin order, so the org agent applies each once (see :func:`is_new`).
Origin = tuple[int | str, int, int]


class Partial(NamedTuple):
    org_id: str
    buckets: list[Bucket]
    #: None from a release before 0.4.0 (applied as it comes).
    origin: Origin | None = None


def encode_partials(
    org_id: str, buckets: list[Bucket], stream: int | str, offset: int
) -> list[bytes]:
    """The partial records of one org's buckets from one batch, in parts if there are many."""
    return [
        orjson.dumps(
            {
                "org_id": org_id,
                "buckets": buckets[start : start + MAX_BUCKETS_PER_PARTIAL],
                "origin": (stream, offset, part),
            }
        )
        for part, start in enumerate(range(0, len(buckets), MAX_BUCKETS_PER_PARTIAL))
    ]


class _WirePartial(msgspec.Struct, frozen=True):
    org_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
    buckets: list[tuple[float, Annotated[int, msgspec.Meta(ge=1)]]]
    #: Two numbers from a release before 0.11.0 (one part), three since; the first is a
    #: string for the ingest stage's partials (0.13.0).
    origin: (
        Annotated[
            list[Annotated[int, msgspec.Meta(ge=0)] | Annotated[str, msgspec.Meta(min_length=1)]],
            msgspec.Meta(min_length=2, max_length=3),
        ]
        | None
    ) = None


_decode_wire_partial = msgspec.json.Decoder(_WirePartial).decode


def decode_partial(raw: bytes | None) -> Partial:
    """Our own internal records; a bad one means a bug or a foreign producer: reject it."""
    if raw is None:
        raise InvalidRecord("org partial has no value")
    try:
        wire = _decode_wire_partial(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise InvalidRecord(f"not an org partial: {exc}") from exc
    origin: Origin | None = None
    if wire.origin is not None:
        stream, offset, *parts = wire.origin
        part = parts[0] if parts else 0
        if not isinstance(offset, int) or not isinstance(part, int):
            raise InvalidRecord("not an org partial: its origin's offset and part are numbers")
        origin = (stream, offset, part)
    return Partial(wire.org_id, list(wire.buckets), origin)


def is_new(origin: Origin | None, marks: Mapping[str, list[int]] | None) -> bool:
    """Whether a partial from ``origin`` is after the last one applied (``marks``: per
    partition of origin, the [offset, part] of the last one)."""
    if origin is None:
        return True
    mark = (marks or {}).get(str(origin[0]))
    return mark is None or [origin[1], origin[2]] > mark


def marked(marks: Mapping[str, list[int]] | None, origin: Origin | None) -> dict[str, list[int]]:
    """``marks`` moved on to ``origin``."""
    moved = dict(marks or {})
    if origin is not None:
        moved[str(origin[0])] = [origin[1], origin[2]]
    return moved
