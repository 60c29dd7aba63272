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


#: Reads one source record's value into the requests it stands for; raises InvalidRecord
#: (with a reason for pipeline.rejected) when the record cannot be mapped.
Reader = Callable[[bytes | None], list[Hit]]
