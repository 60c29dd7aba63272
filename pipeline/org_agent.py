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
from pipeline.partials import Bucket, decode_partial
from pipeline.quota import BatchPlan, UsageState, apply_records, write_states
from pipeline.streams import decode_batch, decode_keyed, gated_batches
from pipeline.tables import acting_for
from pipeline.transactions import emit_all
from pipeline.triggers import trigger_event

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
            for partials in by_partition.values():
                source = partials[-1][0]
                # Events first, state after (see usage_agent); the lock keeps org changes out.
                async with pipeline.org_writes:
                    with acting_for(source):
                        plan = plan_org_batch(
                            tables.orgs, tables.org_usage, [p for _, p in partials], monitor
                        )
                    triggers = [(org.encode(), payload) for org, payload in plan.triggers]
                    await emit_all(app, source, topics.triggers, triggers)
                    with acting_for(source):
                        write_states(tables.org_usage, plan)
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


def plan_org_batch(
    orgs: Mapping[str, Any],
    org_usage: Mapping[str, Any],
    partials: list[tuple[str, list[Bucket]]],
    monitor: MonitorConfig,
) -> BatchPlan:
    """Partial sums' effect: the orgs' new states and the org triggers (writes nothing)."""
    by_org: dict[str, list[Bucket]] = defaultdict(list)
    for org_id, buckets in partials:
        by_org[org_id].extend(buckets)
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
