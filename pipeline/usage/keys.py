"""What a batch of gateway.requests, or of quota.sessions, does to the key tables (pure).

Tables (their values as JSON): ``sessions`` (monitoring.compact_session), ``key_usage``
(quota.UsageState) and ``held_requests`` (held.Held: the requests of keys whose session has not
come yet). A record that cannot be processed (one that breaks the contract was rejected before;
this is our own code, or a stored value, failing on it) is reported in ``BatchPlan.failed`` and
the rest of the batch goes on without it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from pipeline.config import MonitorConfig
from pipeline.records.requests import RequestCount
from pipeline.records.subjects import Session
from pipeline.usage.held import Held, hold
from pipeline.usage.plans import BatchPlan, HoldContext, WorkingTables
from pipeline.usage.quota import Crossing, Limits, UsageState, apply_records, reset
from pipeline.usage.series import sample, sampled_json
from pipeline.usage.triggers import trigger_event
from pipeline.usage.watching import compact_session, watched_key

KEY_USAGE = "key_usage"
SESSIONS = "sessions"
HELD_REQUESTS = "held_requests"


class KeyTables(NamedTuple):
    """What the key tables hold for a batch's keys (``held`` may leave out keys that have a
    session: requests are held only for keys without one)."""

    sessions: Mapping[str, Any]
    key_usage: Mapping[str, Any]
    held: Mapping[str, Any]


def key_triggers(
    key: str, org_id: str, limits: Limits, crossings: list[Crossing]
) -> list[tuple[str, bytes]]:
    """The (record key, TriggerEvent bytes) of a key's crossings."""
    return [
        (
            key,
            orjson.dumps(
                trigger_event(
                    "key", org_id=org_id, key=key, quota_max=limits.quota_max, crossing=crossing
                )
            ),
        )
        for crossing in crossings
    ]


def plan_key_batch(
    tables: KeyTables,
    records: Sequence[RequestCount],
    monitor: MonitorConfig,
    hold_context: HoldContext,
    offsets: Sequence[int] | None = None,
) -> BatchPlan:
    """One partition's share of a batch of gateway.requests: the keys' new usage states and
    the triggers to emit; the requests of keys without a session are held. Writes nothing.

    ``offsets`` (each record's, in the source partition, ascending) mark what each key's state
    has applied: the batch's last offset. A key's records at or below its mark were counted
    before and are skipped. The partition's applied_offsets mark is written after the tables,
    so a crash between them reads again records whose keys' states have them already (under
    at_least_once the writes of one batch are not one transaction). The mark is the batch's,
    not each key's own last offset: a batch is applied whole to each of its keys, in offset
    order, so every record of a key up to it has been; and it costs nothing per record."""
    by_key: dict[str, list[tuple[float, int]]] = defaultdict(list)
    org_of_key: dict[str, str] = {}
    for record in records:
        key = record.key
        by_key[key].append((record.ts, record.count))
        org_of_key[key] = record.org_id
    planner = _RequestsPlanner(BatchPlan(), monitor, hold_context, records, offsets)
    for key, counts in by_key.items():
        try:
            planner.plan(key, counts, org_of_key[key], tables)
        except Exception:  # one key's failure must not stop the others: find its records
            planner.plan_by_record(key, records, tables)
    return planner.result


class _RequestsPlanner:
    def __init__(
        self,
        result: BatchPlan,
        monitor: MonitorConfig,
        context: HoldContext,
        records: Sequence[RequestCount] = (),
        offsets: Sequence[int] | None = None,
    ) -> None:
        self.result = result
        self._monitor = monitor
        self._context = context
        self._records = records
        self._offsets = offsets
        #: (first, last) offset of the batch, when known.
        self._span = (offsets[0], offsets[-1]) if offsets else None
        self._by_key: dict[str, list[tuple[int, float, int]]] | None = None

    def _unapplied(self, key: str, applied: int | None) -> list[tuple[float, int]] | None:
        """The key's counts above ``applied``, when some of the batch was applied to it before
        (read again after a crash); None when none was (the usual case: nothing to filter)."""
        if self._span is None or applied is None or applied < self._span[0]:
            return None
        if self._by_key is None:  # once per batch read again, for all its keys
            assert self._offsets is not None
            self._by_key = defaultdict(list)
            for record, offset in zip(self._records, self._offsets, strict=True):
                self._by_key[record.key].append((offset, record.ts, record.count))
        return [(ts, count) for offset, ts, count in self._by_key[key] if offset > applied]

    def plan(
        self, key: str, counts: list[tuple[float, int]], org_id: str, tables: KeyTables
    ) -> None:
        """Apply one key's counts to its usage, or hold them until its session comes."""
        plan = self.result
        stored = tables.sessions.get(key)
        if stored is None:
            context = self._context
            held = Held.from_stored(tables.held.get(key))
            fresh = self._unapplied(key, held.applied if held is not None else None)
            if fresh is not None:
                if not fresh:
                    return
                counts = fresh
            entry = hold(
                held,
                counts,
                now=context.now,
                partition=context.partition,
                policy=context.policy,
                room=context.room,
                tally=plan.tally,
            )
            if entry is not None:
                entry.org_id = org_id
                if self._span is not None:
                    entry.applied = self._span[1]
                plan.write(HELD_REQUESTS, key, entry.to_json())
            elif key in tables.held:
                plan.write(HELD_REQUESTS, key, None)  # expired, and nothing new fitted
            return
        watched = watched_key(stored, self._monitor)
        state = UsageState.from_stored(tables.key_usage.get(key))
        fresh = self._unapplied(key, state.applied)
        if fresh is not None:
            if not fresh:
                return
            counts = fresh
        applied = apply_records(state, counts, watched.limits)
        data = sampled_json(applied.state, counts)
        if self._span is not None:
            data["applied"] = self._span[1]
        plan.write(KEY_USAGE, key, data)
        if applied.crossings:  # (rare: most keys of a batch reach no threshold)
            # The session's org wins; gateways always say which org they counted for.
            org = watched.org_id or org_id
            plan.triggers += key_triggers(key, org, watched.limits, applied.crossings)

    def plan_by_record(self, key: str, records: Sequence[RequestCount], tables: KeyTables) -> None:
        """A key whose records failed together, planned one record at a time: each that
        fails alone is reported, the others count."""
        usage, held = tables.key_usage.get(key), tables.held.get(key)
        for index, record in enumerate(records):
            if record.key != key:
                continue
            # Each record reads what the ones before it wrote.
            now = KeyTables(
                tables.sessions,
                {} if usage is None else {key: usage},
                {} if held is None else {key: held},
            )
            offset = None if self._offsets is None else self._offsets[index]
            attempt = _RequestsPlanner(
                BatchPlan(tally=self.result.tally),
                self._monitor,
                self._context,
                [record],
                None if offset is None else [offset],
            )
            try:
                attempt.plan(key, [(record.ts, record.count)], record.org_id, now)
            except Exception as exc:
                self.result.fail(index, exc)
                continue
            writes = attempt.result.writes
            usage = writes.get(KEY_USAGE, {}).get(key, usage)
            held = writes.get(HELD_REQUESTS, {}).get(key, held)
            self.result.merge(attempt.result)


def plan_session_batch(
    entries: Sequence[tuple[int, str, Session | None]],
    tables: KeyTables,
    monitor: MonitorConfig,
) -> BatchPlan:
    """One partition's share of a batch of quota.sessions, in order: each (index, key,
    session or None for a tombstone) stores the session and releases the requests held for
    its key; a tombstone stops monitoring the key and forgets its usage and what is held."""
    planner = _SessionsPlanner(tables, monitor)
    for index, key, session in entries:
        try:
            planner.plan(key, session)
        except Exception as exc:
            planner.result.fail(index, exc)
    return planner.result


class _SessionsPlanner:
    def __init__(self, tables: KeyTables, monitor: MonitorConfig) -> None:
        self.result = BatchPlan()
        self._monitor = monitor
        self._working = WorkingTables(
            self.result,
            {SESSIONS: tables.sessions, KEY_USAGE: tables.key_usage, HELD_REQUESTS: tables.held},
        )

    def plan(self, key: str, session: Session | None) -> None:
        working = self._working
        waiting = Held.from_stored(working.get(HELD_REQUESTS, key))
        if session is None:
            working.change(SESSIONS, key, None)
            working.change(KEY_USAGE, key, None)
            if waiting is not None:
                working.change(HELD_REQUESTS, key, None)
                self.result.tally.forget(waiting, "deleted")
            return
        stored = compact_session(session)
        state = UsageState.from_stored(working.get(KEY_USAGE, key))
        if session.reset_quota:
            state = reset(state)
        if waiting is not None:
            state = self._release(key, stored, state, waiting)
        working.change(SESSIONS, key, stored)
        if working.has(KEY_USAGE, key) or state != UsageState():
            working.change(KEY_USAGE, key, state.to_json())

    def _release(
        self, key: str, stored: dict[str, Any], state: UsageState, waiting: Held
    ) -> UsageState:
        """Apply the requests held for ``key`` now that its session has come."""
        if state.absorbed != waiting.since:  # else applied already, before a crash
            watched = watched_key(stored, self._monitor)
            counts = waiting.counts()
            applied = apply_records(state, counts, watched.limits)
            new = sample(applied.state, counts)
            # What was held counts as applied: read again after a crash, it is not counted.
            marks = [mark for mark in (state.applied, waiting.applied) if mark is not None]
            state = UsageState(
                new.current,
                new.previous,
                waiting.since,
                series=new.series,
                applied=max(marks) if marks else None,
            )
            org = watched.org_id or waiting.org_id
            self.result.triggers += key_triggers(key, org, watched.limits, applied.crossings)
        self._working.change(HELD_REQUESTS, key, None)
        self.result.tally.forget(waiting, None)
        return state
