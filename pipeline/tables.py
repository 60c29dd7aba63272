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
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from faust import streams


@contextmanager
def acting_for(event: Any) -> Iterator[None]:
    """Table writes and sends inside this block belong to ``event``'s source partition."""
    token = streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        streams._current_event.reset(token)
