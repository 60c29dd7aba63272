"""Hits summed per key and second; the org-only ones as org partials."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from pipeline.ingest.aggregate import Aggregate
from pipeline.ingest.hits import Hit
from pipeline.records.requests import decode_request
from pipeline.usage.partials import decode_partial, is_new, marked
from tests.unit.ingest.reading import aggregate_of


def requests_of(aggregate: Aggregate) -> list[dict]:
    counts = []
    for key, value in aggregate.request_counts():
        request = decode_request(key, value)  # the record key is value.key, as the contract asks
        counts.append(orjson.loads(value))
        assert request.count == counts[-1]["count"]
    return sorted(counts, key=lambda c: (c["key"], c["ts"]))


def test_a_key_s_hits_in_one_second_are_one_record_at_that_second() -> None:
    aggregate = aggregate_of(
        [
            Hit(100.7, "o", "k", "a"),
            Hit(100.2, "o", "k", "a"),
            Hit(101.0, "o", "k", "a"),
            Hit(100.5, "o", "k2", None),
        ]
    )
    assert requests_of(aggregate) == [
        {"ts": 100.0, "org_id": "o", "key": "k", "count": 2, "api_id": "a"},
        {"ts": 101.0, "org_id": "o", "key": "k", "count": 1, "api_id": "a"},
        {"ts": 100.0, "org_id": "o", "key": "k2", "count": 1},
    ]


def test_sums_come_earliest_second_first_whatever_order_the_hits_came_in() -> None:
    aggregate = aggregate_of(
        [Hit(103.5, "o", "k", "a"), Hit(101.2, "o", "k", "a"), Hit(102.0, "o", "j", "a")]
    )
    assert [orjson.loads(value)["ts"] for _, value in aggregate.request_counts()] == [
        101.0,
        102.0,
        103.0,
    ]


def test_org_only_hits_become_partials_of_the_source_stream() -> None:
    aggregate = aggregate_of(
        [Hit(100.7, "o", "", "a"), Hit(100.2, "o", "", None), Hit(5.0, "p", "", None)]
    )
    partials = {key: decode_partial(value) for key, value in aggregate.org_partials("tyk/3", 41)}
    assert partials[b"o"].buckets == [(100.0, 2)]
    assert partials[b"p"].buckets == [(5.0, 1)]
    assert partials[b"o"].origin == ("tyk/3", 41, 0)
    assert list(aggregate.request_counts()) == []


def test_a_source_stream_s_marks_are_its_own() -> None:
    marks = marked(marked(None, (0, 500, 0)), ("tyk/0", 20, 0))
    assert not is_new(("tyk/0", 20, 0), marks)
    assert is_new(("tyk/0", 21, 0), marks)
    assert is_new(("tyk/1", 5, 0), marks)  # another source partition
    assert not is_new((0, 500, 0), marks)  # gateway.requests partition 0 is not "tyk/0"


hits = st.lists(
    st.builds(
        Hit,
        ts=st.floats(min_value=0, max_value=2e9),
        org_id=st.sampled_from(["o1", "o2"]),
        key=st.sampled_from(["", "k1", "k2", "k3"]),
        api_id=st.sampled_from([None, "a1", "a2"]),
    ),
    max_size=200,
)


@given(hits)
def test_every_hit_is_counted_once_for_its_key_or_its_org(batch: list[Hit]) -> None:
    aggregate = aggregate_of(batch)
    counted: dict[tuple[str, str], int] = {}
    for record in requests_of(aggregate):
        group = (record["org_id"], record["key"])
        counted[group] = counted.get(group, 0) + record["count"]
    for org, raw in aggregate.org_partials("s/0", 1):
        partial = decode_partial(raw)
        group = (org.decode(), "")
        counted[group] = counted.get(group, 0) + sum(count for _, count in partial.buckets)
    expected: dict[tuple[str, str], int] = {}
    for hit in batch:
        expected[(hit.org_id, hit.key)] = expected.get((hit.org_id, hit.key), 0) + 1
    assert counted == expected
