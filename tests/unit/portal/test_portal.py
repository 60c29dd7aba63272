"""pipeline.portal.events: decoding portal events, their ids, and whom developers' emails go to."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.errors import InvalidRecord
from pipeline.portal.events import EVENT_NAMES, decode_portal_event, developer_address, position_id


def decode(value: Any) -> Any:
    return decode_portal_event(orjson.dumps(value), default_id="evt_default")


def test_the_contract_names_twelve_events() -> None:
    assert len(EVENT_NAMES) == 12
    assert "key_request_event.submitted" in EVENT_NAMES


def test_an_event_keeps_its_own_id_or_takes_the_default() -> None:
    data = {"email": "d@x.example"}
    assert decode({"event": "developer_event.signed_up", "org_id": "o", "data": data}).id == (
        "evt_default"
    )
    event = decode({"event": "api_event.created", "org_id": "o", "data": {}, "id": "evt_api"})
    assert (event.id, event.option, event.action) == ("evt_api", "api_event", "created")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"event": "api_event.exploded", "org_id": "o", "data": {}}, "unknown event"),
        ({"event": 7, "org_id": "o", "data": {}}, "event must be a string"),
        ({"event": "api_event.created", "org_id": "", "data": {}}, "org_id"),
        ({"event": "api_event.created", "org_id": "o", "data": []}, "data must be a JSON object"),
        ({"event": "api_event.created", "org_id": "o", "data": {}, "id": ""}, "id, when given"),
        ([1, 2], "not an object"),
    ],
)
def test_bad_events_say_what_is_wrong(value: Any, reason: str) -> None:
    with pytest.raises(InvalidRecord, match=reason):
        decode(value)


def test_position_ids_are_stable_and_distinct() -> None:
    assert position_id("portal.events", 0, 5) == position_id("portal.events", 0, 5)
    assert position_id("portal.events", 0, 5) != position_id("portal.events", 1, 5)


def test_developers_hear_about_their_key_requests_and_sign_up_only() -> None:
    nested = {"portal_developer": {"email": "nested@x.example"}, "email": "own@x.example"}
    key_request = decode({"event": "key_request_event.approved", "org_id": "o", "data": nested})
    sign_up = decode({"event": "developer_event.approved", "org_id": "o", "data": nested})
    api = decode({"event": "api_event.created", "org_id": "o", "data": nested})

    assert developer_address(key_request) == "nested@x.example"
    assert developer_address(sign_up) == "own@x.example"
    assert developer_address(api) is None
    empty = decode({"event": "developer_event.rejected", "org_id": "o", "data": {}})
    assert developer_address(empty) is None
