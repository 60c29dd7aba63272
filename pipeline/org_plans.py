"""What a batch of org partials, or of quota.orgs, does to the org tables (pure).

Tables (their values as JSON): ``orgs`` (monitoring.compact_org), ``org_usage``
(quota.UsageState, with the origins of the partials applied) and ``held_partials`` (held.Held:
the partial sums of orgs whose record has not come yet). Each partial is applied once: an org's
partials from one partition of gateway.requests come in increasing origin order, and the usage
state (or what is held) keeps the last origin applied (partials.is_new).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from pipeline.config import MonitorConfig
from pipeline.held import Held, hold
from pipeline.models import Org
from pipeline.monitoring import compact_org, org_limits
from pipeline.partials import Partial, is_new, marked
from pipeline.plans import BatchPlan, HoldContext, WorkingTables
from pipeline.quota import Crossing, Limits, UsageState, apply_records
from pipeline.triggers import trigger_event

ORGS = "orgs"
ORG_USAGE = "org_usage"
HELD_PARTIALS = "held_partials"


class OrgTables(NamedTuple):
    """What the org tables hold for a batch's orgs."""

    orgs: Mapping[str, Any]
    org_usage: Mapping[str, Any]
    held: Mapping[str, Any]


def org_triggers(org_id: str, limits: Limits, crossings: list[Crossing]) -> list[tuple[str, bytes]]:
    """The (record key, TriggerEvent bytes) of an org's crossings."""
    return [
        (
            org_id,
            orjson.dumps(
                trigger_event(
                    "org", org_id=org_id, key="", quota_max=limits.quota_max, crossing=crossing
                )
            ),
        )
        for crossing in crossings
    ]


def merged_origins(
    ours: Mapping[str, list[int]] | None, theirs: Mapping[str, list[int]]
) -> dict[str, list[int]]:
    """Per partition of origin, the later of two marks."""
    merged = dict(ours or {})
    for partition, mark in theirs.items():
        if partition not in merged or mark > merged[partition]:
            merged[partition] = mark
    return merged


class _OrgPlanner:
    """Plans entries one by one over working copies of the tables: each reads what the ones
    before it wrote."""

    def __init__(self, tables: OrgTables, monitor: MonitorConfig) -> None:
        self.result = BatchPlan()
        self._monitor = monitor
        self._working = WorkingTables(
            self.result,
            {ORGS: tables.orgs, ORG_USAGE: tables.org_usage, HELD_PARTIALS: tables.held},
        )

    def partial(self, partial: Partial, context: HoldContext) -> None:
        """Apply one partial to its org's usage, or hold it until the org's record comes."""
        org_id, working = partial.org_id, self._working
        stored = working.get(ORGS, org_id)
        if stored is None:
            waiting = Held.from_stored(working.get(HELD_PARTIALS, org_id))
            if waiting is not None and not is_new(partial.origin, waiting.origins):
                return  # held already (read twice)
            entry = hold(
                waiting,
                partial.buckets,
                now=context.now,
                partition=context.partition,
                policy=context.policy,
                room=context.room,
                tally=self.result.tally,
            )
            if entry is not None:
                entry.origins = marked(entry.origins, partial.origin)
                working.change(HELD_PARTIALS, org_id, entry.to_json())
            elif waiting is not None:
                working.change(HELD_PARTIALS, org_id, None)  # expired, nothing new fitted
            return
        state = UsageState.from_stored(working.get(ORG_USAGE, org_id))
        if not is_new(partial.origin, state.origins):
            return  # applied already (read twice)
        limits = org_limits(stored, self._monitor)
        applied = apply_records(state, partial.buckets, limits)
        new = applied.state
        state = UsageState(
            new.current, new.previous, new.absorbed, marked(new.origins, partial.origin)
        )
        working.change(ORG_USAGE, org_id, state.to_json())
        self.result.triggers += org_triggers(org_id, limits, applied.crossings)

    def org(self, org_id: str, org: Org | None) -> None:
        """Store an org's record and release what is held for it; a tombstone forgets both."""
        working = self._working
        waiting = Held.from_stored(working.get(HELD_PARTIALS, org_id))
        if waiting is not None:
            working.change(HELD_PARTIALS, org_id, None)
        if org is None:
            working.change(ORGS, org_id, None)
            working.change(ORG_USAGE, org_id, None)
            if waiting is not None:
                self.result.tally.forget(waiting, "deleted")
            return
        stored = compact_org(org)
        working.change(ORGS, org_id, stored)
        if waiting is None:
            return
        state = UsageState.from_stored(working.get(ORG_USAGE, org_id))
        if state.absorbed != waiting.since:  # else applied already, before a crash
            limits = org_limits(stored, self._monitor)
            applied = apply_records(state, waiting.counts(), limits)
            origins = merged_origins(applied.state.origins, waiting.origins)
            state = UsageState(
                applied.state.current, applied.state.previous, waiting.since, origins
            )
            working.change(ORG_USAGE, org_id, state.to_json())
            self.result.triggers += org_triggers(org_id, limits, applied.crossings)
        self.result.tally.forget(waiting, None)


def plan_partials_batch(
    partials: Sequence[tuple[int, Partial]],
    tables: OrgTables,
    monitor: MonitorConfig,
    hold_context: HoldContext,
) -> BatchPlan:
    """One partition's share of a batch of org partials (index, partial), in order: the orgs'
    new usage states and the org triggers; partials of orgs without a record are held."""
    planner = _OrgPlanner(tables, monitor)
    for index, partial in partials:
        try:
            planner.partial(partial, hold_context)
        except Exception as exc:
            planner.result.fail(index, exc)
    return planner.result


def plan_orgs_batch(
    entries: Sequence[tuple[int, str, Org | None]], tables: OrgTables, monitor: MonitorConfig
) -> BatchPlan:
    """One partition's share of a batch of quota.orgs (index, org id, org or None for a
    tombstone), in order."""
    planner = _OrgPlanner(tables, monitor)
    for index, org_id, org in entries:
        try:
            planner.org(org_id, org)
        except Exception as exc:
            planner.result.fail(index, exc)
    return planner.result
