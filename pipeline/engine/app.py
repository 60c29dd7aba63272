"""The faust App: its settings, topics and tables. Agents live in their own modules."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import SchemaT, TableT

from pipeline.config import Settings
from pipeline.engine.feeds import BulkFeed
from pipeline.engine.transactions import BatchGate, install_gate
from pipeline.service.org_directory import OrgDirectory
from pipeline.usage.held import HeldLedger

#: Record keys and values travel as bytes: we decode them ourselves so that a bad record becomes
#: a pipeline.rejected record with a reason instead of a faust decode error that skips it.
RAW: SchemaT[bytes, bytes] = faust.Schema(
    key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
)


#: Records of gateway.requests fetched ahead of the usage agent: two of its largest batches.
REQUESTS_FEED_CAPACITY = 40_000
#: Records of quota.sessions, quota.orgs and the org partials fetched ahead of their agents.
STATE_FEED_CAPACITY = 10_000
#: Seconds between sweeps of a partition's held requests (expired ones dropped, the rest
#: counted): see pipeline.usage.held.
SWEEP_EVERY = 60.0


@dataclass(frozen=True)
class Topics:
    """The contract topics, as faust topics."""

    requests: faust.TopicT
    sessions: faust.TopicT
    orgs: faust.TopicT
    triggers: faust.TopicT
    portal_events: faust.TopicT
    dlq: faust.TopicT
    rejected: faust.TopicT
    #: Internal, keyed by org id: per-batch partial sums from the usage agent.
    org_partials: faust.TopicT


@dataclass(frozen=True)
class Tables:
    """Changelogged state, co-partitioned with the topics keyed the same way."""

    #: API key -> the fields of its Session the pipeline reads (monitoring.compact_session).
    sessions: TableT[str, Any]
    #: API key -> its UsageState, as JSON.
    key_usage: TableT[str, Any]
    #: org id -> its quota and event options (monitoring.compact_org).
    orgs: TableT[str, Any]
    #: org id -> its UsageState, as JSON.
    org_usage: TableT[str, Any]
    #: source partition -> offset of the last record applied (pipeline.usage.watermarks).
    applied: TableT[str, Any]
    #: API key -> requests waiting for its session (pipeline.usage.held).
    held_requests: TableT[str, Any]
    #: org id -> partial sums waiting for its org record (pipeline.usage.held).
    held_partials: TableT[str, Any]


@dataclass(frozen=True)
class Pipeline:
    """Everything a worker runs, built once from the settings."""

    app: faust.App
    settings: Settings
    topics: Topics
    tables: Tables
    #: Keeps commits between whole batches: see pipeline.engine.transactions.
    gate: BatchGate
    #: The records of gateway.requests, read in bulk: see pipeline.engine.feeds.
    requests_feed: BulkFeed
    #: The records of quota.sessions, quota.orgs and the org partials, read in bulk.
    sessions_feed: BulkFeed
    orgs_feed: BulkFeed
    partials_feed: BulkFeed
    #: The records of quota.triggers, read in bulk by the delivery agent.
    triggers_feed: BulkFeed
    #: The records of each retry tier (``delivery.retry_schedule``), read in bulk by its agent.
    retry_feeds: tuple[BulkFeed, ...]
    #: Held while a batch goes from planned to written (its events are sent in between), so
    #: that session and org changes never land in that gap and get overwritten.
    key_writes: asyncio.Lock = field(default_factory=asyncio.Lock)
    org_writes: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Every org's event_options, for the delivery agents of every worker.
    org_directory: OrgDirectory = field(default_factory=OrgDirectory)
    #: What each partition holds for keys without a session, and orgs without a record.
    held_keys: HeldLedger = field(default_factory=lambda: HeldLedger(SWEEP_EVERY))
    held_orgs: HeldLedger = field(default_factory=lambda: HeldLedger(SWEEP_EVERY))


def retry_tier_name(settings: Settings, index: int) -> str:
    """The internal topic of the ``index``-th step of ``delivery.retry_schedule``."""
    return f"{settings.app_id}-retry-{index}"


def broker_urls(bootstrap_servers: str) -> list[str]:
    """faust wants one ``kafka://`` URL per bootstrap server."""
    return [
        f"kafka://{server.strip()}" for server in bootstrap_servers.split(",") if server.strip()
    ]


def create_app(settings: Settings, **overrides: Any) -> faust.App:
    """A faust App configured from the settings; ``overrides`` are for tests."""
    options: dict[str, Any] = {
        "broker": broker_urls(settings.kafka.bootstrap_servers),
        "store": "rocksdb://" if settings.store == "rocksdb" else "memory://",
        "datadir": str(settings.data_dir),
        "topic_partitions": settings.kafka.partitions,
        "topic_replication_factor": settings.kafka.replication_factor,
        "web_port": settings.web.port,
        "web_bind": settings.web.bind,
        "web_host": settings.web.bind,
        "autodiscover": False,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "processing_guarantee": settings.kafka.processing_guarantee,
        "broker_commit_interval": settings.kafka.commit_interval,
        # A worker that dies is noticed in 10 s (faust's default is 60 s): its partitions,
        # and the triggers waiting in them, move to the survivors that much sooner.
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 3.0,
        "table_standby_replicas": settings.kafka.standby_replicas,
        "consumer_max_fetch_size": settings.kafka.max_partition_fetch_bytes,
    }
    options.update(overrides)
    return faust.App(settings.app_id, **options)


def build_pipeline(settings: Settings, **overrides: Any) -> Pipeline:
    """The App with the contract's topics and the tables; agents are attached by the caller."""
    app = create_app(settings, **overrides)
    names = settings.topics
    topics = Topics(
        requests=app.topic(names.requests, schema=RAW),
        sessions=app.topic(names.sessions, schema=RAW),
        orgs=app.topic(names.orgs, schema=RAW),
        triggers=app.topic(names.triggers, schema=RAW),
        portal_events=app.topic(names.portal_events, schema=RAW),
        dlq=app.topic(names.dlq, schema=RAW),
        rejected=app.topic(names.rejected, schema=RAW),
        org_partials=app.topic(
            f"{settings.app_id}-org-partials",
            schema=RAW,
            internal=True,
            partitions=settings.kafka.partitions,
        ),
    )
    table_options: dict[str, Any] = {
        "partitions": settings.kafka.partitions,
        # str keys; values are plain JSON documents (faust's json codec, orjson underneath).
        "schema": faust.Schema(key_type=str, key_serializer="raw", value_serializer="json"),
    }
    tables = Tables(
        sessions=app.Table("sessions", **table_options),
        key_usage=app.Table("key_usage", **table_options),
        orgs=app.Table("orgs", **table_options),
        org_usage=app.Table("org_usage", **table_options),
        applied=app.Table("applied_offsets", **table_options),
        held_requests=app.Table("held_requests", **table_options),
        held_partials=app.Table("held_partials", **table_options),
    )
    gate = BatchGate()
    requests_feed = BulkFeed(capacity=REQUESTS_FEED_CAPACITY)
    sessions_feed = BulkFeed(capacity=STATE_FEED_CAPACITY)
    orgs_feed = BulkFeed(capacity=STATE_FEED_CAPACITY)
    partials_feed = BulkFeed(capacity=STATE_FEED_CAPACITY)
    # As many waiting as the delivery agent handles at once: enough to keep it busy. Full (an
    # endpoint hanging until its breaker opens holds every delivery place), it pauses only
    # quota.triggers: holding the fetcher back would stop the usage stage of this worker too.
    triggers_feed = BulkFeed(capacity=settings.delivery.events_in_flight, pauses_when_full=True)
    # A tier's agent holds its jobs until they are due, for hours in the later tiers: a full
    # feed pauses only the tier, where a full faust stream queue stopped the whole fetcher.
    retry_feeds = tuple(
        BulkFeed(capacity=settings.delivery.events_in_flight, pauses_when_full=True)
        for _ in settings.delivery.retry_schedule
    )
    feeds = {
        names.requests: requests_feed,
        names.sessions: sessions_feed,
        names.orgs: orgs_feed,
        topics.org_partials.get_topic_name(): partials_feed,
        names.triggers: triggers_feed,
    }
    feeds |= {retry_tier_name(settings, index): feed for index, feed in enumerate(retry_feeds)}
    install_gate(app, gate, feeds)
    return Pipeline(
        app=app,
        settings=settings,
        topics=topics,
        tables=tables,
        gate=gate,
        requests_feed=requests_feed,
        sessions_feed=sessions_feed,
        orgs_feed=orgs_feed,
        partials_feed=partials_feed,
        triggers_feed=triggers_feed,
        retry_feeds=retry_feeds,
    )
