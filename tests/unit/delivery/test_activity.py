"""pipeline.delivery.activity: the bounded memory of a worker's deliveries, and the group's."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.delivery.activity import (
    MAX_TARGETS,
    DeliveryActivity,
    EndpointState,
    endpoint_label,
    joined,
    merge_snapshots,
)
from pipeline.delivery.jobs import DeliveryJob
from pipeline.errors import PermanentDeliveryError
from tests.unit.samples import KEY, T0, trigger


def webhook(
    event: dict[str, Any] | None = None, url: str = "https://hooks.example/q", **changes: Any
) -> DeliveryJob:
    event = event if event is not None else trigger()
    job = DeliveryJob(event["id"], "POST", url, b"{}", {}, event)
    return dataclasses.replace(job, **changes)


def email(event: dict[str, Any], to: str = "dev@example.com", **changes: Any) -> DeliveryJob:
    job = DeliveryJob(event["id"], "EMAIL", f"mailto:{to}", b"{}", {}, event, channel="email")
    return dataclasses.replace(job, **changes)


def test_an_event_keeps_its_naming_fields_and_each_targets_latest_outcome() -> None:
    activity = DeliveryActivity()
    activity.record("retrying", webhook(attempts=1, last_status=503, last_error="e 503"), T0)
    activity.record("delivered", email(trigger()), T0 + 1)
    activity.record("delivered", webhook(attempts=2, last_status=200), T0 + 5)

    [event] = activity.snapshot(T0 + 6)["events"]

    assert event == {
        "id": "evt_1",
        "kind": "TriggerExceeded",
        "subject": "key",
        "org": "acme",
        "key": "…4711",
        "trigger_limit": "80",
        "usage_percentage": 81.5,
        "ts": T0 - 2,
        "at": T0 + 5,
        "targets": [
            {
                "channel": "webhook",
                "target": "https://hooks.example",
                "outcome": "delivered",
                "attempts": 2,
                "last_status": 200,
                "last_error": "",
                "at": T0 + 5,
            },
            {
                "channel": "email",
                "target": "mailto:d…@example.com",
                "outcome": "delivered",
                "attempts": 0,
                "last_status": None,
                "last_error": "",
                "at": T0 + 1,
            },
        ],
    }


def test_a_portal_event_is_kept_by_its_kind_and_org_without_its_data() -> None:
    portal = {
        "id": "evt_p",
        "event": "key_request_event.created",
        "org_id": "acme",
        "data": {"developer_email": "dev@example.com", "key": KEY},
    }
    activity = DeliveryActivity()
    activity.record("delivered", webhook(portal), T0)

    snapshot = activity.snapshot(T0)
    [event] = snapshot["events"]

    assert (event["kind"], event["org"], event["key"], event["ts"]) == (
        "key_request_event.created",
        "acme",
        "",
        None,
    )
    dumped = orjson.dumps(snapshot)
    assert b"dev@example.com" not in dumped
    assert KEY.encode() not in dumped


def test_the_raw_key_never_reaches_a_snapshot() -> None:
    event = trigger()
    activity = DeliveryActivity()
    # A key in the URL's path, in an unquoted and a quoted error, in an address: all left out.
    activity.record("retrying", webhook(event, url=f"https://hooks.example/k/{KEY}?t=1"), T0)
    activity.record(
        "dead_lettered",
        webhook(event, url="https://other.example/x", last_error=f"key {KEY} refused"),
        T0 + 1,
    )
    activity.record(
        "dead_lettered",
        email(event, to=f"{KEY}@example.com"),
        T0 + 2,
        reason=f"to {KEY!r} at https://smtp.example/{KEY}/x failed for {KEY}@example.com",
    )
    snapshot = activity.snapshot(
        T0 + 3, {"https://hooks.example": EndpointState("open", T0, T0 + 30, 1)}
    )

    dumped = orjson.dumps(snapshot)
    assert KEY.encode() not in dumped
    assert b"/k/" not in dumped  # a webhook's path is not shown: it may be its secret
    errors = [target["last_error"] for target in snapshot["events"][0]["targets"]]
    assert errors[0] == "to '…' at https://smtp.example failed for s…@example.com"
    assert errors[1] == "key …4711 refused"


def test_a_long_error_is_cut() -> None:
    activity = DeliveryActivity()
    error = str(PermanentDeliveryError("x" * 5000))
    activity.record("dead_lettered", webhook(), T0, reason=error)

    [target] = activity.snapshot(T0)["events"][0]["targets"]

    assert len(target["last_error"]) <= 200
    assert target["last_error"].endswith("(5000 characters in all)")


def test_the_latest_events_are_kept_newest_first_within_the_bound() -> None:
    activity = DeliveryActivity(max_events=3)
    for i in range(5):
        activity.record("delivered", webhook(trigger(f"evt_{i}")), T0 + i)
    # A new outcome of an event makes it the newest again.
    activity.record("delivered", webhook(trigger("evt_2"), url="https://b.example/"), T0 + 9)

    events = activity.snapshot(T0 + 10)["events"]

    assert [event["id"] for event in events] == ["evt_2", "evt_4", "evt_3"]
    assert [len(event["targets"]) for event in events] == [2, 1, 1]


def test_the_targets_of_an_event_are_bounded() -> None:
    activity = DeliveryActivity()
    for i in range(MAX_TARGETS + 5):
        activity.record("delivered", webhook(url=f"https://h{i}.example/"), T0 + i)

    [event] = activity.snapshot(T0)["events"]

    assert len(event["targets"]) == MAX_TARGETS
    assert event["targets"][0]["target"] == f"https://h{MAX_TARGETS + 4}.example"


def test_counts_per_endpoint_with_the_deliverers_breakers() -> None:
    activity = DeliveryActivity(max_events=1)
    for i in range(4):
        activity.record("delivered", webhook(trigger(f"evt_{i}")), T0 + i)
    activity.record("retrying", webhook(url="https://hooks.example:8443/x"), T0)
    activity.record("dead_lettered", email(trigger()), T0)
    states = {
        "https://hooks.example": EndpointState("half_open", T0 + 3, T0 + 33, 1),
        "https://idle.example": EndpointState("closed", T0 - 60, None, 0),
    }

    endpoints = activity.snapshot(T0 + 4, states)["endpoints"]

    assert list(endpoints) == [
        "email",
        "https://hooks.example",
        "https://hooks.example:8443",
        "https://idle.example",
    ]
    hooks = endpoints["https://hooks.example"]
    assert (hooks["delivered"], hooks["retrying"], hooks["dead_lettered"]) == (4, 0, 0)
    assert hooks["in_flight"] == 1
    assert hooks["breaker"] == {
        "state": "half_open",
        "since": T0 + 3,
        "retry_at": T0 + 33,
        "workers": {"closed": 0, "half_open": 1, "open": 0},
    }
    assert endpoints["email"]["dead_lettered"] == 1
    # Known to no breaker (refused before any attempt): closed, never seen.
    assert endpoints["email"]["breaker"]["state"] == "closed"
    assert endpoints["email"]["breaker"]["since"] is None
    assert endpoints["https://idle.example"]["delivered"] == 0


def test_a_webhook_endpoint_is_its_host_without_credentials_or_path() -> None:
    job = webhook(url="https://user:pw@Hooks.Example:8443/services/T0/B1/secret")

    assert endpoint_label(job) == "https://hooks.example:8443"
    assert endpoint_label(webhook(url="http://[::1/x")) == "unparsable target"
    assert endpoint_label(email(trigger())) == "email"


def test_joined_breakers_show_the_worse_and_every_attempt() -> None:
    closed = EndpointState("closed", T0, None, 2)
    opened = EndpointState("open", T0 + 5, T0 + 35, 0)
    earlier = EndpointState("open", T0 + 1, T0 + 31, 1)

    assert joined(None, closed) == closed
    assert joined(closed, opened) == EndpointState("open", T0 + 5, T0 + 35, 2)
    assert joined(opened, earlier) == EndpointState("open", T0 + 1, T0 + 31, 1)


# --- merging ----------------------------------------------------------------------------------


def worker_snapshot(
    outcomes: list[tuple[str, str, float]], states: dict[str, EndpointState] | None = None
) -> dict[str, Any]:
    """A worker's snapshot after ``(outcome, event id, when)`` outcomes to one endpoint."""
    activity = DeliveryActivity()
    for kind, event_id, when in outcomes:
        activity.record(kind, webhook(trigger(event_id)), when)  # type: ignore[arg-type]
    # Through JSON, as the snapshots of the other workers come.
    return orjson.loads(orjson.dumps(activity.snapshot(T0 + 100, states)))


def test_merged_events_keep_the_latest_outcome_per_target() -> None:
    first = worker_snapshot([("retrying", "evt_1", T0), ("delivered", "evt_2", T0 + 2)])
    second = worker_snapshot([("delivered", "evt_1", T0 + 3)])

    merged = merge_snapshots([first, second])

    assert [event["id"] for event in merged["events"]] == ["evt_1", "evt_2"]
    [target] = merged["events"][0]["targets"]
    assert (target["outcome"], target["at"]) == ("delivered", T0 + 3)
    assert merged["events"][0]["at"] == T0 + 3
    assert merged == merge_snapshots([second, first])


def test_merged_endpoints_sum_counts_and_show_the_worst_breaker() -> None:
    endpoint = "https://hooks.example"
    snapshots = [
        worker_snapshot(
            [("delivered", "evt_1", T0)], {endpoint: EndpointState("closed", T0 - 9, None, 1)}
        ),
        worker_snapshot(
            [("retrying", "evt_2", T0)], {endpoint: EndpointState("open", T0 + 7, T0 + 37, 0)}
        ),
        worker_snapshot(
            [("retrying", "evt_3", T0)], {endpoint: EndpointState("open", T0 + 4, T0 + 40, 2)}
        ),
    ]

    merged = merge_snapshots(snapshots)["endpoints"][endpoint]

    assert (merged["delivered"], merged["retrying"], merged["in_flight"]) == (1, 2, 3)
    assert merged["breaker"] == {
        "state": "open",
        "since": T0 + 4,
        "retry_at": T0 + 37,
        "workers": {"closed": 1, "half_open": 0, "open": 2},
    }
    # A merged snapshot merges again: the group of groups is the group.
    assert (
        merge_snapshots([merge_snapshots(snapshots[:2]), snapshots[2]])["endpoints"]
        == (merge_snapshots(snapshots)["endpoints"])
    )


def test_nothing_to_merge_is_an_empty_view() -> None:
    assert merge_snapshots([]) == {"at": None, "events": [], "endpoints": {}}


outcomes = st.lists(
    st.tuples(
        st.sampled_from(["delivered", "retrying", "dead_lettered"]),
        st.sampled_from([f"evt_{i}" for i in range(12)]),
        st.floats(min_value=T0, max_value=T0 + 60),
    ),
    max_size=20,
)
states = st.builds(
    EndpointState,
    st.sampled_from(["closed", "half_open", "open"]),
    st.floats(min_value=T0, max_value=T0 + 60),
    st.none() | st.floats(min_value=T0, max_value=T0 + 600),
    st.integers(min_value=0, max_value=8),
)


@given(
    st.lists(st.tuples(outcomes, states), min_size=1, max_size=5),
    st.randoms(use_true_random=False),
    st.integers(min_value=1, max_value=10),
)
def test_merging_is_bounded_and_its_counts_ignore_the_order(
    workers: list[tuple[list[tuple[str, str, float]], EndpointState]],
    rng: Any,
    bound: int,
) -> None:
    snapshots = [worker_snapshot(done, {"https://hooks.example": state}) for done, state in workers]
    shuffled = snapshots[:]
    rng.shuffle(shuffled)

    merged = merge_snapshots(snapshots, max_events=bound)
    again = merge_snapshots(shuffled, max_events=bound)

    assert len(merged["events"]) <= bound
    assert merged["endpoints"] == again["endpoints"]
    assert [e["id"] for e in merged["events"]] == [e["id"] for e in again["events"]]
    endpoint = merged["endpoints"]["https://hooks.example"]
    for kind in ("delivered", "retrying", "dead_lettered"):
        assert endpoint[kind] == sum(kind == done[0] for outcome, _ in workers for done in outcome)
    assert endpoint["in_flight"] == sum(state.in_flight for _, state in workers)
    assert sum(endpoint["breaker"]["workers"].values()) == len(workers)
    ids = [event["id"] for event in merged["events"]]
    assert len(ids) == len(set(ids))


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_events"):
        DeliveryActivity(max_events=0)
