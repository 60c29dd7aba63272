"""Portal and dashboard events (``portal.events``): decoding, ids and recipients (pure).

``{"event": "<option>.<action>", "org_id": …, "data": {…}}``; see schemas/portal_event.json.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from pipeline.errors import InvalidRecord
from pipeline.records.checks import MAX_ID_LENGTH, decode_json_object, quoted

#: Every event name of the contract, by the event_options entry that receives it.
ACTIONS: dict[str, tuple[str, ...]] = {
    "api_event": ("created", "updated", "deleted"),
    "key_event": ("created", "updated", "deleted"),
    "key_request_event": ("submitted", "approved", "rejected"),
    "developer_event": ("signed_up", "approved", "rejected"),
}
#: An event's own id is the webhook-id header of its deliveries: a header, so short.
MAX_EVENT_ID_LENGTH = 256
EVENT_NAMES = frozenset(
    f"{option}.{action}" for option, actions in ACTIONS.items() for action in actions
)


@dataclass(frozen=True, slots=True)
class PortalEvent:
    #: ``<option>.<action>``, one of EVENT_NAMES.
    name: str
    org_id: str
    data: dict[str, Any]
    #: The webhook-id of its deliveries: the event's own ``id`` when it has one (the HTTP API
    #: gives every event one), else derived from where it sits in Kafka.
    id: str

    @property
    def option(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def action(self) -> str:
        return self.name.split(".", 1)[1]

    def delivered_payload(self) -> dict[str, Any]:
        """The event as its delivery jobs (and dead letters) carry it."""
        return {"id": self.id, "event": self.name, "org_id": self.org_id, "data": self.data}

    def webhook_body(self) -> dict[str, Any]:
        """What the org's webhook receives: the event and its data exactly as received."""
        return {"event": self.name, "data": self.data}


def position_id(topic: str, partition: int, offset: int) -> str:
    """A stable id for an event without one: a replay of the same record gets the same id."""
    material = f"portal\x1f{topic}\x1f{partition}\x1f{offset}"
    return "evt_" + hashlib.sha256(material.encode()).hexdigest()[:32]


def decode_portal_event(raw: bytes | None, *, default_id: str) -> PortalEvent:
    """Validate one ``portal.events`` value; InvalidRecord says what is wrong with it."""
    value = decode_json_object(raw)
    name = value.get("event")
    if not isinstance(name, str):
        raise InvalidRecord("event must be a string naming the event")
    if name not in EVENT_NAMES:
        raise InvalidRecord(
            f"unknown event {quoted(name)}; expected one of {', '.join(sorted(EVENT_NAMES))}"
        )
    org_id = value.get("org_id")
    if not isinstance(org_id, str) or not org_id:
        raise InvalidRecord("org_id must be a non-empty string")
    if len(org_id) > MAX_ID_LENGTH:
        raise InvalidRecord(f"org_id must be at most {MAX_ID_LENGTH} characters")
    data = value.get("data")
    if not isinstance(data, dict):
        raise InvalidRecord("data must be a JSON object")
    event_id = value.get("id")
    if event_id is not None and (
        not isinstance(event_id, str) or not event_id or len(event_id) > MAX_EVENT_ID_LENGTH
    ):
        raise InvalidRecord(
            f"id, when given, must be a non-empty string of at most {MAX_EVENT_ID_LENGTH} "
            "characters"
        )
    return PortalEvent(name, org_id, data, event_id or default_id)


#: Email template per event name; api_event and key_event share one per option.
TEMPLATES: dict[str, str] = {
    **{f"api_event.{action}": "api_event" for action in ACTIONS["api_event"]},
    **{f"key_event.{action}": "key_event" for action in ACTIONS["key_event"]},
    **{
        f"key_request_event.{action}": f"key_request_{action}"
        for action in ACTIONS["key_request_event"]
    },
    **{f"developer_event.{action}": f"developer_{action}" for action in ACTIONS["developer_event"]},
}


def developer_address(event: PortalEvent) -> str | None:
    """The developer an event concerns, for the events developers are told about: their key
    requests and their sign-up. None for every other event, or when the data has no address."""
    if event.option not in ("key_request_event", "developer_event"):
        return None
    developer = event.data.get("portal_developer")
    nested = developer.get("email") if isinstance(developer, dict) else None
    own = event.data.get("email")
    first = (nested, own) if event.option == "key_request_event" else (own, nested)
    return next((address for address in first if isinstance(address, str) and address), None)
