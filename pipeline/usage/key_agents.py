"""The key agents: quota.sessions into the sessions table; gateway.requests into key usage,
key triggers and org partials.

Thin wiring: decode, call the pure planners of :mod:`pipeline.usage.keys`, emit, write. Both
read their topic in bulk (pipeline.engine.feeds), not through faust's streams.
"""

from __future__ import annotations

import time
from typing import Any

from faust.types import TP

from pipeline.engine.app import Pipeline
from pipeline.engine.catchup import CatchUp
from pipeline.engine.consumer import consumer_of
from pipeline.engine.feeds import Batch
from pipeline.engine.runs import decode_records, process_runs, reject_failed
from pipeline.engine.tables import read_all
from pipeline.engine.transactions import emit_all
from pipeline.records.requests import decode_request
from pipeline.records.subjects import decode_session_record
from pipeline.usage.batches import (
    count_held,
    emit_triggers,
    per_partition,
    sweep_held,
    unapplied_batch,
    write_plan,
)
from pipeline.usage.keys import (
    HELD_REQUESTS,
    KEY_USAGE,
    SESSIONS,
    KeyTables,
    plan_key_batch,
    plan_session_batch,
)
from pipeline.usage.partials import PartialSums, encode_partials
from pipeline.usage.plans import HoldContext

#: Records per batch, and how long the oldest of them may wait for it to fill (it bounds
#: trigger latency; for the requests' feed, counted from the record's fetch).
#: Every batch sends one partial per org and source partition, so fuller batches cost less:
#: 0.25 s cut the agent's own time by 40% against 0.05 s in `quota-pipeline bench`. 20,000
#: records read from the bulk feed made 30,000 records/s; 50,000 were no faster and held
#: 100 MB more at peak.
BATCH_MAX = 20_000
BATCH_WITHIN = 0.25
SESSIONS_BATCH_MAX = 5_000


def attach_usage_agents(pipeline: Pipeline) -> None:
    """Register the sessions and usage agents on the pipeline's App."""
    attach_sessions_agent(pipeline)
    attach_requests_agent(pipeline)


def key_tables(pipeline: Pipeline) -> dict[str, Any]:
    """The key tables by the names the planners write them under."""
    tables = pipeline.tables
    return {
        SESSIONS: tables.sessions,
        KEY_USAGE: tables.key_usage,
        HELD_REQUESTS: tables.held_requests,
    }


def attach_sessions_agent(pipeline: Pipeline) -> None:
    app, topics, tables = pipeline.app, pipeline.topics, pipeline.tables
    monitor = pipeline.settings.monitor
    ledger = pipeline.held_keys
    writes_to = key_tables(pipeline)

    @app.agent(topics.sessions, name="sessions")
    async def sessions_agent(stream: Any) -> None:
        # faust subscribes this agent to the topic (group membership, co-partitioned tables);
        # the records come in bulk, through the feed (pipeline.engine.feeds), not ``stream``.
        await process_runs(
            pipeline.sessions_feed,
            pipeline.gate,
            app.consumer,
            per_partition(apply_sessions),
            max_records=SESSIONS_BATCH_MAX,
            within=BATCH_WITHIN,
        )

    async def apply_sessions(tp: TP, fetched: list[Any]) -> None:
        """One partition's share of a batch of sessions: store them, release held requests."""
        batch = unapplied_batch(pipeline, "sessions", tp, fetched)
        if batch is None:
            return
        decoded = await decode_records(pipeline, tp, batch.records, decode_session_record)
        entries = [(index, key, session) for index, (key, session) in enumerate(decoded.values)]
        keys = {key for _, key, _ in entries}
        source = batch.source
        # The lock keeps a batch of requests from planning between our reads and writes.
        async with pipeline.key_writes:
            stored = KeyTables(
                read_all(tables.sessions, source, keys),
                read_all(tables.key_usage, source, keys),
                read_all(tables.held_requests, source, keys),
            )
            plan = plan_session_batch(entries, stored, monitor)
            await reject_failed(pipeline, tp, decoded.sources, plan.failed)
            await emit_triggers(pipeline, batch, plan)
            await write_plan(pipeline, batch, plan, writes_to)
        count_held(ledger, tp.partition, plan.tally, "key")


def attach_requests_agent(pipeline: Pipeline) -> None:
    app, topics, tables = pipeline.app, pipeline.topics, pipeline.tables
    monitor = pipeline.settings.monitor
    policy = pipeline.settings.hold.key_policy()
    ledger = pipeline.held_keys
    writes_to = key_tables(pipeline)
    # Requests wait until the sessions already in quota.sessions are read (pipeline.engine.catchup).
    sessions_read = CatchUp(topics.sessions.get_topic_name(), pipeline.sessions_feed)

    @app.agent(topics.requests, name="usage")
    async def usage_agent(stream: Any) -> None:
        # Subscribed through faust, read in bulk, as the sessions agent.
        feed = pipeline.requests_feed

        async def ready(batch: Batch) -> bool:
            partitions = {run.tp.partition for run in batch.runs}
            return await sessions_read.wait(consumer_of(app), partitions, feed, batch.epoch)

        await process_runs(
            feed,
            pipeline.gate,
            app.consumer,
            per_partition(apply_requests),
            max_records=BATCH_MAX,
            within=BATCH_WITHIN,
            ready=ready,
        )

    async def apply_requests(tp: TP, fetched: list[Any]) -> None:
        """One partition's share of a batch: key usage and triggers, org partials, the mark."""
        batch = unapplied_batch(pipeline, "requests", tp, fetched)
        if batch is None:
            return
        decoded = await decode_records(pipeline, tp, batch.records, decode_request)
        records = decoded.values
        source, partition = batch.source, tp.partition
        async with pipeline.key_writes:
            keys = {record.key for record in records}
            sessions = read_all(tables.sessions, source, keys)
            unknown = keys.difference(sessions)
            epoch = pipeline.requests_feed.epoch
            swept = sweep_held(ledger, tables.held_requests, source, policy=policy, epoch=epoch)
            held = read_all(tables.held_requests, source, unknown - swept.subjects)
            stored = KeyTables(sessions, read_all(tables.key_usage, source, keys - unknown), held)
            room = ledger.room(partition, policy)
            plan = plan_key_batch(
                stored, records, monitor, HoldContext(policy, time.time(), partition, room)
            )
            swept.into(plan, HELD_REQUESTS)
            if plan.failed:
                await reject_failed(pipeline, tp, decoded.sources, plan.failed)
                records = [r for i, r in enumerate(records) if i not in plan.failed]
            # Every record counts for its org, whether or not its key has a session.
            partials = PartialSums()
            partials.add_all(records)
            await emit_triggers(pipeline, batch, plan)
            offset = source.message.offset
            await emit_all(
                app,
                source,
                topics.org_partials,
                [
                    (org.encode(), value)
                    for org, buckets in partials.items()
                    for value in encode_partials(org, buckets, partition, offset)
                ],
            )
            await write_plan(pipeline, batch, plan, writes_to)
        count_held(ledger, partition, plan.tally, "key")
