"""pipeline.service.org_directory: every org's event_options from quota.orgs records."""

from __future__ import annotations

import orjson

from pipeline.service.org_directory import OrgDirectory

HOOK = {"trigger_event": {"webhook": "https://acme.example/hook"}}


def test_orgs_are_added_replaced_and_forgotten() -> None:
    directory = OrgDirectory()
    directory.apply(b"acme", orjson.dumps({"event_options": HOOK}))
    assert directory.get("acme") == HOOK

    mail = {"key_event": {"email": "desk@acme.example"}}
    directory.apply(b"acme", orjson.dumps({"event_options": mail}))
    assert directory.get("acme") == mail

    directory.apply(b"acme", None)
    assert directory.get("acme") is None


def test_an_invalid_org_keeps_the_previous_one_and_keyless_records_are_ignored() -> None:
    directory = OrgDirectory()
    directory.apply(b"acme", orjson.dumps({"event_options": HOOK}))
    directory.apply(b"acme", b"not json")
    directory.apply(b"acme", orjson.dumps({"quota_max": "lots"}))
    directory.apply(None, orjson.dumps({"event_options": HOOK}))

    assert directory.get("acme") == HOOK
