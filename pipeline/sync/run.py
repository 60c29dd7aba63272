"""`quota-pipeline sessions sync`: passes that bring quota.sessions and quota.orgs up to a Tyk
Gateway's key and org sessions.

A pass reads what the topics hold (unless watch mode kept it from the last pass), lists and
fetches the gateway's sessions, asks :mod:`pipeline.sync.changes` what differs, publishes that,
and prints one line. Records are appended to record batches, each sent without waiting for the
one before: one send per record awaited in turn would take minutes for a million sessions.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from pipeline.config import Settings, TykSettings
from pipeline.engine.clients import producer, scan_topic, send_keyed
from pipeline.errors import BrokerUnavailable, GatewayUnavailable, UsageError
from pipeline.sync.changes import (
    HEADERS,
    OrgChanges,
    SessionChanges,
    SessionState,
    apply_changes,
    canonical,
    describe_invalid,
    diff_orgs,
    diff_sessions,
    from_sync,
    session_subset,
)
from pipeline.sync.tyk_api import TykGateway


@dataclass
class Known:
    """What quota.sessions and quota.orgs hold, as a pass needs it."""

    sessions: SessionState = field(default_factory=SessionState)
    #: org id -> its current record (a JSON object), for merging Tyk's quota fields into it.
    orgs: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class PassReport:
    """One pass: what it found and did, and how long each part took."""

    url: str
    sessions: SessionChanges
    orgs: OrgChanges
    #: Reading quota.sessions and quota.orgs (0 in watch mode after the first pass).
    read_seconds: float
    #: Listing and fetching the sessions: one GET per key.
    fetch_seconds: float
    #: Deciding what changed (each new or changed session is checked as the worker reads it).
    diff_seconds: float
    publish_seconds: float
    seconds: float

    @property
    def sessions_seen(self) -> int:
        """Sessions the pass accounted for: fetched ones, and synced ones found gone."""
        changes = self.sessions
        fetched = changes.new + changes.changed + changes.unchanged + len(changes.invalid)
        return fetched + len(changes.tombstones)

    @property
    def published(self) -> int:
        return len(self.sessions.records) + len(self.sessions.tombstones)

    def line(self) -> str:
        sessions, orgs = self.sessions, self.orgs
        invalid = f", {len(sessions.invalid)} not valid" if sessions.invalid else ""
        org_count = len(orgs.records) + orgs.unchanged + len(orgs.invalid)
        return (
            f"synced {self.sessions_seen} sessions from {self.url}: {sessions.new} new, "
            f"{sessions.changed} changed, {len(sessions.tombstones)} gone, "
            f"{sessions.unchanged} unchanged{invalid}; {org_count} orgs "
            f"({len(orgs.records)} changed) in {self.seconds:.1f} s"
        )


def gateway_settings(tyk: TykSettings, url: str | None) -> TykSettings:
    """The ``tyk`` section with ``--tyk-gateway URL`` in place of ``gateway_url``."""
    if url is None:
        return tyk
    try:
        return TykSettings.model_validate({**tyk.model_dump(), "gateway_url": url})
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise UsageError(f"--tyk-gateway: {reason}") from None


async def read_known(settings: Settings) -> Known:
    """quota.sessions and quota.orgs as they end now."""
    known = Known()

    def session(key: bytes | None, value: bytes | None, headers: Any) -> None:
        if key is not None:
            known.sessions.fold(key.decode(errors="replace"), value, from_sync(headers))

    def org(key: bytes | None, value: bytes | None, headers: Any) -> None:
        if key is None:
            return
        org_id = key.decode(errors="replace")
        decoded = _object(value)
        if decoded is None:
            known.orgs.pop(org_id, None)
        else:
            known.orgs[org_id] = decoded

    for topic, apply in ((settings.topics.sessions, session), (settings.topics.orgs, org)):
        if not await scan_topic(settings, topic, apply):
            raise UsageError(
                f"topic {topic} does not exist: create it with `quota-pipeline topics create`"
            )
    return known


def _object(value: bytes | None) -> dict[str, Any] | None:
    """A record value as a JSON object; None for a tombstone. A value that is not an object
    (which the worker rejects) counts as an empty record: Tyk's quota fields replace it."""
    if value is None:
        return None
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


@contextmanager
def fetch_progress(total: int, shown: bool) -> Iterator[Callable[[], None] | None]:
    """A progress bar of the fetches on stderr, only when ``shown`` and stderr is a terminal
    (a pipe or a log file gets the summary line alone)."""
    console = Console(stderr=True)
    if not shown or not console.is_terminal or total == 0:
        yield None
        return
    columns = (TextColumn("fetching sessions"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeRemainingColumn(), console=console, transient=True) as progress:
        task = progress.add_task("sessions", total=total)
        yield lambda: progress.advance(task)


async def fetch(
    settings: Settings, gateway: TykGateway, progress: bool
) -> tuple[dict[str, bytes], dict[str, dict[str, Any]]]:
    """Every key's encoded subset, and every org's session, from the gateway."""
    keys = await gateway.list_keys()
    fetched: dict[str, bytes] = {}
    org_ids: dict[str, None] = {}

    def found(key: str, session: dict[str, Any]) -> None:
        subset = session_subset(session)
        fetched[key] = canonical(subset)
        if isinstance(subset["org_id"], str) and subset["org_id"]:
            org_ids.setdefault(subset["org_id"])

    with fetch_progress(len(keys), progress) as advance:
        gone = await gateway.fetch_sessions(keys, found, advance)
    if keys and gone == len(keys) and not settings.tyk.hashed_keys:
        # What a hashing gateway answers when its hashes are asked for as keys: better stop
        # than tombstone every session.
        raise GatewayUnavailable(
            f"every key the Tyk Gateway at {gateway.shown} listed answered 'Key not found': if "
            "it hashes keys (hash_keys in tyk.conf), set tyk.hashed_keys to true"
        )
    listed = await gateway.list_orgs()
    orgs: dict[str, dict[str, Any]] = {}
    await gateway.fetch_orgs(list(org_ids) if listed is None else listed, orgs.__setitem__)
    return fetched, orgs


async def publish(
    settings: Settings, batches: Iterable[tuple[str, Iterable[tuple[str, bytes | None]]]]
) -> None:
    """Send (topic, records) with the sync's header from one idempotent producer, in record
    batches per partition rather than a send per record; return once the broker has every
    one."""
    async with producer(settings) as client:
        for topic, records in batches:
            keyed = ((key.encode(), value) for key, value in records)
            await send_keyed(client, topic, keyed, HEADERS)


async def sync_pass(
    settings: Settings, gateway: TykGateway, known: Known | None, *, progress: bool = False
) -> tuple[PassReport, Known]:
    """One pass; ``known`` is what the topics held after the last one (None reads them)."""
    started = time.perf_counter()
    if known is None:
        known = await read_known(settings)
    read_at = time.perf_counter()
    fetched, org_sessions = await fetch(settings, gateway, progress)
    fetched_at = time.perf_counter()
    sessions = diff_sessions(known.sessions, fetched)
    del fetched  # a million subsets: not kept past the diff
    orgs = diff_orgs(known.orgs, org_sessions)
    topics = settings.topics
    batches: list[tuple[str, Iterable[tuple[str, bytes | None]]]] = [
        (topics.sessions, sessions.records),
        (topics.sessions, [(key, None) for key in sessions.tombstones]),
        (topics.orgs, orgs.records),
    ]
    published_at = time.perf_counter()
    if sessions.records or sessions.tombstones or orgs.records:
        await publish(settings, batches)
    done = time.perf_counter()
    apply_changes(known.sessions, sessions)
    for org_id, value in orgs.records:
        known.orgs[org_id] = orjson.loads(value)
    for line in describe_invalid(sessions.invalid, "session") + describe_invalid(
        orgs.invalid, "org"
    ):
        print(f"quota-pipeline: {line}", file=sys.stderr)
    report = PassReport(
        url=gateway.shown,
        sessions=sessions,
        orgs=orgs,
        read_seconds=read_at - started,
        fetch_seconds=fetched_at - read_at,
        diff_seconds=published_at - fetched_at,
        publish_seconds=done - published_at,
        seconds=done - started,
    )
    return report, known


async def sync_sessions(settings: Settings, watch: float | None = None) -> None:
    """One pass, or with ``watch`` a pass every ``watch`` seconds until SIGTERM or Ctrl-C.

    In watch mode, what the topics hold is kept in memory between passes; a pass after the
    first that fails (the gateway or the broker away) is reported in one line, and the next
    one reads the topics again.
    """
    stop = _stop_on_sigterm() if watch is not None else None
    known: Known | None = None
    first = True
    try:
        async with TykGateway(settings.tyk) as gateway:
            while True:
                try:
                    report, known = await sync_pass(settings, gateway, known, progress=first)
                except (GatewayUnavailable, BrokerUnavailable) as exc:
                    if first or watch is None:
                        raise
                    print(f"quota-pipeline: {exc}; next pass in {watch:g} s", file=sys.stderr)
                    known = None
                else:
                    print(report.line(), flush=True)
                    first = False
                if watch is None:
                    return
                await asyncio.sleep(watch)  # the watch interval
    except asyncio.CancelledError:
        if stop is None or not stop():
            raise
    finally:
        if stop is not None:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)


def _stop_on_sigterm() -> Callable[[], bool]:
    """SIGTERM ends watch mode as Ctrl-C does (a container's stop): cancels this task. Returns
    whether that happened (and takes the cancellation back, so the command ends cleanly)."""
    task = asyncio.current_task()
    assert task is not None
    stopped = False

    def terminate() -> None:
        nonlocal stopped
        stopped = True
        task.cancel()

    def was_stopped() -> bool:
        if stopped:
            task.uncancel()
        return stopped

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, terminate)
    return was_stopped
