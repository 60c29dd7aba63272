"""Every org's event_options, in every worker: where an org's events go.

Each worker reads the whole of quota.orgs (compacted) with a consumer of its own, outside the
consumer group, into memory. faust's GlobalTable was meant for this, but with more than one
worker some of them miss updates (faust issues 283, 475 and 751; our two-worker test saw it),
and a trigger delivered by such a worker would skip its org's webhook and email.

Orgs are few and small, so memory is no concern; the delivery agents wait for :attr:`ready`
(the topic read to its end as of start-up) before their first event, so an org published before
a worker starts is always known to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from pipeline.config import Settings
from pipeline.engine.clients import follow_topic
from pipeline.errors import InvalidRecord
from pipeline.records.subjects import decode_org
from pipeline.usage.watching import compact_org

log = logging.getLogger(__name__)


class OrgDirectory:
    """org id -> its event_options, kept current from quota.orgs."""

    def __init__(self) -> None:
        self._options: dict[str, dict[str, Any]] = {}
        self.ready = asyncio.Event()

    def get(self, org_id: str) -> Mapping[str, Any] | None:
        return self._options.get(org_id)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One quota.orgs record: an org, or a tombstone. An invalid org keeps the previous
        one (the orgs agent reports it to pipeline.rejected)."""
        if not key:
            return
        org_id = key.decode(errors="replace")
        try:
            org = decode_org(value)
        except InvalidRecord:
            return
        if org is None:
            self._options.pop(org_id, None)
        else:
            self._options[org_id] = compact_org(org)["event_options"]

    async def follow(self, settings: Settings) -> None:
        """Read quota.orgs from the beginning, for as long as the worker runs."""

        def caught_up() -> None:
            if not self.ready.is_set():
                log.info("org directory ready: %d orgs", len(self._options))
                self.ready.set()

        await follow_topic(settings, settings.topics.orgs, self.apply, caught_up)
