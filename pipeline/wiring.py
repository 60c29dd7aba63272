"""The Pipeline: what every stage of a worker is wired to, built once from the settings.

An :class:`pipeline.engine.app.Engine` (the faust App), the contract's topics and the tables as
engine handles, the bulk feeds, and the state the stages share in one worker: the locks that
keep a batch's reads and writes together, the org directory, the held-requests ledgers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import Settings
from pipeline.engine.app import Engine, Table, Topic
from pipeline.engine.feeds import BulkFeed
from pipeline.records.rejections import copied, loggable, rejection
from pipeline.service.metrics import REJECTED
from pipeline.service.org_directory import OrgDirectory
from pipeline.usage.held import HeldLedger

log = logging.getLogger(__name__)

#: Records of gateway.requests fetched ahead of the usage agent: two of its largest batches.
REQUESTS_FEED_CAPACITY = 40_000
#: Records of quota.sessions, quota.orgs and the org partials fetched ahead of their agents.
STATE_FEED_CAPACITY = 10_000
#: Seconds between sweeps of a partition's held requests (expired ones dropped, the rest
#: counted): see pipeline.usage.held.
SWEEP_EVERY = 60.0


@dataclass(frozen=True)
class Topics:
    """The contract topics, and the internal ones the stages share."""

    requests: Topic
    sessions: Topic
    orgs: Topic
    triggers: Topic
    portal_events: Topic
    dlq: Topic
    rejected: Topic
    #: Internal, keyed by org id: per-batch partial sums from the usage agent.
    org_partials: Topic
    #: Internal: one per step of ``delivery.retry_schedule``.
    retry_tiers: tuple[Topic, ...]
    #: Internal, keyed by address: key request emails waiting for their digest.
    digest: Topic


@dataclass(frozen=True)
class Tables:
    """Changelogged state, co-partitioned with the topics keyed the same way."""

    #: API key -> the fields of its Session the pipeline reads (usage.watching.compact_session).
    sessions: Table
    #: API key -> its UsageState, as JSON.
    key_usage: Table
    #: org id -> its quota and event options (usage.watching.compact_org).
    orgs: Table
    #: org id -> its UsageState, as JSON.
    org_usage: Table
    #: source partition -> offset of the last record applied (pipeline.usage.watermarks).
    applied: Table
    #: API key -> requests waiting for its session (pipeline.usage.held).
    held_requests: Table
    #: org id -> partial sums waiting for its org record (pipeline.usage.held).
    held_partials: Table


@dataclass(frozen=True)
class Feeds:
    """The topics read in bulk (pipeline.engine.feeds), by the agent that reads each."""

    requests: BulkFeed
    sessions: BulkFeed
    orgs: BulkFeed
    partials: BulkFeed
    triggers: BulkFeed
    retry_tiers: tuple[BulkFeed, ...]


@dataclass(frozen=True)
class Pipeline:
    """Everything a worker's stages share."""

    engine: Engine
    settings: Settings
    topics: Topics
    tables: Tables
    feeds: Feeds
    #: Held while a batch goes from planned to written (its events are sent in between), so
    #: that session and org changes never land in that gap and get overwritten.
    key_writes: asyncio.Lock = field(default_factory=asyncio.Lock)
    org_writes: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Every org's event_options, for the delivery agents of every worker.
    org_directory: OrgDirectory = field(default_factory=OrgDirectory)
    #: What each partition holds for keys without a session, and orgs without a record.
    held_keys: HeldLedger = field(default_factory=lambda: HeldLedger(SWEEP_EVERY))
    held_orgs: HeldLedger = field(default_factory=lambda: HeldLedger(SWEEP_EVERY))

    async def reject(self, event: Any, reason: str) -> None:
        """Route one bad record to pipeline.rejected, in its source's transaction; go on."""
        message = event.message
        value = rejection(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            reason=reason,
            now=time.time(),
        )
        # Durable before the record is acknowledged: a rejected record is never simply gone.
        sent = await self.engine.emit_one(event, self.topics.rejected, copied(message.key), value)
        await sent
        REJECTED.labels(topic=message.topic).inc()
        log.info(
            "rejected record topic=%s partition=%s offset=%s reason=%s",
            message.topic,
            message.partition,
            message.offset,
            loggable(reason),
        )


def org_partials_name(settings: Settings) -> str:
    """The internal topic of the org partials (keyed by org id)."""
    return f"{settings.app_id}-org-partials"


def retry_tier_name(settings: Settings, index: int) -> str:
    """The internal topic of the ``index``-th step of ``delivery.retry_schedule``."""
    return f"{settings.app_id}-retry-{index}"


def build_pipeline(settings: Settings, **overrides: Any) -> Pipeline:
    """The engine with the contract's topics, the tables and the feeds; agents are attached
    by the caller. ``overrides`` are faust settings, for tests."""
    engine = Engine(settings, **overrides)
    names = settings.topics
    topics = Topics(
        requests=engine.topic(names.requests),
        sessions=engine.topic(names.sessions),
        orgs=engine.topic(names.orgs),
        triggers=engine.topic(names.triggers),
        portal_events=engine.topic(names.portal_events),
        dlq=engine.topic(names.dlq),
        rejected=engine.topic(names.rejected),
        org_partials=engine.topic(org_partials_name(settings), internal=True),
        retry_tiers=tuple(
            engine.topic(retry_tier_name(settings, index), internal=True)
            for index in range(len(settings.delivery.retry_schedule))
        ),
        digest=engine.topic(f"{settings.app_id}-digest", internal=True),
    )
    tables = Tables(
        sessions=engine.table("sessions"),
        key_usage=engine.table("key_usage"),
        orgs=engine.table("orgs"),
        org_usage=engine.table("org_usage"),
        applied=engine.table("applied_offsets"),
        held_requests=engine.table("held_requests"),
        held_partials=engine.table("held_partials"),
    )
    in_flight = settings.delivery.events_in_flight
    feeds = Feeds(
        requests=engine.feed(topics.requests, REQUESTS_FEED_CAPACITY),
        sessions=engine.feed(topics.sessions, STATE_FEED_CAPACITY),
        orgs=engine.feed(topics.orgs, STATE_FEED_CAPACITY),
        partials=engine.feed(topics.org_partials, STATE_FEED_CAPACITY),
        # As many waiting as the delivery agent handles at once: enough to keep it busy. Full
        # (an endpoint hanging until its breaker opens holds every delivery place), it pauses
        # only quota.triggers: holding the fetcher back would stop the usage stage too.
        triggers=engine.feed(topics.triggers, in_flight, pauses_when_full=True),
        # A tier's agent holds its jobs until they are due, for hours in the later tiers: a
        # full feed pauses only the tier, where a full faust stream queue stopped the fetcher.
        retry_tiers=tuple(
            engine.feed(tier, in_flight, pauses_when_full=True) for tier in topics.retry_tiers
        ),
    )
    return Pipeline(engine=engine, settings=settings, topics=topics, tables=tables, feeds=feeds)
