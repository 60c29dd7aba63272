"""What this worker's deliveries did, for the ops page (pure, in memory, bounded).

The router records each outcome here once it is routed. Two things are kept: the latest events
delivered, each with the latest outcome per target, and per endpoint the outcomes counted since
the worker started. The ops page asks every worker for a snapshot and merges them
(:func:`merge_snapshots`); the breakers and attempts in flight are the deliverer's, passed in.

A snapshot is shown in a browser and travels between workers, so nothing in it may be a
credential: an event keeps only the fields that name it, its API key masked; targets and
endpoints are named as log lines name them (a webhook by scheme://host:port, since its path may
be its secret; an address masked); errors are cut short and scrubbed of URLs, addresses and the
event's key.
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, Literal, NamedTuple, TypeAlias

from pipeline.delivery.breaker import BreakerState
from pipeline.delivery.jobs import DeliveryJob
from pipeline.email.filters import masked_key
from pipeline.records.rejections import loggable, shorten
from pipeline.service.redaction import EMAIL, mask_email, target

OutcomeKind: TypeAlias = Literal["delivered", "retrying", "dead_lettered"]
OUTCOME_KINDS: tuple[OutcomeKind, ...] = ("delivered", "retrying", "dead_lettered")
#: Breaker states, best first; the values of the quota_pipeline_breaker_state gauge.
STATE_VALUES: dict[BreakerState, int] = {"closed": 0, "half_open": 1, "open": 2}

#: Events a worker remembers, and a merged snapshot shows.
MAX_EVENTS = 200
#: Targets remembered per event: an event has a handful, a digest or a broad org a few more.
MAX_TARGETS = 20
#: Characters kept of an event's naming fields.
MAX_FIELD_CHARS = 200
#: The endpoint of every email: the worker's one email backend.
EMAIL_ENDPOINT = "email"
#: Shown for a target whose URL does not even parse.
UNPARSABLE = "unparsable target"
#: The event whose delivery time quota_pipeline_trigger_to_delivery_seconds measures.
TRIGGER_EVENT = "TriggerExceeded"

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


class EndpointState(NamedTuple):
    """An endpoint's breaker and attempts in flight, as the deliverer reports them."""

    state: BreakerState
    #: Unix time at which the breaker entered ``state`` (None: never seen by this worker).
    since: float | None
    #: When the next probe may go, while the breaker refuses.
    retry_at: float | None
    in_flight: int


#: An endpoint no breaker of this worker has seen (a delivery refused before any attempt).
UNSEEN = EndpointState("closed", None, None, 0)


@functools.lru_cache(maxsize=4096)  # targets repeat; a urlsplit per outcome would show
def shown_target(url: str) -> str:
    """A target as the ops page shows it (see :func:`target_label`); a URL that does not parse
    is named as such, never raises."""
    try:
        return target(url)
    except ValueError:  # a bad port or bracket: the outcome is still counted, not the URL
        return UNPARSABLE


def target_label(job: DeliveryJob) -> str:
    """The target as the ops page shows it: scheme://host:port, or a masked address."""
    return shown_target(job.url)


def endpoint_label(job: DeliveryJob) -> str:
    """The endpoint of a job in metrics and snapshots: a webhook's scheme://host:port (never
    its path), or ``email`` for the email backend."""
    return EMAIL_ENDPOINT if job.channel == "email" else shown_target(job.url)


def joined(known: EndpointState | None, other: EndpointState) -> EndpointState:
    """Two breakers shown as one endpoint: the worse state (the longer-standing one when
    equal), the attempts of both."""
    if known is None:
        return other
    worse = _worse(known, other)
    return worse._replace(in_flight=known.in_flight + other.in_flight)


def _worse(a: EndpointState, b: EndpointState) -> EndpointState:
    if STATE_VALUES[a.state] != STATE_VALUES[b.state]:
        return a if STATE_VALUES[a.state] > STATE_VALUES[b.state] else b
    return a._replace(since=_earliest(a.since, b.since), retry_at=_earliest(a.retry_at, b.retry_at))


def _earliest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


class _TargetSeen(NamedTuple):
    """A target's latest outcome (the snapshot's entry, field by field)."""

    channel: str
    target: str
    outcome: OutcomeKind
    attempts: int
    last_status: int | None
    last_error: str
    at: float


class _EventSeen:
    """An event's naming fields, and its targets, least recently recorded first."""

    __slots__ = ("at", "summary", "targets")

    def __init__(self, summary: dict[str, Any]) -> None:
        self.summary = summary
        self.at = 0.0
        self.targets: dict[tuple[str, str], _TargetSeen] = {}

    def entry(self) -> dict[str, Any]:
        targets = [seen._asdict() for seen in reversed(self.targets.values())]
        return {**self.summary, "at": self.at, "targets": targets}


class DeliveryActivity:
    """The latest events delivered and the outcomes per endpoint, of this worker."""

    def __init__(self, max_events: int = MAX_EVENTS) -> None:
        if max_events < 1:
            raise ValueError("max_events must be >= 1")
        self._max_events = max_events
        #: By event id, least recently recorded first.
        self._events: OrderedDict[str, _EventSeen] = OrderedDict()
        self._counts: dict[str, dict[OutcomeKind, int]] = {}

    def record(
        self,
        outcome_kind: OutcomeKind,
        job: DeliveryJob,
        now: float,
        reason: str = "",
        *,
        endpoint: str | None = None,
    ) -> None:
        """One routed outcome. ``reason`` is a dead letter's (else the job's last error);
        ``endpoint`` saves the label's lookup when the caller has it already."""
        endpoint = endpoint or endpoint_label(job)
        counts = self._counts.get(endpoint)
        if counts is None:
            counts = self._counts[endpoint] = dict.fromkeys(OUTCOME_KINDS, 0)
        counts[outcome_kind] += 1
        seen = self._event(job, now)
        name = target_label(job)
        error = reason or job.last_error
        shown = shown_error(error, job.event) if error else ""
        key = (job.channel, name)
        # Popped first, so that dict order stays oldest outcome first and the trim drops it.
        seen.targets.pop(key, None)
        seen.targets[key] = _TargetSeen(
            job.channel, name, outcome_kind, job.attempts, job.last_status, shown, now
        )
        if len(seen.targets) > MAX_TARGETS:
            del seen.targets[next(iter(seen.targets))]

    def _event(self, job: DeliveryJob, now: float) -> _EventSeen:
        seen = self._events.get(job.event_id)
        if seen is None:
            seen = self._events[job.event_id] = _EventSeen(summarize(job.event_id, job.event))
            if len(self._events) > self._max_events:
                self._events.popitem(last=False)
        else:
            self._events.move_to_end(job.event_id)
        seen.at = max(seen.at, now)  # a clock set back does not make an event older
        return seen

    def snapshot(
        self, now: float, endpoints: Mapping[str, EndpointState] | None = None
    ) -> dict[str, Any]:
        """Plain JSON-able data: the events, most recently delivered first, and every endpoint
        counted here or known to ``endpoints`` (the deliverer's ``endpoint_states``)."""
        states = endpoints or {}
        return {
            "at": now,
            "events": [seen.entry() for seen in reversed(self._events.values())],
            "endpoints": {
                name: _endpoint_entry(self._counts.get(name), states.get(name, UNSEEN))
                for name in sorted(self._counts.keys() | states.keys())
            },
        }


def summarize(event_id: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that name an event (a trigger's or a portal event's), its key masked."""
    get = event.get  # once per event, not per delivery; still, no more calls than needed
    key = get("key")
    return {
        "id": event_id,
        "kind": _text(get("event")),
        "subject": _text(get("subject")),
        "org": _text(get("org") or get("org_id")),
        "key": masked_key(key) if key and isinstance(key, str) else "",
        "trigger_limit": _text(get("trigger_limit")),
        "usage_percentage": _number(get("usage_percentage")),
        "ts": _number(get("ts")),
    }


def _text(value: Any) -> str:
    if type(value) is str:
        return value if len(value) <= MAX_FIELD_CHARS else shorten(value, MAX_FIELD_CHARS)
    return ""


def _number(value: Any) -> float | int | None:
    return value if type(value) in (int, float) else None  # not bool, nor a str of digits


def shown_error(error: str, event: Mapping[str, Any]) -> str:
    """An error as the ops page may show it: cut, quoted values left out (as a log line has
    it), URLs down to their host, addresses masked, and never the event's key."""
    text = _URL.sub(lambda match: shown_target(match.group(0)), loggable(error))
    if "@" in text:
        text = EMAIL.sub(lambda match: mask_email(match.group(0)), text)
    key = event.get("key")
    if isinstance(key, str) and key and key in text:
        text = text.replace(key, masked_key(key))
    return text


def _endpoint_entry(
    counts: Mapping[OutcomeKind, int] | None, state: EndpointState
) -> dict[str, Any]:
    return {
        **{kind: (counts or {}).get(kind, 0) for kind in OUTCOME_KINDS},
        "in_flight": state.in_flight,
        "breaker": {
            "state": state.state,
            "since": state.since,
            "retry_at": state.retry_at,
            # One worker reporting: merged snapshots sum these.
            "workers": {name: int(name == state.state) for name in STATE_VALUES},
        },
    }


# --- the group's view -------------------------------------------------------------------------


def merge_snapshots(
    snapshots: Iterable[Mapping[str, Any]], max_events: int = MAX_EVENTS
) -> dict[str, Any]:
    """Several workers' snapshots as one: events by id (per target the latest outcome), most
    recent first and at most ``max_events``; per endpoint the counts summed and the worst
    breaker, with how many workers report each state. A merged snapshot merges again."""
    events: dict[str, dict[str, Any]] = {}
    endpoints: dict[str, dict[str, Any]] = {}
    at: float | None = None
    for snapshot in snapshots:
        at = _latest(at, snapshot.get("at"))
        for event in snapshot.get("events") or ():
            _merge_event(events, event)
        for name, endpoint in (snapshot.get("endpoints") or {}).items():
            endpoints[name] = _merge_endpoint(endpoints.get(name), endpoint)
    newest = sorted(events.values(), key=lambda event: (event["at"], event["id"]), reverse=True)
    return {
        "at": at,
        "events": newest[:max_events],
        "endpoints": dict(sorted(endpoints.items())),
    }


def _latest(a: float | None, b: Any) -> float | None:
    if not isinstance(b, int | float):
        return a
    return b if a is None else max(a, b)


def _merge_event(events: dict[str, dict[str, Any]], event: Mapping[str, Any]) -> None:
    known = events.get(event["id"])
    if known is None:
        events[event["id"]] = {**event, "targets": list(event.get("targets") or ())}
        return
    targets = {(t["channel"], t["target"]): t for t in known["targets"]}
    for seen in event.get("targets") or ():
        name = (seen["channel"], seen["target"])
        if name not in targets or _target_order(seen) > _target_order(targets[name]):
            targets[name] = seen
    newest = sorted(targets.values(), key=_target_order, reverse=True)
    known["targets"] = newest[:MAX_TARGETS]
    known["at"] = max(known["at"], event["at"])


def _target_order(seen: Mapping[str, Any]) -> tuple[float, int, str, int, str]:
    # Time first; the rest only breaks ties, so that any order of merging gives one answer.
    status = seen.get("last_status")
    return (
        seen["at"],
        seen.get("attempts", 0),
        seen.get("outcome", ""),
        status if isinstance(status, int) else -1,
        seen.get("last_error", ""),
    )


def _merge_endpoint(known: dict[str, Any] | None, other: Mapping[str, Any]) -> dict[str, Any]:
    if known is None:
        return _endpoint_copy(other)
    merged: dict[str, Any] = {kind: known[kind] + other.get(kind, 0) for kind in OUTCOME_KINDS}
    merged["in_flight"] = known["in_flight"] + other.get("in_flight", 0)
    mine, theirs = known["breaker"], _breaker_of(other)
    worst = _worse(_breaker_state(mine), _breaker_state(theirs))
    workers = {
        name: mine["workers"].get(name, 0) + theirs["workers"].get(name, 0) for name in STATE_VALUES
    }
    merged["breaker"] = {
        "state": worst.state,
        "since": worst.since,
        "retry_at": worst.retry_at,
        "workers": workers,
    }
    return merged


def _endpoint_copy(endpoint: Mapping[str, Any]) -> dict[str, Any]:
    copy: dict[str, Any] = {kind: endpoint.get(kind, 0) for kind in OUTCOME_KINDS}
    copy["in_flight"] = endpoint.get("in_flight", 0)
    copy["breaker"] = _breaker_of(endpoint)
    return copy


def _breaker_of(endpoint: Mapping[str, Any]) -> dict[str, Any]:
    """An endpoint's breaker, with its count of workers (one, if its snapshot had none)."""
    breaker = dict(endpoint.get("breaker") or {"state": "closed"})
    if breaker.get("state") not in STATE_VALUES:
        breaker["state"] = "closed"
    workers = breaker.get("workers") or {breaker["state"]: 1}
    breaker["workers"] = {name: workers.get(name, 0) for name in STATE_VALUES}
    breaker.setdefault("since", None)
    breaker.setdefault("retry_at", None)
    return breaker


def _breaker_state(breaker: Mapping[str, Any]) -> EndpointState:
    return EndpointState(breaker["state"], breaker["since"], breaker["retry_at"], 0)
