"""`quota-pipeline dlq` and `replay`: operators inspect dead letters and re-deliver events
through the same path as the worker, with the same webhook-id.

Re-deliveries are written as jobs to the first retry tier of the app (``<app>-retry-0``); the
running workers deliver them as they deliver any retry. Nothing here sends a webhook itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from pipeline.config import Settings
from pipeline.delivery.jobs import DeliveryJob
from pipeline.delivery.redrive import jobs_for, redrive
from pipeline.engine import clients
from pipeline.engine.clients import producer
from pipeline.errors import UsageError


def parse_time(text: str) -> float:
    """Unix seconds, or an ISO-8601 time (UTC unless it says otherwise)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"{text!r} is neither unix seconds nor an ISO-8601 time") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


@dataclass(frozen=True)
class Window:
    """A time range and optional filters; None means unbounded."""

    since: float | None = None
    until: float | None = None

    def holds(self, when: float) -> bool:
        return (self.since is None or when >= self.since) and (
            self.until is None or when < self.until
        )


async def read_topic(settings: Settings, topic: str) -> list[Any]:
    """Every committed record of ``topic`` up to its end when called, in partition order."""
    records = await clients.read_topic(settings, topic)
    if records is None:
        raise UsageError(f"topic {topic} does not exist")
    return records


def select_dead_letters(
    records: Iterable[Any], *, window: Window, target: str | None, event_id: str | None = None
) -> list[dict[str, Any]]:
    """Dead letters matching the filters (by last attempt time and target)."""
    letters = []
    for record in records:
        try:
            letter = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            continue
        if target is not None and letter.get("target") != target:
            continue
        if event_id is not None and letter.get("id") != event_id:
            continue
        if window.holds(float(letter.get("last_attempt_at") or 0)):
            letters.append(letter)
    return letters


def select_triggers(
    records: Iterable[Any], *, window: Window, key: str | None, org: str | None
) -> list[dict[str, Any]]:
    """TriggerEvents produced within the window (record time), by key and org."""
    events = []
    for record in records:
        if not window.holds(record.timestamp / 1000):
            continue
        try:
            event = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            continue
        if key is not None and event.get("key") != key:
            continue
        if org is not None and event.get("org") != org:
            continue
        events.append(event)
    return events


async def enqueue(settings: Settings, jobs: list[DeliveryJob], console: Console) -> None:
    """Write jobs to the first retry tier, with a progress bar."""
    if not settings.delivery.retry_schedule:
        raise UsageError("re-delivery needs delivery.retry_schedule (the retry tiers)")
    topic = f"{settings.app_id}-retry-0"
    async with producer(settings) as client:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("re-delivering", total=len(jobs))
            for job in jobs:
                await client.send_and_wait(topic, job.to_bytes(), key=job.event_id.encode())
                progress.advance(task)


def attempted_at(letter: dict[str, Any]) -> str:
    when = dt.datetime.fromtimestamp(float(letter["last_attempt_at"]), dt.UTC)
    return when.isoformat(timespec="seconds")


def letters_lines(letters: list[dict[str, Any]]) -> list[str]:
    """One tab-separated line per letter, for scripts: id, target, attempts, last status,
    last attempt (UTC), last error (its whitespace made single spaces)."""
    return [
        "\t".join(
            (
                letter["id"],
                letter["target"],
                str(letter["attempts"]),
                str(letter["last_status"]),
                attempted_at(letter),
                " ".join(str(letter["last_error"]).split()),
            )
        )
        for letter in letters
    ]


def show_letters(letters: list[dict[str, Any]], console: Console, *, as_json: bool) -> None:
    """JSON when asked, a table in a terminal, plain lines when piped; "no dead letters" in
    words rather than an empty table."""
    if as_json:
        console.file.write(orjson.dumps(letters).decode() + "\n")
    elif not letters:
        console.print("no dead letters")
    elif console.is_terminal:
        console.print(letters_table(letters))
    else:
        # Written as they are: rich would expand the tabs to spaces.
        console.file.writelines(line + "\n" for line in letters_lines(letters))


def letters_table(letters: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{len(letters)} dead letters")
    table.add_column("id", no_wrap=True)  # ids are for copying: never wrapped or cut
    for column in ("target", "attempts", "status", "last error", "last attempt (UTC)"):
        table.add_column(column)
    for letter in letters:
        table.add_row(
            letter["id"],
            letter["target"],
            str(letter["attempts"]),
            str(letter["last_status"]),
            letter["last_error"][:60],
            attempted_at(letter),
        )
    return table


async def dlq_command(
    settings: Settings,
    action: str,
    *,
    window: Window,
    target: str | None,
    event_id: str | None,
    dry_run: bool,
    console: Console,
    as_json: bool = False,
) -> int:
    records = await read_topic(settings, settings.topics.dlq)
    letters = select_dead_letters(records, window=window, target=target, event_id=event_id)
    if action == "list":
        show_letters(letters, console, as_json=as_json)
        return 0
    if action == "show":
        if not letters:
            raise UsageError(f"no dead letter with id {event_id}")
        for letter in letters:
            console.print_json(orjson.dumps(letter).decode())
        return 0
    jobs, cut = redrive(settings, letters)
    if cut:
        console.print(
            f"{cut} dead letters kept only part of their event (event_cut) and cannot be redriven"
        )
    return await finish(settings, jobs, dry_run, console, what="dead letters")


async def replay_command(
    settings: Settings,
    topic: str,
    *,
    window: Window,
    key: str | None,
    org: str | None,
    dry_run: bool,
    console: Console,
) -> int:
    if topic == settings.topics.requests:
        raise UsageError(
            f"replaying {topic} into the running app would count its usage twice; "
            "to recount, run a worker with a fresh QP_APP_ID over the topic instead"
        )
    if topic != settings.topics.triggers:
        raise UsageError(f"replay supports {settings.topics.triggers} (got {topic})")
    records = await read_topic(settings, topic)
    events = select_triggers(records, window=window, key=key, org=org)
    jobs = [job for event in events for job in jobs_for(settings, event, None)]
    return await finish(settings, jobs, dry_run, console, what="trigger events")


async def finish(
    settings: Settings, jobs: list[DeliveryJob], dry_run: bool, console: Console, *, what: str
) -> int:
    if dry_run:
        for job in jobs:
            console.print(f"would re-deliver {job.event_id} to {job.url}")
        console.print(f"dry run: {len(jobs)} deliveries from {what}; nothing sent")
        return 0
    await enqueue(settings, jobs, console)
    console.print(f"queued {len(jobs)} deliveries from {what} (same webhook-id as before)")
    return 0


def run(coroutine_factory: Callable[[Console], Any]) -> int:
    # Piped output is read by scripts and people alike: wide enough that ids are not cut.
    console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
    result: int = asyncio.run(coroutine_factory(console))
    return result
