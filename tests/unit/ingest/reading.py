"""The hits a reader adds for one value, as a list: how the tests look at a reader."""

from __future__ import annotations

from pipeline.ingest.hits import Hit, Reader


def hits_of(read: Reader, raw: bytes | None) -> list[Hit]:
    hits: list[Hit] = []
    read(raw, lambda *fields: hits.append(Hit(*fields)))
    return hits
