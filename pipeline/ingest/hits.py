"""What a gateway's log record says about quota, whatever its format (pure)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class Hit(NamedTuple):
    """One request as quota sees it."""

    #: Event time at the gateway, unix seconds.
    ts: float
    org_id: str
    #: The API key it counts against; empty when it counts for its org only (a keyless API, or
    #: a request the gateway refused before the key's quota counted it).
    key: str
    api_id: str | None


#: Takes one hit, its fields as arguments (``Hit``'s order): a reader hands each request
#: straight to the batch's sums, without a tuple or a list of its own (a third of the
#: transform's time at 500,000 records).
AddHit = Callable[[float, str, str, "str | None"], None]

#: Reads one source record's value and adds the requests it stands for; raises InvalidRecord
#: (with a reason for pipeline.rejected) when the record cannot be mapped, having added none.
Reader = Callable[[bytes | None, AddHit], None]
