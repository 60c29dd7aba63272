"""The org agents: quota.orgs into the orgs table; org partials into org usage and org triggers.

Thin wiring: decode, call the pure planners of :mod:`pipeline.usage.orgs`, emit, write. Both
read their topic in bulk (pipeline.engine.feeds).
"""

from __future__ import annotations

import time
from typing import Any

from pipeline.engine import TP, Batch, CatchUp, SourceEvent, Table
from pipeline.records.subjects import decode_org_record
from pipeline.usage.batches import (
    count_held,
    decode_records,
    emit_triggers,
    per_partition,
    reject_failed,
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
from pipeline.wiring import Pipeline

BATCH_MAX = 1000
BATCH_WITHIN = 0.05


def attach_org_agents(pipeline: Pipeline) -> None:
    """Register the orgs and org-usage agents."""
    attach_orgs_agent(pipeline)
    attach_partials_agent(pipeline)


def org_tables(pipeline: Pipeline) -> dict[str, Table]:
    """The org tables by the names the planners write them under."""
    tables = pipeline.tables
    return {ORGS: tables.orgs, ORG_USAGE: tables.org_usage, HELD_PARTIALS: tables.held_partials}


def read_org_tables(
    pipeline: Pipeline,
    source: SourceEvent,
    orgs: set[str],
    *,
    without_held: frozenset[str] = frozenset(),
) -> OrgTables:
    """What the org tables hold for ``orgs`` (``without_held``: held values just swept)."""
    tables = pipeline.tables
    return OrgTables(
        tables.orgs.read(source, orgs),
        tables.org_usage.read(source, orgs),
        tables.held_partials.read(source, orgs - without_held),
    )


def attach_orgs_agent(pipeline: Pipeline) -> None:
    """quota.orgs into the orgs table, releasing the usage held for each org. (Their targets
    reach every worker through pipeline.service.org_directory.)"""
    monitor = pipeline.settings.monitor
    writes_to = org_tables(pipeline)

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

    pipeline.engine.bulk_agent(
        pipeline.topics.orgs,
        pipeline.feeds.orgs,
        per_partition(apply_orgs),
        name="orgs",
        max_records=BATCH_MAX,
        within=BATCH_WITHIN,
    )


def attach_partials_agent(pipeline: Pipeline) -> None:
    """Org partials into org usage and org triggers; those of orgs without a record are held."""
    engine, topics, tables = pipeline.engine, pipeline.topics, pipeline.tables
    monitor = pipeline.settings.monitor
    policy = pipeline.settings.hold.org_policy()
    ledger, feed = pipeline.held_orgs, pipeline.feeds.partials
    writes_to = org_tables(pipeline)
    # Partials wait until the orgs already in quota.orgs are read (pipeline.engine.catchup).
    orgs_read = CatchUp(lambda: engine.consumer, topics.orgs.name, pipeline.feeds.orgs)

    async def ready(batch: Batch) -> bool:
        partitions = {run.tp.partition for run in batch.runs}
        return await orgs_read.wait(partitions, feed, batch.epoch)

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
                ledger, tables.held_partials, source, policy=policy, epoch=feed.epoch
            )
            orgs = {partial.org_id for _, partial in partials}
            stored = read_org_tables(pipeline, source, orgs, without_held=swept.subjects)
            room = ledger.room(partition, policy)
            context = HoldContext(policy, time.time(), partition, room)
            plan = plan_partials_batch(partials, stored, monitor, context)
            swept.into(plan, HELD_PARTIALS)
            await reject_failed(pipeline, tp, decoded.sources, plan.failed)
            await emit_triggers(pipeline, batch, plan)
            await write_plan(pipeline, batch, plan, writes_to)
        count_held(ledger, partition, plan.tally, "org")

    engine.bulk_agent(
        topics.org_partials,
        feed,
        per_partition(apply_partials),
        name="org-usage",
        max_records=BATCH_MAX,
        within=BATCH_WITHIN,
        ready=ready,
    )
