"""APISIX kafka-logger messages: entries into hits, by the configured paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from pipeline.config import ApisixSource, Settings
from pipeline.devtools.gateway_logs import apisix_entry
from pipeline.errors import InvalidRecord
from pipeline.ingest.apisix import apisix_reader
from pipeline.ingest.hits import Hit
from tests.unit.ingest.reading import hits_of

RECORDED = Path(__file__).parents[2] / "data" / "gateways"


def source(**fields: Any) -> ApisixSource:
    return ApisixSource.model_validate(
        {"format": "apisix-kafka-logger", "topic": "apisix", "org_id": "acme", **fields}
    )


def test_a_recorded_batch_counts_consumers_and_refusals_for_the_org() -> None:
    read = apisix_reader(source())
    hits = hits_of(read, (RECORDED / "apisix-batch.json").read_bytes())
    assert hits == [
        Hit(1699596164.550, "acme", "jack", "orders-route"),
        Hit(1699596164.5515, "acme", "", "orders-route"),  # limit-count refused it
        Hit(1699596164.552, "acme", "", "orders-route"),  # key-auth refused it: no consumer
        Hit(1699596164.553, "acme", "jack", "orders-route"),  # the upstream's 503
        Hit(1699596165.001, "acme", "rose", "orders-route"),
    ]


def test_a_recorded_single_entry_message_is_one_hit() -> None:
    read = apisix_reader(source())
    assert hits_of(read, (RECORDED / "apisix-single.json").read_bytes()) == [
        Hit(1699596166.0, "acme", "rose", "orders-route")
    ]


def test_key_org_and_api_come_from_the_configured_paths() -> None:
    read = apisix_reader(
        source(
            org_id=None,
            org_path='request.headers."x-org-id"',
            key_path='request.headers."apikey"',
            api_path="service_id",
        )
    )
    [hit] = hits_of(read, (RECORDED / "apisix-single.json").read_bytes())
    assert hit == Hit(1699596166.0, "acme", "rose-key", None)  # service_id "": no api


def test_numbers_found_by_a_path_are_ids_too() -> None:
    entry = apisix_entry(consumer=None, route_id="r", start_time_ms=1000)
    entry["tenant"] = 42
    [hit] = hits_of(apisix_reader(source(org_id=None, org_path="tenant")), orjson.dumps(entry))
    assert hit.org_id == "42"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (None, "has no value"),
        (b"{", "not JSON"),
        (b"[1]", "entry 0: not a JSON object"),
        (b'"text"', "the log entry: not a JSON object"),
        (b'{"route_id": "r"}', "start_time"),
        (b'{"start_time": true}', "start_time"),
        (b'{"start_time": "1699596166000"}', "start_time"),
    ],
)
def test_a_message_that_cannot_be_mapped_says_why(message: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidRecord, match=reason):
        hits_of(apisix_reader(source()), message)


def test_one_bad_entry_rejects_its_whole_message_and_names_it() -> None:
    read = apisix_reader(source(org_id=None, org_path="consumer.username"))
    good = apisix_entry(consumer="jack", route_id="r", start_time_ms=1000)
    anonymous = apisix_entry(consumer=None, route_id="r", start_time_ms=1001)
    with pytest.raises(InvalidRecord, match=r"entry 1: org_path 'consumer\.username' finds no"):
        hits_of(read, orjson.dumps([good, anonymous]))


def test_the_org_is_given_one_way_exactly() -> None:
    with pytest.raises(ValidationError, match="org_path or as org_id"):
        source(org_id=None)
    with pytest.raises(ValidationError, match="org_path or as org_id"):
        source(org_path="route_id")


def test_a_path_that_is_not_jmespath_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="JMESPath"):
        source(key_path="consumer.[")


def test_a_topic_is_one_source() -> None:
    twice = {"format": "tyk-pump", "topic": "logs"}
    with pytest.raises(ValidationError, match="more than one source"):
        Settings.model_validate({"ingest": {"sources": [twice, twice]}})
