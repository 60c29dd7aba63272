"""What a batch of org partials, or of quota.orgs, does to the org tables (pure).

Tables (their values as JSON): ``orgs`` (monitoring.compact_org), ``org_usage``
(quota.UsageState, with the origins of the partials applied) and ``held_partials`` (held.Held:
the usage of orgs whose record has not come yet, while org triggers are on). Each partial is
applied once: an org's partials from one partition of gateway.requests come in increasing
origin order, and its usage state keeps the last origin applied (partials.is_new), whether or
not the org has a record yet.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from pipeline.config import MonitorConfig
from pipeline.records.subjects import Org
from pipeline.usage.held import Held, hold
from pipeline.usage.partials import Partial, is_new, marked
from pipeline.usage.plans import BatchPlan, HoldContext, WorkingTables
from pipeline.usage.quota import Crossing, Limits, UsageState, apply_records
from pipeline.usage.series import sample
from pipeline.usage.triggers import trigger_event
from pipeline.usage.watching import compact_org, org_limits

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


def holds_orgs(monitor: MonitorConfig) -> bool:
    """Whether the usage of an org without a record is held for it. Only while org triggers
    are on: otherwise nothing can fire for an org, and holding the usage of every org that has
    no record (most of them, where org quotas are not used) would cost a table write per org
    per batch for nothing."""
    return monitor.enable_trigger_monitors and monitor.monitor_org_keys


def plan_partials_batch(
    partials: Sequence[tuple[int, Partial]],
    tables: OrgTables,
    monitor: MonitorConfig,
    hold_context: HoldContext,
) -> BatchPlan:
    """One partition's share of a batch of org partials (index, partial), in order: the orgs'
    new usage states and the org triggers; the partials of an org without a record are held
    (while org triggers are on)."""
    by_org: dict[str, list[tuple[int, Partial]]] = defaultdict(list)
    for index, partial in partials:
        by_org[partial.org_id].append((index, partial))
    planner = _PartialsPlanner(BatchPlan(), monitor, hold_context)
    for org_id, items in by_org.items():
        try:
            planner.plan(org_id, [partial for _, partial in items], tables)
        except Exception:  # one org's failure must not stop the others: find its partials
            planner.plan_by_partial(org_id, items, tables)
    return planner.result


class _PartialsPlanner:
    def __init__(self, result: BatchPlan, monitor: MonitorConfig, context: HoldContext) -> None:
        self.result = result
        self._monitor = monitor
        self._context = context

    def plan(self, org_id: str, partials: list[Partial], tables: OrgTables) -> None:
        """Apply one org's new partials to its usage, or hold them until its record comes."""
        stored = tables.orgs.get(org_id)
        if stored is None and not holds_orgs(self._monitor):
            return  # nothing can fire for it, and there is no quota to count against
        state = UsageState.from_stored(tables.org_usage.get(org_id))
        origins = state.origins
        buckets = []
        for partial in partials:
            if is_new(partial.origin, origins):  # else applied already (sent twice)
                origins = marked(origins, partial.origin)
                buckets += partial.buckets
        if not buckets:
            return
        plan = self.result
        if stored is None:
            self._hold(org_id, buckets, tables)
            new = UsageState(state.current, state.previous, state.absorbed, origins, state.series)
            plan.write(ORG_USAGE, org_id, new.to_json())
            return
        limits = org_limits(stored, self._monitor)
        applied = apply_records(state, buckets, limits)
        after = sample(applied.state, buckets)
        new = UsageState(after.current, after.previous, state.absorbed, origins, after.series)
        plan.write(ORG_USAGE, org_id, new.to_json())
        plan.triggers += org_triggers(org_id, limits, applied.crossings)

    def _hold(self, org_id: str, buckets: list[tuple[float, int]], tables: OrgTables) -> None:
        context = self._context
        waiting = Held.from_stored(tables.held.get(org_id))
        entry = hold(
            waiting,
            buckets,
            now=context.now,
            partition=context.partition,
            policy=context.policy,
            room=context.room,
            tally=self.result.tally,
        )
        if entry is not None:
            self.result.write(HELD_PARTIALS, org_id, entry.to_json())
        elif waiting is not None:
            self.result.write(HELD_PARTIALS, org_id, None)  # expired, nothing new fitted

    def plan_by_partial(
        self, org_id: str, items: list[tuple[int, Partial]], tables: OrgTables
    ) -> None:
        """An org whose partials failed together, planned one partial at a time: each that
        fails alone is reported, the others count."""
        usage, held = tables.org_usage.get(org_id), tables.held.get(org_id)
        for index, partial in items:
            now = OrgTables(
                tables.orgs,
                {} if usage is None else {org_id: usage},
                {} if held is None else {org_id: held},
            )
            attempt = _PartialsPlanner(
                BatchPlan(tally=self.result.tally), self._monitor, self._context
            )
            try:
                attempt.plan(org_id, [partial], now)
            except Exception as exc:
                self.result.fail(index, exc)
                continue
            writes = attempt.result.writes
            usage = writes.get(ORG_USAGE, {}).get(org_id, usage)
            held = writes.get(HELD_PARTIALS, {}).get(org_id, held)
            self.result.merge(attempt.result)


def plan_orgs_batch(
    entries: Sequence[tuple[int, str, Org | None]], tables: OrgTables, monitor: MonitorConfig
) -> BatchPlan:
    """One partition's share of a batch of quota.orgs (index, org id, org or None for a
    tombstone), in order: each stores its org and releases the usage held for it; a tombstone
    forgets its usage and what is held."""
    planner = _OrgsPlanner(tables, monitor)
    for index, org_id, org in entries:
        try:
            planner.plan(org_id, org)
        except Exception as exc:
            planner.result.fail(index, exc)
    return planner.result


class _OrgsPlanner:
    def __init__(self, tables: OrgTables, monitor: MonitorConfig) -> None:
        self.result = BatchPlan()
        self._monitor = monitor
        self._working = WorkingTables(
            self.result,
            {ORGS: tables.orgs, ORG_USAGE: tables.org_usage, HELD_PARTIALS: tables.held},
        )

    def plan(self, org_id: str, org: Org | None) -> None:
        working = self._working
        waiting = Held.from_stored(working.get(HELD_PARTIALS, org_id))
        if waiting is not None:
            working.change(HELD_PARTIALS, org_id, None)
        if org is None:
            working.change(ORGS, org_id, None)
            # Its usage goes; the origins of the partials applied stay, so that none of them
            # counts again if the org comes back.
            origins = UsageState.from_stored(working.get(ORG_USAGE, org_id)).origins
            working.change(
                ORG_USAGE, org_id, UsageState(origins=origins).to_json() if origins else None
            )
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
            counts = waiting.counts()
            applied = apply_records(state, counts, limits)
            new = sample(applied.state, counts)
            state = UsageState(new.current, new.previous, waiting.since, new.origins, new.series)
            working.change(ORG_USAGE, org_id, state.to_json())
            self.result.triggers += org_triggers(org_id, limits, applied.crossings)
        self.result.tally.forget(waiting, None)
