"""The org agents: quota.orgs into the orgs table; org partials in, org triggers out."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from pipeline.app import Pipeline
from pipeline.config import MonitorConfig
from pipeline.models import Org, decode_org
from pipeline.monitoring import compact_org, org_limits
from pipeline.partials import Bucket, Partial, decode_partial
from pipeline.quota import BatchPlan, UsageState, apply_records
from pipeline.streams import decode_batch, decode_keyed, gated_batches
from pipeline.tables import acting_for, read_all, write_all
from pipeline.transactions import emit_all
from pipeline.triggers import trigger_event
from pipeline.watermarks import mark_key

BATCH_MAX = 1000
BATCH_WITHIN = 0.05


def attach_org_agents(pipeline: Pipeline) -> None:
    """Register the orgs and org-usage agents on the pipeline's App."""
    app, topics, tables = pipeline.app, pipeline.topics, pipeline.tables
    monitor = pipeline.settings.monitor

    @app.agent(topics.orgs, name="orgs")
    async def orgs_agent(stream: Any) -> AsyncIterator[None]:
        async for events in gated_batches(pipeline, stream, BATCH_MAX, BATCH_WITHIN):
            orgs = await decode_keyed(pipeline, events, decode_org, key_name="org id")
            for event, org_id, org in orgs:
                async with pipeline.org_writes:
                    apply_org(pipeline, event, org_id, org)
            yield None

    @app.agent(topics.org_partials, name="org-usage")
    async def org_usage_agent(stream: Any) -> AsyncIterator[None]:
        async for events in gated_batches(pipeline, stream, BATCH_MAX, BATCH_WITHIN):
            by_partition = await decode_batch(pipeline, events, decode_partial)
            for partition, read in by_partition.items():
                source = read[-1][0]
                with acting_for(source):
                    partials, marks = unapplied_partials(
                        tables.applied, partition, [partial for _, partial in read]
                    )
                if not partials:
                    continue  # read again after a restart or a repeated delivery: applied
                # Events first, state after (see usage_agent); the lock keeps org changes out.
                async with pipeline.org_writes:
                    orgs = {partial.org_id for partial in partials}
                    plan = plan_org_batch(
                        read_all(tables.orgs, source, orgs),
                        read_all(tables.org_usage, source, orgs),
                        partials,
                        monitor,
                    )
                    triggers = [(org.encode(), payload) for org, payload in plan.triggers]
                    await emit_all(app, source, topics.triggers, triggers)
                    # The marks after the states: a crash between them applies them again.
                    await write_all(app, tables.org_usage, source, plan.states)
                    await write_all(app, tables.applied, source, marks)
            yield None


def apply_org(pipeline: Pipeline, event: Any, org_id: str, org: Org | None) -> None:
    """Store an org's quota; a tombstone forgets it. (Its targets reach every worker through
    pipeline.org_directory.)"""
    tables = pipeline.tables
    with acting_for(event):
        if org is None:
            tables.orgs.pop(org_id, None)
            tables.org_usage.pop(org_id, None)
        else:
            tables.orgs[org_id] = compact_org(org)


def unapplied_partials(
    applied: Mapping[str, Any], partition: int, partials: list[Partial]
) -> tuple[list[Partial], dict[str, int]]:
    """The partials of one partials partition not applied yet, and the marks they move.

    Partials of every requests partition interleave here, each origin's in offset order, so a
    partial is new when its origin offset is above the mark of its origin.
    """
    marks: dict[str, int] = {}
    fresh: list[Partial] = []
    for partial in partials:
        if partial.origin is None:  # from a release without origins: nothing to compare
            fresh.append(partial)
            continue
        origin_partition, offset = partial.origin
        key = mark_key("partials", partition, origin_partition)
        mark = marks.get(key, applied.get(key))
        if mark is None or offset > mark:
            fresh.append(partial)
            marks[key] = offset
    return fresh, marks


def plan_org_batch(
    orgs: Mapping[str, Any],
    org_usage: Mapping[str, Any],
    partials: list[Partial],
    monitor: MonitorConfig,
) -> BatchPlan:
    """Partial sums' effect: the orgs' new states and the org triggers (writes nothing)."""
    by_org: dict[str, list[Bucket]] = defaultdict(list)
    for partial in partials:
        by_org[partial.org_id].extend(partial.buckets)
    states: dict[str, dict[str, Any]] = {}
    triggers: list[tuple[str, bytes]] = []
    for org_id, buckets in by_org.items():
        stored = orgs.get(org_id)
        if stored is None:
            continue  # an org without an Org record has no quota to watch
        limits = org_limits(stored, monitor)
        applied = apply_records(UsageState.from_stored(org_usage.get(org_id)), buckets, limits)
        states[org_id] = applied.state.to_json()
        for crossing in applied.crossings:
            event = trigger_event(
                "org", org_id=org_id, key="", quota_max=limits.quota_max, crossing=crossing
            )
            triggers.append((org_id, orjson.dumps(event)))
    return BatchPlan(states, triggers)
