"""`sessions put` and `orgs put`: read a file of id -> object, validate all, then publish."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from pipeline.config import Settings
from pipeline.errors import InvalidRecord, UsageError
from pipeline.kafka import producer
from pipeline.models import decode_org, decode_session

Entries = list[tuple[str, bytes | None]]


def mask(identifier: str) -> str:
    """Enough of an id for a person to find it, never a whole API key."""
    # At most a third of the id shows, and never more than four characters at each end.
    keep = min(4, (len(identifier) - 1) // 3)
    if keep == 0:
        return "…"
    return f"{identifier[:keep]}…{identifier[-keep:]}"


def parse_entries(text: str, source: str) -> Entries:
    """A JSON object of id -> object (or null, a tombstone), or JSON lines of such objects."""
    try:
        whole = orjson.loads(text)
    except orjson.JSONDecodeError:
        whole = None
    else:
        if not isinstance(whole, dict):
            raise UsageError(f"{source}: expected a JSON object of id to object")
    if whole is not None:
        return _entries_of(whole, source)
    entries: Entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"{source} line {number}: not JSON ({exc})") from exc
        if not isinstance(value, dict):
            raise UsageError(f"{source} line {number}: expected a JSON object of id to object")
        entries.extend(_entries_of(value, f"{source} line {number}"))
    return entries


def _entries_of(mapping: dict[str, Any], source: str) -> Entries:
    entries: Entries = []
    for identifier, value in mapping.items():
        if not identifier:
            raise UsageError(f"{source}: an empty id")
        if value is not None and not isinstance(value, dict):
            raise UsageError(f"{source}: entry {mask(identifier)} is not an object or null")
        entries.append((identifier, None if value is None else orjson.dumps(value)))
    return entries


def validate_entries(
    entries: Entries,
    decode: Callable[[bytes | None], Any],
    source: str,
    *,
    show: Callable[[str], str] = mask,
) -> None:
    """Decode every entry; the first bad one is a UsageError naming it (API keys masked)."""
    for identifier, value in entries:
        try:
            decode(value)
        except InvalidRecord as exc:
            raise UsageError(f"{source}: entry {show(identifier)}: {exc.reason}") from exc


def read_source(path: str) -> tuple[str, str]:
    """The text of FILE, or of stdin for ``-``, and a name for messages."""
    if path == "-":
        return sys.stdin.read(), "stdin"
    try:
        return Path(path).read_text(encoding="utf-8"), path
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc


async def publish(
    settings: Settings, topic: str, entries: Sequence[tuple[str, bytes | None]]
) -> None:
    async with producer(settings) as client:
        sends = [await client.send(topic, value, key=key.encode()) for key, value in entries]
        for delivered in sends:
            await delivered


async def put_file(settings: Settings, kind: str, path: str) -> int:
    """Validate every entry of the file, then publish them all; returns how many."""
    text, source = read_source(path)
    entries = parse_entries(text, source)
    if kind == "sessions":
        validate_entries(entries, decode_session, source)
        topic = settings.topics.sessions
    else:
        validate_entries(entries, decode_org, source, show=str)  # org ids are not secrets
        topic = settings.topics.orgs
    await publish(settings, topic, entries)
    return len(entries)
