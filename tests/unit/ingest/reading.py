"""How the tests look at a reader (the hits it adds for one value, as a list) and feed an
aggregate (hits as a list)."""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.ingest.aggregate import Aggregate
from pipeline.ingest.hits import Hit, Reader


def hits_of(read: Reader, raw: bytes | None) -> list[Hit]:
    hits: list[Hit] = []
    read(raw, lambda *fields: hits.append(Hit(*fields)))
    return hits


def aggregate_of(hits: Iterable[Hit]) -> Aggregate:
    aggregate = Aggregate()
    for hit in hits:
        aggregate.add(*hit)
    return aggregate
