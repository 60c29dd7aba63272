"""Writing tables from batches.

faust finds a table write's changelog partition, and the RocksDB store its per-partition
database, through the *current event*; ``stream.take_events()`` leaves none set. The agents
write each key once per batch, after their loop over events, under :func:`acting_for`: the
batch's events of one source partition are represented by the last of them, exactly as if the
write happened while processing it. This reaches into faust's own context variable (the one its
Stream sets per event); this module is the single place that does.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import faust
from faust import streams
from faust.serializers import codecs

from pipeline.transactions import emit_batched


@contextmanager
def acting_for(event: Any) -> Iterator[None]:
    """Table writes and sends inside this block belong to ``event``'s source partition."""
    token = streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        streams._current_event.reset(token)


async def write_all(
    app: faust.App, table: Any, source_event: Any, items: Mapping[str, Any]
) -> None:
    """``table[key] = value`` for every item, on behalf of ``source_event``; returns once the
    table's changelog has them all.

    faust sends each write's changelog message on its own, through a buffer that one task drains
    a message per turn of the event loop: a batch writing thousands of keys left the next commit
    waiting up to a second for them, with every batch held back behind it. Here the writes go
    out as record batches (:func:`pipeline.transactions.emit_batched`) and are acknowledged
    before the batch ends, so a commit has none of them to wait for.
    """
    if not items:
        return
    partition = source_event.message.partition
    records = [changelog_record(table, key, value) for key, value in items.items()]
    last = await emit_batched(
        app, source_event, table.changelog_topic.get_topic_name(), partition, records
    )
    with acting_for(source_event):
        for key, value in items.items():
            table.data[key] = value  # the store alone: the changelog has it already
    # What faust does once a changelog write is acknowledged (Collection._on_changelog_sent):
    # a restart on this data dir reads the changelog on from here.
    changelog = faust.types.TP(table.changelog_topic.get_topic_name(), partition)
    if app.in_transaction:
        app.tables.persist_offset_on_commit(table.data, changelog, last)
    else:
        table.data.set_persisted_offset(changelog, last)


def changelog_record(table: Any, key: str, value: Any) -> tuple[bytes, bytes]:
    """``key`` and ``value`` as faust writes them to ``table``'s changelog (its codecs)."""
    return codecs.dumps(table.key_serializer, key), codecs.dumps(table.value_serializer, value)
