"""What a sync pass publishes (pure): the part of each Tyk session the pipeline reads, its
fingerprint, and the records and tombstones that bring quota.sessions and quota.orgs up to the
gateway.

A session is published as a compact subset, the fields the worker reads (``org_id``,
``quota_max``, ``quota_renewal_rate``, ``monitor.trigger_limits``, ``meta_data``): the rest of
Tyk's session object (``quota_remaining``, ``last_check``, ``allowance``, ``quota_renews``…)
moves with every request, and would make every pass publish every key again.

Tyk 5.12 and later leave zero-valued fields out of a session (``omitzero`` in
TykTechnologies/tyk ``user/session.go`` since commit 6468f139d); earlier versions write them,
and write ``null`` for an empty list or map. A missing or null field is taken as the zero Go
decodes it to: ``org_id`` "", ``quota_max`` 0, ``quota_renewal_rate`` 0, no trigger limits,
empty ``meta_data``. So a session has one subset whichever version serves it. ``quota_max`` 0 is
what Tyk's quota check skips (``RedisQuotaExceeded`` returns early for ``QuotaMax <= 0``: no
quota), as the worker's ``Quota.unlimited`` does; ``quota_renewal_rate`` 0 is a quota that never
renews, for both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.errors import InvalidRecord
from pipeline.records.subjects import decode_org, decode_session

#: The Kafka header that marks a record (or tombstone) published by `sessions sync`: only keys
#: whose latest record carries it are ever tombstoned by a sync.
SOURCE_HEADER = "quota-pipeline-source"
SOURCE = b"tyk-sync"
HEADERS: list[tuple[str, bytes]] = [(SOURCE_HEADER, SOURCE)]

#: The quota fields an org record takes from Tyk's org session; the rest of the record
#: (``event_options``, from `orgs put`) is kept.
ORG_FIELDS = ("quota_max", "quota_renewal_rate", "monitor")


def from_sync(headers: Iterable[tuple[str, bytes]] | None) -> bool:
    """Whether a record's headers say a sync published it."""
    return any(name == SOURCE_HEADER and value == SOURCE for name, value in headers or ())


def _number(value: Any) -> Any:
    """A whole float as an int (Go writes 80 for 80.0; a file may say 80.0): one fingerprint
    for one number. Anything else as it is, for validation to judge."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _limits(monitor: Any) -> Any:
    if monitor is None:
        return {"trigger_limits": []}
    if not isinstance(monitor, dict):
        return monitor  # not an object: validation says so
    limits = _or(monitor.get("trigger_limits"), [])
    if isinstance(limits, list):
        limits = [_number(limit) for limit in limits]
    return {"trigger_limits": limits}


def quota_subset(session: Mapping[str, Any]) -> dict[str, Any]:
    """The quota fields that a key session and an org session share, missing ones as zero."""
    return {
        "quota_max": _number(_or(session.get("quota_max"), 0)),
        "quota_renewal_rate": _number(_or(session.get("quota_renewal_rate"), 0)),
        "monitor": _limits(session.get("monitor")),
    }


def session_subset(session: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a Tyk session object the worker reads, missing or null ones as zero."""
    return {
        "org_id": _or(session.get("org_id"), ""),
        **quota_subset(session),
        "meta_data": _or(session.get("meta_data"), {}),
    }


def canonical(value: Mapping[str, Any]) -> bytes:
    """One JSON text for one value: keys sorted, compact.

    Copied: the bytes orjson returns keep the buffer they were written in (about 4 KB for a
    short value, 8 KB for a session, with orjson 3.13), and a pass keeps a million of them: 8
    GB, where the copies take 0.5 GB.
    """
    return bytes(memoryview(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)))


def encode_session(session: Mapping[str, Any]) -> bytes:
    """The record value a sync publishes for a Tyk session: its subset, canonical JSON."""
    return canonical(session_subset(session))


def fingerprint(value: bytes) -> bytes:
    """SHA-256 of a canonical value."""
    return hashlib.sha256(value).digest()


def fingerprint_of_record(value: bytes, synced: bool) -> bytes:
    """The fingerprint of a quota.sessions value: a sync's value is canonical already; any
    other's (`sessions put`) is reduced to its subset first, so that a put session equal to
    Tyk's is not published again. A value that is not a JSON object matches no session."""
    if synced:
        return fingerprint(value)
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return fingerprint(value)
    if not isinstance(decoded, dict):
        return fingerprint(value)
    return fingerprint(encode_session(decoded))


@dataclass
class SessionState:
    """What quota.sessions holds, as far as a sync cares: each key's latest record by who
    published it. A tombstone removes the key from both."""

    #: key -> fingerprint, for keys whose latest record a sync published.
    synced: dict[str, bytes] = field(default_factory=dict)
    #: key -> fingerprint of the subset, for keys whose latest record came from elsewhere.
    foreign: dict[str, bytes] = field(default_factory=dict)

    def fold(self, key: str, value: bytes | None, synced: bool) -> None:
        """Take one quota.sessions record, in topic order."""
        self.synced.pop(key, None)
        self.foreign.pop(key, None)
        if value is not None:
            (self.synced if synced else self.foreign)[key] = fingerprint_of_record(value, synced)

    def known(self, key: str) -> bytes | None:
        found = self.synced.get(key)
        return self.foreign.get(key) if found is None else found


@dataclass(frozen=True)
class SessionChanges:
    """What one pass publishes to quota.sessions, and the counts its summary line gives."""

    #: (key, value) of new and changed sessions, each with the sync's header.
    records: list[tuple[str, bytes]]
    #: Keys a sync published that the gateway no longer lists.
    tombstones: list[str]
    new: int
    changed: int
    unchanged: int
    #: (key, reason) of changed sessions the worker would reject: not published, not removed.
    invalid: list[tuple[str, str]]


def session_problem(value: bytes) -> str | None:
    """Why the worker would reject a session value, or None."""
    try:
        decode_session(value)
    except InvalidRecord as exc:
        return exc.reason
    return None


def diff_sessions(state: SessionState, fetched: Mapping[str, bytes]) -> SessionChanges:
    """The records that make quota.sessions say what the gateway says.

    ``fetched`` maps each key the gateway listed and served to its encoded subset. A key is
    new when quota.sessions has no session for it, changed when its fingerprint differs (from
    a sync's record or another's). Keys a sync published that are not fetched get a
    tombstone; keys published by others never do. A new or changed session the worker would
    reject is left out, and its key is neither published nor removed.
    """
    records: list[tuple[str, bytes]] = []
    invalid: list[tuple[str, str]] = []
    new = changed = unchanged = 0
    for key, value in fetched.items():
        known = state.known(key)
        if known is not None and known == fingerprint(value):
            unchanged += 1
            continue
        problem = session_problem(value)
        if problem is not None:
            invalid.append((key, problem))
            continue
        records.append((key, value))
        if known is None:
            new += 1
        else:
            changed += 1
    kept = {key for key, _ in invalid}
    tombstones = [key for key in state.synced if key not in fetched and key not in kept]
    return SessionChanges(records, tombstones, new, changed, unchanged, invalid)


def apply_changes(state: SessionState, changes: SessionChanges) -> None:
    """``state`` as quota.sessions will be once ``changes`` are published (watch mode keeps
    it between passes instead of reading the topic again)."""
    for key, value in changes.records:
        state.fold(key, value, synced=True)
    for key in changes.tombstones:
        state.fold(key, None, synced=True)


def merge_org(current: Mapping[str, Any] | None, org_session: Mapping[str, Any]) -> bytes:
    """An org record with Tyk's quota fields and every other field of the current record
    (``event_options`` come from `orgs put`; Tyk's org session has none)."""
    return canonical({**(current or {}), **quota_subset(org_session)})


@dataclass(frozen=True)
class OrgChanges:
    records: list[tuple[str, bytes]]
    unchanged: int
    invalid: list[tuple[str, str]]


def diff_orgs(
    current: Mapping[str, Mapping[str, Any]], fetched: Mapping[str, Mapping[str, Any]]
) -> OrgChanges:
    """The org records whose quota fields differ from Tyk's org sessions. Orgs Tyk does not
    serve are left as they are: an org record carries more than Tyk knows."""
    records: list[tuple[str, bytes]] = []
    invalid: list[tuple[str, str]] = []
    unchanged = 0
    for org_id, org_session in fetched.items():
        now = current.get(org_id)
        merged = merge_org(now, org_session)
        if now is not None and canonical(now) == merged:
            unchanged += 1
            continue
        try:
            decode_org(merged)
        except InvalidRecord as exc:
            invalid.append((org_id, exc.reason))
            continue
        records.append((org_id, merged))
    return OrgChanges(records, unchanged, invalid)


def masked(identifier: str) -> str:
    """Enough of a key for a person to find it in the gateway, never the whole key."""
    keep = min(4, (len(identifier) - 1) // 3)
    return f"{identifier[:keep]}…{identifier[-keep:]}" if keep else "…"


def describe_invalid(invalid: Sequence[tuple[str, str]], kind: str, shown: int = 5) -> list[str]:
    """Lines naming the sessions (or orgs) not published because the worker would reject them."""
    show = masked if kind == "session" else str  # org ids are not secrets
    lines = [f"{kind} {show(key)} not published: {reason}" for key, reason in invalid[:shown]]
    if len(invalid) > shown:
        lines.append(f"… and {len(invalid) - shown} more {kind}s not published")
    return lines
