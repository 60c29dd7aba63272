"""What a sync pass publishes (pipeline.sync.changes): the subset, its fingerprint, and the
records and tombstones that bring quota.sessions and quota.orgs up to the gateway."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from pipeline.records.subjects import decode_session
from pipeline.sync.changes import (
    HEADERS,
    SessionState,
    apply_changes,
    diff_orgs,
    diff_sessions,
    encode_session,
    fingerprint,
    from_sync,
    session_subset,
)

#: A Tyk < 5.12 session: every field written, zeros and nulls included, and the fields that
#: move with every request.
FULL = {
    "last_check": 0,
    "allowance": 1000,
    "rate": 1000,
    "per": 60,
    "expires": 0,
    "quota_max": 1000,
    "quota_renews": 1764334800,
    "quota_remaining": 990,
    "quota_renewal_rate": 3600,
    "org_id": "acme",
    "is_inactive": False,
    "monitor": {"trigger_limits": [80.0, 50]},
    "meta_data": {"developer_email": "dev@example.com"},
    "tags": None,
    "access_rights": {"api1": {"api_id": "api1", "versions": ["v1"]}},
}


def encoded(**fields: Any) -> bytes:
    return encode_session({**FULL, **fields})


def state_of(synced: dict[str, bytes] = {}, foreign: dict[str, bytes] = {}) -> SessionState:  # noqa: B006
    state = SessionState()
    for key, value in synced.items():
        state.fold(key, value, synced=True)
    for key, value in foreign.items():
        state.fold(key, value, synced=False)
    return state


def test_the_subset_is_the_fields_the_worker_reads() -> None:
    assert session_subset(FULL) == {
        "org_id": "acme",
        "quota_max": 1000,
        "quota_renewal_rate": 3600,
        "monitor": {"trigger_limits": [80, 50]},
        "meta_data": {"developer_email": "dev@example.com"},
    }
    decoded = decode_session(encode_session(FULL))
    assert decoded is not None
    assert decoded.quota_max == 1000
    assert decoded.monitor.trigger_limits == (80, 50)


def test_tyk_5_12_omitted_zero_fields_read_as_the_zeros_older_versions_write() -> None:
    older = {**FULL, "org_id": "", "quota_max": 0, "quota_renewal_rate": 0}
    older |= {"monitor": {"trigger_limits": None}, "meta_data": None}
    newer = {"allowance": 1000, "rate": 1000, "per": 60}  # omitzero: nothing else
    assert encode_session(newer) == encode_session(older)
    assert session_subset(newer) == {
        "org_id": "",
        "quota_max": 0,
        "quota_renewal_rate": 0,
        "monitor": {"trigger_limits": []},
        "meta_data": {},
    }
    decoded = decode_session(encode_session(newer))
    assert decoded is not None
    assert decoded.unlimited  # quota_max 0: Tyk counts no quota, nor does the worker
    assert not decoded.renews


def test_fields_outside_the_subset_change_nothing() -> None:
    state = state_of(synced={"k": encoded()})
    moved = encoded(quota_remaining=3, last_check=1764331999, allowance=7, quota_renews=1)
    changes = diff_sessions(state, {"k": moved})
    assert changes.records == []
    assert changes.unchanged == 1


def test_new_changed_unchanged_and_gone() -> None:
    state = state_of(synced={"same": encoded(), "quota": encoded(), "deleted": encoded()})
    fetched = {"same": encoded(), "quota": encoded(quota_max=2000), "fresh": encoded()}

    changes = diff_sessions(state, fetched)

    assert changes.records == [("quota", encoded(quota_max=2000)), ("fresh", encoded())]
    assert changes.tombstones == ["deleted"]
    assert (changes.new, changes.changed, changes.unchanged) == (1, 1, 1)
    assert changes.invalid == []


def test_sessions_put_by_others_are_never_tombstoned_but_overwritten_when_tyk_differs() -> None:
    put = orjson.dumps({"org_id": "acme", "quota_max": 1000, "quota_renewal_rate": 3600})
    state = state_of(foreign={"put-only": put, "put-same": put, "put-other": put})
    same = encode_session({"org_id": "acme", "quota_max": 1000.0, "quota_renewal_rate": 3600})
    fetched = {"put-same": same, "put-other": encoded(quota_max=5)}

    changes = diff_sessions(state, fetched)

    assert changes.tombstones == []
    assert changes.records == [("put-other", encoded(quota_max=5))]
    assert changes.unchanged == 1
    apply_changes(state, changes)
    assert set(state.synced) == {"put-other"}  # a sync's now: tombstoned once Tyk drops it
    assert set(state.foreign) == {"put-only", "put-same"}


def test_a_tombstone_by_anyone_forgets_the_key() -> None:
    state = state_of(synced={"k": encoded()})
    state.fold("k", None, synced=False)
    changes = diff_sessions(state, {})
    assert changes.tombstones == []
    assert diff_sessions(state, {"k": encoded()}).new == 1


def test_a_session_the_worker_would_reject_is_neither_published_nor_tombstoned() -> None:
    state = state_of(synced={"bad": encoded()})
    changes = diff_sessions(state, {"bad": encoded(monitor={"trigger_limits": [150]})})
    assert changes.records == []
    assert changes.tombstones == []
    assert changes.invalid == [
        ("bad", "monitor.trigger_limits: trigger limit 150 is outside (0, 100]")
    ]


def test_records_from_sync_carry_the_header() -> None:
    assert from_sync(HEADERS)
    assert not from_sync([])
    assert not from_sync(None)
    assert not from_sync([("quota-pipeline-source", b"someone-else")])


def test_orgs_keep_their_event_options_and_take_tyk_quota_fields() -> None:
    options = {"trigger_event": {"webhook": "https://hooks.example.com/acme"}}
    current = {
        "acme": {"quota_max": 100, "quota_renewal_rate": 60, "event_options": options},
        "same": {"quota_max": 5, "quota_renewal_rate": 0, "monitor": {"trigger_limits": []}},
    }
    fetched = {
        "acme": {"quota_max": 500, "quota_remaining": 3, "org_id": "acme"},
        "same": {"quota_max": 5, "quota_remaining": 1},
        "fresh": {"quota_max": 7, "quota_renewal_rate": 10},
    }

    changes = diff_orgs(current, fetched)

    assert [org_id for org_id, _ in changes.records] == ["acme", "fresh"]
    acme = orjson.loads(changes.records[0][1])
    assert acme == {
        "quota_max": 500,
        "quota_renewal_rate": 0,
        "monitor": {"trigger_limits": []},
        "event_options": options,
    }
    assert changes.unchanged == 1


limits = st.lists(st.integers(1, 100), max_size=3)
sessions = st.fixed_dictionaries(
    {},
    optional={
        "org_id": st.sampled_from(["acme", "globex", "", None]),
        "quota_max": st.integers(-1, 5),
        "quota_renewal_rate": st.sampled_from([0, 60, 3600, None]),
        "monitor": st.one_of(st.none(), st.fixed_dictionaries({"trigger_limits": limits})),
        "meta_data": st.one_of(st.none(), st.just({"developer_email": "d@example.com"})),
        "quota_remaining": st.integers(0, 10),
    },
)
keys = st.sampled_from([f"k{i}" for i in range(8)])


@given(
    synced=st.dictionaries(keys, sessions),
    foreign=st.dictionaries(keys, sessions),
    fetched=st.dictionaries(keys, sessions),
)
def test_applying_a_pass_yields_exactly_the_fetched_sessions(
    synced: dict[str, Any], foreign: dict[str, Any], fetched: dict[str, Any]
) -> None:
    """After a pass, every fetched key is in quota.sessions with its subset, keys a sync had
    published and the gateway no longer serves are gone, and others' keys stay."""
    state = state_of(
        synced={key: encode_session(s) for key, s in synced.items()},
        foreign={key: orjson.dumps(s) for key, s in foreign.items() if key not in synced},
    )
    before_foreign = dict(state.foreign)
    encoded_fetched = {key: encode_session(s) for key, s in fetched.items()}

    changes = diff_sessions(state, encoded_fetched)
    apply_changes(state, changes)

    for key, value in encoded_fetched.items():
        assert state.known(key) == fingerprint(value)
    assert set(state.synced) <= set(encoded_fetched)
    for key, print_ in before_foreign.items():
        if key not in encoded_fetched:
            assert state.foreign[key] == print_
    published = {key for key, _ in changes.records}
    assert published.isdisjoint(changes.tombstones)
    # A second pass over the same sessions publishes nothing.
    again = diff_sessions(state, encoded_fetched)
    assert again.records == []
    assert again.tombstones == []
