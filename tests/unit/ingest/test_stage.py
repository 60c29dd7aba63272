"""One partition's batch of a source: summed requests, org partials and rejections."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from pipeline.config import Settings
from pipeline.devtools.gateway_logs import tyk_pump_message
from pipeline.ingest.stage import Ingest
from pipeline.records.requests import decode_request
from pipeline.usage.partials import decode_partial

RECORDED = Path(__file__).parents[2] / "data" / "gateways"


class TP(NamedTuple):
    topic: str
    partition: int


class Record(NamedTuple):
    offset: int
    key: bytes | None
    value: bytes | None


SETTINGS = Settings.model_validate(
    {
        "app_id": "qp",
        "ingest": {
            "sources": [
                {"format": "tyk-pump", "topic": "tyk"},
                {"format": "apisix-kafka-logger", "topic": "apisix", "org_id": "acme"},
            ]
        },
    }
)


class Out(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes


def by_topic(outputs: list[Any]) -> dict[str, list[Out]]:
    grouped: dict[str, list[Out]] = {}
    for output in outputs:
        grouped.setdefault(output[0], []).append(Out(*output))
    return grouped


def test_tyk_records_become_summed_requests_partials_and_rejections() -> None:
    values = [
        tyk_pump_message(key="k1", org_id="o", api_id="a", ts=100.1),
        tyk_pump_message(key="k1", org_id="o", api_id="a", ts=100.9),
        b"garbage",
        tyk_pump_message(key="k1", org_id="o", api_id="a", ts=100.5, response_code=401),
        tyk_pump_message(key="", org_id="o", api_id="a", ts=100.5),
    ]
    records = [Record(offset, None, value) for offset, value in enumerate(values, start=10)]
    outputs = by_topic(Ingest(SETTINGS).transform(TP("tyk", 3), records))

    [request] = outputs["gateway.requests"]
    assert decode_request(request.key, request.value).count == 2
    [partial] = outputs["qp-org-partials"]
    decoded = decode_partial(partial.value)
    assert (partial.key, decoded.buckets, decoded.origin) == (b"o", [(100.0, 2)], ("tyk/3", 14, 0))
    [rejected] = outputs["pipeline.rejected"]
    rejection = orjson.loads(rejected.value)
    assert rejected.key is None
    assert (rejection["topic"], rejection["partition"], rejection["offset"]) == ("tyk", 3, 12)
    assert base64.b64decode(rejection["value_b64"]) == b"garbage"
    assert rejection["reason"].startswith("not a Tyk Pump analytics record")


def test_each_source_topic_is_read_in_its_own_format() -> None:
    batch = (RECORDED / "apisix-batch.json").read_bytes()
    outputs = by_topic(Ingest(SETTINGS).transform(TP("apisix", 0), [Record(7, b"route", batch)]))
    counts = sorted(
        (orjson.loads(o.value)["key"], orjson.loads(o.value)["count"])
        for o in outputs["gateway.requests"]
    )
    assert counts == [("jack", 2), ("rose", 1)]  # jack: two in one second
    [partial] = outputs["qp-org-partials"]
    assert sum(count for _, count in decode_partial(partial.value).buckets) == 2
    assert "pipeline.rejected" not in outputs
