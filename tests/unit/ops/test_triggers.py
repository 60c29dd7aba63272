"""pipeline.ops.triggers: the latest TriggerExceeded events of quota.triggers, newest first,
each with the deliveries the group's workers remember of it."""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.delivery.activity import DeliveryActivity, merge_snapshots
from pipeline.delivery.jobs import DeliveryJob
from pipeline.errors import RetriableDeliveryError
from pipeline.ops.triggers import SHOWN, trigger_rows
from pipeline.usage.quota import Crossing
from pipeline.usage.triggers import trigger_event

#: 2025-11-28 12:00:00 UTC.
T0 = 1764331200.0
HOUR = 3600
KEY = "sk_live_0123456789abcdef4711"


class Record(NamedTuple):
    """The fields of an aiokafka ConsumerRecord that the panel reads."""

    partition: int
    offset: int
    #: Milliseconds, as Kafka has it.
    timestamp: int
    value: bytes | None


def key_trigger(
    ts: float = T0 + 10, key: str = KEY, threshold: float = 80.0, start: float = T0
) -> dict[str, Any]:
    crossing = Crossing(threshold, int(threshold * 10), start, start + HOUR, ts)
    return trigger_event("key", org_id="acme", key=key, quota_max=1000, crossing=crossing)


def org_trigger(ts: float = T0 + 20, org: str = "acme") -> dict[str, Any]:
    crossing = Crossing(90.0, 9000, T0, T0 + HOUR, ts)
    return trigger_event("org", org_id=org, key="", quota_max=10_000, crossing=crossing)


def record(value: dict[str, Any] | bytes | None, offset: int = 0, at: float = T0) -> Record:
    raw = orjson.dumps(value) if isinstance(value, dict) else value
    return Record(0, offset, int(at * 1000), raw)


def records(*events: dict[str, Any]) -> list[Record]:
    return [record(event, offset) for offset, event in enumerate(events)]


def outcomes_of(*done: tuple[str, dict[str, Any], str, int | None]) -> dict[str, dict[str, Any]]:
    """What the group remembers of ``(outcome, event, url, status)`` deliveries, two workers'
    snapshots merged, keyed by event id as the overview keys them."""
    workers = [DeliveryActivity(), DeliveryActivity()]
    for index, (kind, event, url, status) in enumerate(done):
        job = DeliveryJob(event["id"], "POST", url, b"{}", {}, event)
        error = None if kind == "delivered" else RetriableDeliveryError("e", status=status)
        job = job.attempted(T0 + 30 + index, error, status)
        workers[index % 2].record(kind, job, T0 + 30 + index)  # type: ignore[arg-type]
    snapshots = [orjson.loads(orjson.dumps(worker.snapshot(T0 + 60))) for worker in workers]
    return {event["id"]: event for event in merge_snapshots(snapshots)["events"]}


def test_a_key_trigger_is_a_row_with_its_key_masked() -> None:
    event = key_trigger()

    [row] = trigger_rows(records(event), {})

    assert row == {
        "id": event["id"],
        "ts": T0 + 10,
        "subject": "key",
        "key": "…4711",
        "org": "acme",
        "trigger_limit": "80",
        "usage_percentage": 80,
        "targets": [],
    }
    assert KEY.encode() not in orjson.dumps(row)


def test_an_org_trigger_shows_no_key() -> None:
    [row] = trigger_rows(records(org_trigger()), {})

    assert (row["subject"], row["key"], row["org"], row["trigger_limit"]) == (
        "org",
        "",
        "acme",
        "90",
    )


def test_rows_are_newest_first_by_event_time_not_by_offset() -> None:
    late = key_trigger(ts=T0 + 300, threshold=90.0)
    early = key_trigger(ts=T0 + 5, threshold=50.0)
    middle = org_trigger(ts=T0 + 100)

    rows = trigger_rows(records(late, early, middle), {})

    assert [row["ts"] for row in rows] == [T0 + 300, T0 + 100, T0 + 5]
    assert [row["trigger_limit"] for row in rows] == ["90", "90", "50"]
    assert rows[1]["subject"] == "org"


def test_at_most_shown_rows_the_newest() -> None:
    events = [key_trigger(ts=T0 + i, start=T0 + i) for i in range(SHOWN + 5)]

    assert len(trigger_rows(records(*events), {})) == SHOWN
    rows = trigger_rows(records(*events), {}, shown=3)
    assert [row["ts"] for row in rows] == [T0 + SHOWN + 4, T0 + SHOWN + 3, T0 + SHOWN + 2]
    assert trigger_rows(records(*events), {}, shown=0) == []


def test_outcomes_are_joined_by_event_id() -> None:
    delivered, retrying, quiet = key_trigger(threshold=50.0), key_trigger(), org_trigger()
    outcomes = outcomes_of(
        ("delivered", delivered, "https://hooks.example/a", 200),
        ("retrying", retrying, "https://hooks.example/a", 503),
        ("dead_lettered", retrying, "https://other.example:8443/b", 410),
    )

    rows = {row["id"]: row for row in trigger_rows(records(delivered, retrying, quiet), outcomes)}

    [target] = rows[delivered["id"]]["targets"]
    assert (target["target"], target["outcome"], target["last_status"]) == (
        "https://hooks.example",
        "delivered",
        200,
    )
    assert [
        (target["target"], target["outcome"]) for target in rows[retrying["id"]]["targets"]
    ] == [("https://other.example:8443", "dead_lettered"), ("https://hooks.example", "retrying")]
    # No worker remembers a delivery of it (older than their start): no outcome known.
    assert rows[quiet["id"]]["targets"] == []
    assert KEY.encode() not in orjson.dumps(rows)


def test_values_that_are_not_trigger_events_are_skipped() -> None:
    event = key_trigger()
    portal = {"id": "evt_p", "event": "key_event.created", "org_id": "acme", "data": {}}
    kept = trigger_rows(
        [
            record(None, 0),
            record(b"", 1),
            record(b"garbage", 2),
            record(b"\xff\xfe", 3),
            record(b"[1, 2]", 4),
            record({"id": 7, "event": "TriggerExceeded"}, 5),
            record({k: v for k, v in event.items() if k != "id"}, 6),
            record(portal, 7),
            record({**event, "usage_percentage": "80"}, 8),
            record({**event, "org": None}, 9),
            record({**event, "id": ""}, 10),
            record(event, 11),
        ],
        {},
    )

    assert [row["id"] for row in kept] == [event["id"]]


def test_without_an_event_time_the_records_time_is_used() -> None:
    event = {k: v for k, v in key_trigger().items() if k != "ts"}

    rows = trigger_rows(
        [
            record(event, at=T0 + 40),
            record({**key_trigger(threshold=50.0), "ts": "yesterday"}, at=T0 + 50),
            record(key_trigger(ts=T0 + 45, threshold=90.0), at=T0 + 99),
        ],
        {},
    )

    assert [(row["ts"], row["trigger_limit"]) for row in rows] == [
        (T0 + 50, "50"),
        (T0 + 45, "90"),
        (T0 + 40, "80"),
    ]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
#: A trigger event with any of its fields replaced by anything.
trigger_like = st.builds(
    lambda changes: orjson.dumps({**key_trigger(), **changes}),
    st.dictionaries(
        st.sampled_from(
            ["id", "event", "org", "key", "subject", "trigger_limit", "usage_percentage", "ts"]
        ),
        json_values,
    ),
)


@settings(max_examples=200)
@given(st.lists(st.none() | st.binary() | trigger_like, max_size=5))
def test_trigger_rows_never_raise_and_are_newest_first(values: list[bytes | None]) -> None:
    rows = trigger_rows([record(value, offset) for offset, value in enumerate(values)], {})

    times = [row["ts"] for row in rows]
    assert times == sorted(times, reverse=True)
    for row in rows:
        assert isinstance(row["ts"], float)
        assert all(isinstance(row[name], str) for name in ("id", "key", "org", "trigger_limit"))
        assert KEY not in row["key"]
