"""The org agents: quota.orgs into the orgs table; org partials into org usage and org triggers.

Thin wiring: decode, call the pure planners of :mod:`pipeline.usage.orgs`, emit, write. Both
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
from pipeline.records.subjects import decode_org_record
from pipeline.usage.batches import (
    count_held,
    emit_triggers,
    per_partition,
    sweep_held,
    unapplied_batch,
    write_plan,
)
from pipeline.usage.orgs import (
    HELD_PARTIALS,
    ORG_USAGE,
    ORGS,
    OrgTables,
    plan_orgs_batch,
    plan_partials_batch,
)
from pipeline.usage.partials import decode_partial
from pipeline.usage.plans import HoldContext

BATCH_MAX = 1000
BATCH_WITHIN = 0.05


def attach_org_agents(pipeline: Pipeline) -> None:
    """Register the orgs and org-usage agents on the pipeline's App."""
    attach_orgs_agent(pipeline)
    attach_partials_agent(pipeline)


def org_tables(pipeline: Pipeline) -> dict[str, Any]:
    """The org tables by the names the planners write them under."""
    tables = pipeline.tables
    return {ORGS: tables.orgs, ORG_USAGE: tables.org_usage, HELD_PARTIALS: tables.held_partials}


def read_org_tables(pipeline: Pipeline, source: Any, orgs: set[str]) -> OrgTables:
    tables = pipeline.tables
    return OrgTables(
        read_all(tables.orgs, source, orgs),
        read_all(tables.org_usage, source, orgs),
        read_all(tables.held_partials, source, orgs),
    )


def attach_orgs_agent(pipeline: Pipeline) -> None:
    """quota.orgs into the orgs table, releasing the partials held for each org. (Their
    targets reach every worker through pipeline.service.org_directory.)"""
    app, topics = pipeline.app, pipeline.topics
    monitor = pipeline.settings.monitor
    writes_to = org_tables(pipeline)

    @app.agent(topics.orgs, name="orgs")
    async def orgs_agent(stream: Any) -> None:
        # Subscribed through faust; the records come in bulk (pipeline.engine.feeds).
        await process_runs(
            pipeline.orgs_feed,
            pipeline.gate,
            app.consumer,
            per_partition(apply_orgs),
            max_records=BATCH_MAX,
            within=BATCH_WITHIN,
        )

    async def apply_orgs(tp: TP, fetched: list[Any]) -> None:
        batch = unapplied_batch(pipeline, "orgs", tp, fetched)
        if batch is None:
            return
        decoded = await decode_records(pipeline, tp, batch.records, decode_org_record)
        entries = [(index, org_id, org) for index, (org_id, org) in enumerate(decoded.values)]
        async with pipeline.org_writes:
            stored = read_org_tables(pipeline, batch.source, {org_id for _, org_id, _ in entries})
            plan = plan_orgs_batch(entries, stored, monitor)
            await reject_failed(pipeline, tp, decoded.sources, plan.failed)
            await emit_triggers(pipeline, batch, plan)
            await write_plan(pipeline, batch, plan, writes_to)
        count_held(pipeline.held_orgs, tp.partition, plan.tally, "org")


def attach_partials_agent(pipeline: Pipeline) -> None:
    """Org partials into org usage and org triggers; those of orgs without a record are held."""
    app, topics, tables = pipeline.app, pipeline.topics, pipeline.tables
    monitor = pipeline.settings.monitor
    policy = pipeline.settings.hold.org_policy()
    ledger = pipeline.held_orgs
    writes_to = org_tables(pipeline)
    # Partials wait until the orgs already in quota.orgs are read (pipeline.engine.catchup).
    orgs_read = CatchUp(topics.orgs.get_topic_name(), pipeline.orgs_feed)

    @app.agent(topics.org_partials, name="org-usage")
    async def org_usage_agent(stream: Any) -> None:
        feed = pipeline.partials_feed

        async def ready(batch: Batch) -> bool:
            partitions = {run.tp.partition for run in batch.runs}
            return await orgs_read.wait(consumer_of(app), partitions, feed, batch.epoch)

        await process_runs(
            feed,
            pipeline.gate,
            app.consumer,
            per_partition(apply_partials),
            max_records=BATCH_MAX,
            within=BATCH_WITHIN,
            ready=ready,
        )

    async def apply_partials(tp: TP, fetched: list[Any]) -> None:
        # The partition's mark drops partials read again; the origins each org keeps drop
        # partials sent twice (a batch of requests applied again after a crash).
        batch = unapplied_batch(pipeline, "org-partials", tp, fetched)
        if batch is None:
            return
        decoded = await decode_records(
            pipeline, tp, batch.records, lambda key, value: decode_partial(value)
        )
        partials = list(enumerate(decoded.values))
        source, partition = batch.source, tp.partition
        async with pipeline.org_writes:
            swept = sweep_held(
                ledger,
                tables.held_partials,
                source,
                policy=policy,
                epoch=pipeline.partials_feed.epoch,
            )
            orgs = {partial.org_id for _, partial in partials}
            stored = read_org_tables(pipeline, source, orgs)
            stored = stored._replace(
                held={org: v for org, v in stored.held.items() if org not in swept.subjects}
            )
            room = ledger.room(partition, policy)
            context = HoldContext(policy, time.time(), partition, room)
            plan = plan_partials_batch(partials, stored, monitor, context)
            swept.into(plan, HELD_PARTIALS)
            await reject_failed(pipeline, tp, decoded.sources, plan.failed)
            await emit_triggers(pipeline, batch, plan)
            await write_plan(pipeline, batch, plan, writes_to)
        count_held(ledger, partition, plan.tally, "org")
