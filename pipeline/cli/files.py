"""`sessions put` and `orgs put`: read a file of id -> object, validate all, then publish.

Nothing is published unless every entry is valid; otherwise every problem is reported (up to
:data:`MAX_REPORTED`), each with its line for JSON lines, so one run finds them all.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from pipeline.config import Settings
from pipeline.engine.clients import producer
from pipeline.errors import InvalidRecord, UsageError
from pipeline.records.subjects import decode_org_record, decode_session_record

#: Problems listed one by one; the rest are counted.
MAX_REPORTED = 20


class Entry(NamedTuple):
    identifier: str
    #: The object as JSON; None is a tombstone.
    value: bytes | None
    #: Where it came from, for messages: "FILE" or "FILE line N".
    where: str
    #: Its line (0 in a JSON object file), to report problems in the file's order.
    line: int = 0


class Problem(NamedTuple):
    where: str
    what: str
    line: int = 0


def mask(identifier: str) -> str:
    """Enough of an id for a person to find it, never a whole API key."""
    # At most a third of the id shows, and never more than four characters at each end.
    keep = min(4, (len(identifier) - 1) // 3)
    if keep == 0:
        return "…"
    return f"{identifier[:keep]}…{identifier[-keep:]}"


def parse_entries(text: str, source: str) -> tuple[list[Entry], list[Problem]]:
    """A JSON object of id -> object (or null, a tombstone), or JSON lines of such objects:
    the entries, and what is wrong with the text."""
    try:
        whole = orjson.loads(text)
    except orjson.JSONDecodeError:
        whole = None
    else:
        if not isinstance(whole, dict):
            return [], [Problem(source, "expected a JSON object of id to object")]
    if whole is not None:
        return _entries_of(whole, source, 0)
    entries: list[Entry] = []
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source} line {number}"
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            problems.append(Problem(where, f"not JSON ({exc})", number))
            continue
        if not isinstance(value, dict):
            problems.append(Problem(where, "expected a JSON object of id to object", number))
            continue
        found, wrong = _entries_of(value, where, number)
        entries += found
        problems += wrong
    return entries, problems


def _entries_of(
    mapping: dict[str, Any], where: str, line: int
) -> tuple[list[Entry], list[Problem]]:
    entries: list[Entry] = []
    problems: list[Problem] = []
    for identifier, value in mapping.items():
        if not identifier:
            problems.append(Problem(where, "an empty id", line))
        elif value is not None and not isinstance(value, dict):
            what = f"entry {mask(identifier)} is not an object or null"
            problems.append(Problem(where, what, line))
        else:
            raw = None if value is None else orjson.dumps(value)
            entries.append(Entry(identifier, raw, where, line))
    return entries, problems


def validate_entries(
    entries: Sequence[Entry],
    decode: Callable[[bytes | None, bytes | None], Any],
    *,
    show: Callable[[str], str] = mask,
) -> list[Problem]:
    """Decode every entry as the worker will read its record (key and value); a problem for
    each bad one, naming it (API keys masked)."""
    problems = []
    for identifier, value, where, line in entries:
        try:
            decode(identifier.encode(), value)
        except InvalidRecord as exc:
            problems.append(Problem(where, f"entry {show(identifier)}: {exc.reason}", line))
    return problems


def report(problems: Sequence[Problem], kind: str) -> str:
    """The message for a file with problems: one line for one problem; else a summary, then
    one line per problem."""
    count = len(problems)
    if count == 1:
        where, what, _ = problems[0]
        return f"{where}: {what}; no {kind} were published"
    lines = [f"{count} bad entries; no {kind} were published:"]
    in_order = sorted(problems, key=lambda problem: problem.line)  # (a stable sort)
    lines += [f"  {where}: {what}" for where, what, _ in in_order[:MAX_REPORTED]]
    if count > MAX_REPORTED:
        lines.append(f"  … and {count - MAX_REPORTED} more")
    return "\n".join(lines)


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
    entries, problems = parse_entries(text, source)
    if kind == "sessions":
        problems += validate_entries(entries, decode_session_record)
        topic = settings.topics.sessions
    else:
        problems += validate_entries(entries, decode_org_record, show=str)  # not secrets
        topic = settings.topics.orgs
    if problems:
        raise UsageError(report(problems, kind))
    await publish(settings, topic, [(entry.identifier, entry.value) for entry in entries])
    return len(entries)
