"""pipeline.ops.letters: notifications.dlq's records as the dead-letter panel's rows, its
filters, and the letters an operator picks for redrive."""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.delivery.jobs import MAX_DEAD_LETTER_EVENT_BYTES, DeliveryJob, dead_letter
from pipeline.errors import RetriableDeliveryError
from pipeline.ops.letters import LetterFilter, letter_row, letter_rows, picked
from tests.unit.samples import KEY, T0
from tests.unit.samples import trigger as sample_trigger

#: 2025-11-28 12:00:00 UTC.
HOOK = "https://hooks.example/q"


class Record(NamedTuple):
    """The fields of an aiokafka ConsumerRecord that the panel reads."""

    partition: int
    offset: int
    value: bytes | None


def trigger(event_id: str = "evt_1", key: str = KEY, **changes: Any) -> dict[str, Any]:
    return sample_trigger(event_id, key, ts=T0 - 600, **changes)


def failed(
    event: dict[str, Any],
    url: str = HOOK,
    *,
    at: float = T0,
    status: int | None = 503,
    attempts: int = 3,
    channel: str = "webhook",
) -> DeliveryJob:
    """A job after ``attempts`` failed attempts a minute apart, the last at ``at``."""
    method = "EMAIL" if channel == "email" else "POST"
    job = DeliveryJob(event["id"], method, url, b"{}", {}, event, channel=channel)
    for attempt in range(attempts):
        error = (
            RetriableDeliveryError("timed out")
            if status is None
            else RetriableDeliveryError(f"endpoint answered {status}", status=status)
        )
        job = job.attempted(at - 60 * (attempts - 1 - attempt), error, None)
    return job


def letter(job: DeliveryJob, reason: str | None = None) -> bytes:
    """The dead letter the router writes for ``job``."""
    return dead_letter(job, job.last_error if reason is None else reason)


def row_of(job: DeliveryJob, reason: str | None = None) -> dict[str, Any]:
    row = letter_row(0, 7, letter(job, reason))
    assert row is not None
    return row


# --- rows -----------------------------------------------------------------------------------------


def test_a_dead_letter_is_a_row_named_by_where_it_is() -> None:
    row = letter_row(2, 41, letter(failed(trigger())))

    assert row == {
        "ref": "2:41",
        "id": "evt_1",
        "channel": "webhook",
        "target": "https://hooks.example",
        "event": "TriggerExceeded",
        "org": "acme",
        "key": "…4711",
        "attempts": 3,
        "last_status": 503,
        "last_error": "endpoint answered 503",
        "last_attempt_at": T0,
        "cut": False,
    }


def test_a_webhook_target_is_shown_by_scheme_host_and_port_only() -> None:
    url = "https://bot:pa55word@Hooks.Chat.Example:8443/services/T000/B000/XoXoSeCrEt?token=t0k3n"

    row = row_of(failed(trigger(), url), reason="endpoint answered 404")
    dumped = orjson.dumps(row)

    assert row["target"] == "https://hooks.chat.example:8443"
    for secret in (b"XoXoSeCrEt", b"t0k3n", b"pa55word", b"/services/"):
        assert secret not in dumped


def test_an_email_target_is_a_masked_address() -> None:
    job = failed(trigger(), "mailto:dev.person@example.com", status=None, channel="email")

    row = row_of(job)

    assert (row["channel"], row["target"]) == ("email", "mailto:d…@example.com")
    assert b"dev.person" not in orjson.dumps(row)


def test_the_key_is_masked_and_never_in_the_row() -> None:
    row = row_of(failed(trigger()))

    assert row["key"] == "…4711"
    assert KEY.encode() not in orjson.dumps(row)


def test_an_org_trigger_has_no_key() -> None:
    row = row_of(failed(trigger(key="")))

    assert (row["key"], row["org"]) == ("", "acme")


def test_a_portal_event_letter_is_named_by_its_kind_and_org() -> None:
    portal = {
        "id": "evt_p",
        "event": "key_request_event.created",
        "org_id": "acme",
        "data": {"developer_email": "dev@example.com", "key": KEY},
    }

    row = row_of(failed(portal, status=400, attempts=1), reason="endpoint answered 400")

    assert (row["event"], row["org"], row["key"]) == ("key_request_event.created", "acme", "")
    assert (row["attempts"], row["last_status"]) == (1, 400)


def test_a_letter_without_an_answer_has_no_status() -> None:
    row = row_of(failed(trigger(), status=None))

    assert (row["last_status"], row["last_error"]) == (None, "timed out")


def test_a_letter_whose_event_was_cut_for_size_says_so_and_is_still_named() -> None:
    huge = trigger(blob="x" * MAX_DEAD_LETTER_EVENT_BYTES)

    row = row_of(failed(huge))

    assert row["cut"] is True
    assert (row["id"], row["event"], row["org"], row["key"]) == (
        "evt_1",
        "TriggerExceeded",
        "acme",
        "…4711",
    )
    assert row_of(failed(trigger()))["cut"] is False


def test_a_letter_never_attempted_is_shown_at_time_zero() -> None:
    # Refused before any attempt (a template failed): the router records one attempt at most.
    job = DeliveryJob("evt_1", "POST", HOOK, b"{}", {}, trigger())

    row = row_of(job, reason="webhook template failed")

    assert (row["attempts"], row["last_attempt_at"], row["last_status"]) == (1, 0.0, None)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"not json",
        b"\xff\xfe\x00",
        b"null",
        b"[]",
        b"42",
        b'"evt_1"',
        b"{}",
        b'{"id": 7}',
        b'{"id": null, "event": {}}',
        b'{"event": {"id": "evt_1"}}',
        # A retry tier's job, not a dead letter: its id is "event_id".
        failed(trigger()).to_bytes(),
    ],
    ids=repr,
)
def test_a_value_that_is_not_a_dead_letter_has_no_row(raw: bytes | None) -> None:
    assert letter_row(0, 0, raw) is None


def test_a_letter_with_fields_of_the_wrong_types_is_still_shown() -> None:
    raw = orjson.dumps(
        {
            "id": "evt_odd",
            "channel": ["webhook"],
            "target": "https://hooks.example:99999/x",
            "event": ["TriggerExceeded"],
            "last_status": "503",
            "last_error": {"error": "x"},
            "last_attempt_at": "yesterday",
        }
    )

    row = letter_row(0, 3, raw)

    assert row is not None
    assert (row["id"], row["channel"], row["target"], row["event"]) == (
        "evt_odd",
        "webhook",
        "unparsable target",
        "",
    )
    assert (row["last_status"], row["last_error"], row["last_attempt_at"]) == (None, "", 0.0)


#: Values a dead letter's fields might hold, right or wrong.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
LETTER_FIELDS = [
    "id",
    "channel",
    "target",
    "event",
    "event_cut",
    "attempts",
    "last_status",
    "last_error",
    "first_attempt_at",
    "last_attempt_at",
]
letter_like = st.fixed_dictionaries(
    {"id": st.text()},
    optional={
        **dict.fromkeys(LETTER_FIELDS[1:], json_values),
        "event": st.fixed_dictionaries(
            {}, optional=dict.fromkeys(("event", "org", "org_id", "key"), json_values)
        )
        | json_values,
        "target": st.sampled_from(
            [HOOK, "mailto:a@b.example", "http://[::1/x", "https://h:x/", "", "hooks"]
        )
        | st.text(),
    },
).map(orjson.dumps)


@settings(max_examples=400)
@given(raw=st.none() | st.binary() | letter_like)
def test_letter_row_never_raises_and_its_fields_are_of_their_types(raw: bytes | None) -> None:
    row = letter_row(1, 2, raw)

    if row is not None:
        assert row["ref"] == "1:2"
        for name in ("id", "channel", "target", "event", "org", "key", "last_error"):
            assert isinstance(row[name], str), name
        assert type(row["last_status"]) in (int, type(None))
        assert isinstance(row["last_attempt_at"], float)
        assert row["cut"] in (True, False)
        orjson.dumps(row)


# --- filters --------------------------------------------------------------------------------------


def test_a_filter_is_read_from_the_query_trimmed_and_capped() -> None:
    query = {
        "target": "  hooks.example ",
        "event": "TriggerExceeded\n",
        "status": "\t5xx",
        "text": "x" * 500,
        "page": "2",
    }

    assert LetterFilter.from_query(query) == LetterFilter(
        "hooks.example", "TriggerExceeded", "5xx", "x" * 200
    )
    assert LetterFilter.from_query({}) == LetterFilter("", "", "", "")


ROWS = {
    "not found": row_of(failed(trigger("evt_404"), "https://a.example/x", status=404)),
    "unavailable": row_of(failed(trigger("evt_503"), "https://B.example:8443/y", status=503)),
    "timed out": row_of(failed(trigger("evt_none"), "https://c.example/", status=None)),
    "portal": row_of(
        failed(
            {"id": "evt_portal", "event": "key_event.updated", "org_id": "acme"},
            "https://a.example/p",
            status=500,
        ),
        reason="endpoint answered 500: Internal Server Error",
    ),
}


def admitted(wanted: LetterFilter) -> list[str]:
    return [name for name, row in ROWS.items() if wanted.admits(row)]


def test_an_empty_filter_admits_every_letter() -> None:
    assert admitted(LetterFilter()) == list(ROWS)


@pytest.mark.parametrize(
    ("target", "names"),
    [
        ("a.example", ["not found", "portal"]),
        ("A.EXAMPLE", ["not found", "portal"]),
        ("b.example:8443", ["unavailable"]),
        ("https://c", ["timed out"]),
        # The path is not shown, so it cannot be filtered on.
        ("/x", []),
        ("d.example", []),
    ],
)
def test_the_target_filter_is_a_part_of_the_shown_target_in_any_case(
    target: str, names: list[str]
) -> None:
    assert admitted(LetterFilter(target=target)) == names


@pytest.mark.parametrize(
    ("event", "names"),
    [
        ("TriggerExceeded", ["not found", "unavailable", "timed out"]),
        ("key_event.updated", ["portal"]),
        ("Trigger", []),
        ("triggerexceeded", []),
    ],
)
def test_the_event_filter_is_the_exact_event_type(event: str, names: list[str]) -> None:
    assert admitted(LetterFilter(event=event)) == names


@pytest.mark.parametrize(
    ("status", "names"),
    [
        ("4xx", ["not found"]),
        ("5xx", ["unavailable", "portal"]),
        ("none", ["timed out"]),
        ("503", ["unavailable"]),
        ("404", ["not found"]),
        ("2xx", []),
        ("50", []),
        ("5XX", []),
    ],
)
def test_the_status_filter_is_a_class_no_answer_or_one_status(
    status: str, names: list[str]
) -> None:
    assert admitted(LetterFilter(status=status)) == names


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("evt_50", ["unavailable"]),
        ("EVT_PORTAL", ["portal"]),
        ("answered 50", ["unavailable", "portal"]),
        ("internal server", ["portal"]),
        ("TIMED", ["timed out"]),
        ("nowhere", []),
    ],
)
def test_the_text_filter_is_a_part_of_the_id_or_the_error_in_any_case(
    text: str, names: list[str]
) -> None:
    assert admitted(LetterFilter(text=text)) == names


def test_every_filter_given_must_admit_the_letter() -> None:
    assert admitted(LetterFilter(target="a.example", status="5xx")) == ["portal"]
    assert admitted(LetterFilter(target="a.example", event="TriggerExceeded")) == ["not found"]
    assert admitted(LetterFilter("a.example", "TriggerExceeded", "5xx", "")) == []


@settings(max_examples=300)
@given(
    query=st.dictionaries(
        st.sampled_from(["target", "event", "status", "text"]),
        st.text() | st.sampled_from(["4xx", "5xx", "none", "\u00b2xx", "\u0665xx", "503", "1e3"]),
    )
)
def test_any_filter_from_any_query_admits_or_not_without_raising(query: dict[str, str]) -> None:
    wanted = LetterFilter.from_query(query)

    for row in ROWS.values():
        assert wanted.admits(row) in (True, False)


# --- the panel and redrive ------------------------------------------------------------------------


def dlq_records() -> list[Record]:
    """A dead-letter topic of two partitions, with a value that is not a dead letter."""
    return [
        Record(0, 0, letter(failed(trigger("evt_a"), at=T0))),
        Record(0, 1, b"garbage"),
        Record(0, 2, letter(failed(trigger("evt_c"), at=T0 + 30))),
        Record(1, 0, letter(failed(trigger("evt_b"), at=T0 + 10))),
        # The same event dead-lettered at a second target: its own letter.
        Record(1, 1, letter(failed(trigger("evt_a"), "mailto:x@y.example", channel="email"))),
        Record(1, 2, None),
    ]


def test_the_panel_shows_every_letter_newest_attempt_first() -> None:
    rows = letter_rows(dlq_records())

    assert [(row["ref"], row["id"]) for row in rows] == [
        ("0:2", "evt_c"),
        ("1:0", "evt_b"),
        ("0:0", "evt_a"),
        ("1:1", "evt_a"),
    ]
    assert [row["last_attempt_at"] for row in rows] == [T0 + 30, T0 + 10, T0, T0]
    assert letter_rows([]) == []


def test_picked_are_the_stored_letters_at_the_refs_only() -> None:
    records = dlq_records()

    letters = picked(records, ["1:1", "0:0", "9:9"])

    assert letters == [orjson.loads(records[0].value), orjson.loads(records[4].value)]
    assert [(one["id"], one["channel"]) for one in letters] == [
        ("evt_a", "webhook"),
        ("evt_a", "email"),
    ]
    # Stored as they are: the full target and the raw key, for the redrive.
    assert letters[0]["target"] == HOOK
    assert letters[0]["event"]["key"] == KEY


def test_picking_nothing_or_what_is_not_a_letter_picks_nothing() -> None:
    records = [*dlq_records(), Record(2, 0, b'{"id": "evt_x", "event": "not an object"}')]

    assert picked(records, []) == []
    assert picked(records, ["0:1", "1:2", "2:0"]) == []
    assert picked(records, ["0:00", " 0:0", "0"]) == []
