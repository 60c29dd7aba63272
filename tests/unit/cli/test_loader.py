"""pipeline.cli.files: reading `sessions put` / `orgs put` files, validating before publishing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.cli.files import MAX_REPORTED, mask, parse_entries, report, validate_entries
from pipeline.records.subjects import decode_org_record, decode_session_record

KEY = "5f0c2b9e8a1d4c7f9e3b6a2d8c4f1e7a"
OTHER_KEY = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
assert len(KEY) == len(OTHER_KEY) == 32


def session(*, trigger_limits: list[float] | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "org_id": "org1",
        "quota_max": 1000,
        "quota_renewal_rate": 3600,
        "monitor": {"trigger_limits": [80, 60] if trigger_limits is None else trigger_limits},
        "meta_data": {"developer_email": "dev@example.com"},
        **fields,
    }


def lines(*objects: Any) -> str:
    return "\n".join(json.dumps(o) for o in objects) + "\n"


def parse_only(text: str, source: str = "sessions.jsonl") -> list[tuple[str, bytes | None]]:
    """The entries of a text that has no problems."""
    entries, problems = parse_entries(text, source)
    assert problems == []
    return [(entry.identifier, entry.value) for entry in entries]


def problem_report(text: str, source: str = "sessions.jsonl") -> str:
    """What `sessions put` says of a text with problems (nothing is published)."""
    entries, problems = parse_entries(text, source)
    problems += validate_entries(entries, decode_session_record)
    assert problems
    return report(problems, "sessions")


# --- parse_entries -----------------------------------------------------------------------------


def test_json_object_file() -> None:
    text = json.dumps({KEY: session(), OTHER_KEY: session(quota_max=5)}, indent=2)

    entries = parse_only(text, "sessions.json")

    assert [identifier for identifier, _ in entries] == [KEY, OTHER_KEY]
    assert [json.loads(value or b"null") for _, value in entries] == [
        session(),
        session(quota_max=5),
    ]


def test_json_lines_file_skips_blank_lines() -> None:
    text = (
        json.dumps({KEY: session()})
        + "\n\n   \n"
        + json.dumps({OTHER_KEY: session(quota_max=5), "org-key": session(quota_max=7)})
        + "\n\n"
    )

    entries = parse_only(text)

    assert [identifier for identifier, _ in entries] == [KEY, OTHER_KEY, "org-key"]
    assert json.loads(entries[2][1] or b"null")["quota_max"] == 7


def test_null_values_are_tombstones() -> None:
    entries = parse_only(json.dumps({KEY: None, OTHER_KEY: session()}), "sessions.json")

    assert entries[0] == (KEY, None)
    assert entries[1][1] is not None


def test_null_values_in_json_lines_are_tombstones() -> None:
    assert parse_only(lines({KEY: None}, {OTHER_KEY: None})) == [(KEY, None), (OTHER_KEY, None)]


def test_empty_object_has_no_entries() -> None:
    assert parse_only("{}", "sessions.json") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            lines({KEY: session()}) + "{not json\n", "line 2: not JSON", id="bad-json-line"
        ),
        pytest.param(
            lines({KEY: session()}) + "\n" + "[1, 2]\n",
            "line 3: expected a JSON object",
            id="array-line-after-blank",
        ),
        pytest.param(lines({KEY: session()}, {KEY: 7}), "line 2: entry", id="value-not-object"),
        pytest.param(
            lines({KEY: session()}, {"": session()}), "line 2: an empty id", id="empty-id"
        ),
        pytest.param(
            lines({KEY: session()}) + "null\n", "line 2: expected a JSON object", id="null-line"
        ),
    ],
)
def test_a_single_problem_is_one_line_naming_its_line(text: str, expected: str) -> None:
    message = problem_report(text)

    assert "\n" not in message
    assert message.startswith("sessions.jsonl " + expected)
    assert message.endswith("; no sessions were published")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(json.dumps([session()]), "expected a JSON object", id="array-file"),
        pytest.param(json.dumps({KEY: "quota 1000"}), "not an object or null", id="string-value"),
        pytest.param(json.dumps({"": session()}), "an empty id", id="empty-id"),
    ],
)
def test_json_object_errors(text: str, expected: str) -> None:
    assert expected in problem_report(text, "sessions.json")


def test_error_about_an_entry_masks_its_id() -> None:
    message = problem_report(json.dumps({KEY: [80]}), "sessions.json")

    assert KEY not in message
    assert mask(KEY) in message


def test_every_problem_is_reported_in_file_order() -> None:
    text = (
        lines({KEY: session(trigger_limits=[100.0001])})
        + "not json\n"
        + lines({OTHER_KEY: session()}, {"k3": 5}, {"k4": session(quota_max="x")})
    )

    message = problem_report(text)

    first, *rest = message.splitlines()
    assert first == "4 bad entries; no sessions were published:"
    assert [line.split(":")[0] for line in rest] == [
        f"  sessions.jsonl line {n}" for n in (1, 2, 4, 5)
    ]
    # The value as written, not rounded to 100.
    assert "trigger limit 100.0001 is outside (0, 100]" in rest[0]


def test_a_long_list_of_problems_is_cut_and_counted() -> None:
    text = "".join("not json\n" for _ in range(MAX_REPORTED + 7))

    message = problem_report(text)

    assert len(message.splitlines()) == 1 + MAX_REPORTED + 1
    assert message.endswith("… and 7 more")


# --- validate_entries --------------------------------------------------------------------------


def test_valid_entries_pass() -> None:
    entries, _ = parse_entries(lines({KEY: session()}, {OTHER_KEY: None}), "sessions.jsonl")

    assert validate_entries(entries, decode_session_record) == []


def test_trigger_limit_150_is_refused_with_a_masked_id() -> None:
    entries, _ = parse_entries(
        lines({OTHER_KEY: session()}, {KEY: session(trigger_limits=[80, 150])}), "sessions.jsonl"
    )

    [problem] = validate_entries(entries, decode_session_record)

    message = report([problem], "sessions")
    assert message.startswith(f"sessions.jsonl line 2: entry {mask(KEY)}: ")
    assert "monitor.trigger_limits" in message
    assert "150" in message
    assert KEY not in message
    assert KEY[4:-4] not in message


def test_an_api_key_too_long_to_be_a_record_key_is_refused() -> None:
    entries, _ = parse_entries(json.dumps({"k" * 5000: session()}), "sessions.json")

    [problem] = validate_entries(entries, decode_session_record)

    assert "at most 4096 characters" in problem.what


def test_org_entries_validate_with_decode_org_record() -> None:
    text = json.dumps(
        {
            "org1": {"monitor": {"trigger_limits": [0]}},
            "org2": {"event_options": {"key_event": {"webhook": "ftp://x", "email": "nope"}}},
        }
    )
    entries, _ = parse_entries(text, "orgs")

    problems = validate_entries(entries, decode_org_record, show=str)

    assert [problem.what.split(":")[0] for problem in problems] == ["entry org1", "entry org2"]
    assert "monitor.trigger_limits" in problems[0].what
    assert "'ftp://x' is not an http(s) URL" in problems[1].what
    assert "'nope' is not an email address" in problems[1].what


# --- mask --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identifier", "expected"),
    [
        (KEY, "5f0c…1e7a"),
        ("org1", "o…1"),
        ("abcdefgh", "ab…gh"),
        ("demo-key-bob", "dem…bob"),
        ("abc", "…"),
        ("a", "…"),
        ("", "…"),
    ],
)
def test_mask(identifier: str, expected: str) -> None:
    assert mask(identifier) == expected


@pytest.mark.parametrize("length", [9, 16, 32, 64])
def test_mask_never_shows_the_whole_id(length: int) -> None:
    identifier = "".join(chr(ord("a") + i % 26) for i in range(length))

    assert identifier not in mask(identifier)
    assert len(mask(identifier)) <= 9
