"""pipeline.loader: reading `sessions put` / `orgs put` files, validating before publishing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.errors import UsageError
from pipeline.loader import mask, parse_entries, validate_entries
from pipeline.models import decode_org, decode_session

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


def usage_error(text: str, source: str = "sessions.jsonl") -> str:
    with pytest.raises(UsageError) as caught:
        parse_entries(text, source)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(source)
    return message


# --- parse_entries -----------------------------------------------------------------------------


def test_json_object_file() -> None:
    text = json.dumps({KEY: session(), OTHER_KEY: session(quota_max=5)}, indent=2)

    entries = parse_entries(text, "sessions.json")

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

    entries = parse_entries(text, "sessions.jsonl")

    assert [identifier for identifier, _ in entries] == [KEY, OTHER_KEY, "org-key"]
    assert json.loads(entries[2][1] or b"null")["quota_max"] == 7


def test_null_values_are_tombstones() -> None:
    entries = parse_entries(json.dumps({KEY: None, OTHER_KEY: session()}), "sessions.json")

    assert entries[0] == (KEY, None)
    assert entries[1][1] is not None


def test_null_values_in_json_lines_are_tombstones() -> None:
    entries = parse_entries(lines({KEY: None}, {OTHER_KEY: None}), "sessions.jsonl")

    assert entries == [(KEY, None), (OTHER_KEY, None)]


def test_empty_object_has_no_entries() -> None:
    assert parse_entries("{}", "sessions.json") == []


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
def test_json_lines_errors_name_the_line(text: str, expected: str) -> None:
    assert expected in usage_error(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(json.dumps([session()]), "expected a JSON object", id="array-file"),
        pytest.param(json.dumps({KEY: "quota 1000"}), "not an object or null", id="string-value"),
        pytest.param(json.dumps({"": session()}), "an empty id", id="empty-id"),
    ],
)
def test_json_object_errors(text: str, expected: str) -> None:
    assert expected in usage_error(text, "sessions.json")


def test_error_about_an_entry_masks_its_id() -> None:
    message = usage_error(json.dumps({KEY: [80]}), "sessions.json")

    assert KEY not in message
    assert mask(KEY) in message


# --- validate_entries --------------------------------------------------------------------------


def test_valid_entries_pass() -> None:
    entries = parse_entries(lines({KEY: session()}, {OTHER_KEY: None}), "sessions.jsonl")

    validate_entries(entries, decode_session, "sessions.jsonl")


def test_trigger_limit_150_is_refused_with_a_masked_id() -> None:
    entries = parse_entries(
        lines({OTHER_KEY: session()}, {KEY: session(trigger_limits=[80, 150])}), "sessions.jsonl"
    )

    with pytest.raises(UsageError) as caught:
        validate_entries(entries, decode_session, "sessions.jsonl")

    message = str(caught.value)
    assert message.startswith(f"sessions.jsonl: entry {mask(KEY)}: ")
    assert "monitor.trigger_limits" in message
    assert "150" in message
    assert KEY not in message
    assert KEY[4:-4] not in message


def test_org_entries_validate_with_decode_org() -> None:
    entries = parse_entries(json.dumps({"org1": {"monitor": {"trigger_limits": [0]}}}), "orgs")

    with pytest.raises(UsageError, match=r"orgs: entry org1: monitor\.trigger_limits"):
        validate_entries(entries, decode_org, "orgs", show=str)


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
