"""The ingest stage's readers fed hostile gateway messages: they give hits that become
records the usage stage and the org agent accept, or raise InvalidRecord with a short reason;
never anything else. What the ingest stage sends on must never be rejected downstream."""

from __future__ import annotations

import math
from typing import Any

import orjson
from hypothesis import given

from pipeline.config import ApisixSource, TykPumpSource
from pipeline.devtools.gateway_logs import apisix_entry, tyk_pump_message
from pipeline.ingest.apisix import apisix_reader
from pipeline.ingest.hits import Reader
from pipeline.ingest.tyk_pump import tyk_pump_reader
from pipeline.records.requests import decode_request
from pipeline.usage.partials import decode_partial
from tests.fuzz.inputs import hostile
from tests.fuzz.test_decoders import FUZZ, outcome
from tests.unit.ingest.reading import aggregate_of, hits_of

TYK = orjson.loads(tyk_pump_message(key="k1", org_id="o1", api_id="a1", ts=1_714_558_530.5))
APISIX = [
    apisix_entry(consumer="jack", route_id="r1", start_time_ms=1_699_596_164_550),
    apisix_entry(consumer=None, route_id="r1", start_time_ms=1_699_596_164_551, status=401),
]


def assert_accepted_downstream(read: Reader, value: bytes | None) -> None:
    hits = outcome(lambda: hits_of(read, value))
    if hits is None:
        return
    aggregate = aggregate_of(hits)
    for key, record in aggregate.request_counts():
        request = decode_request(key, record)
        assert math.isfinite(request.ts)
    for _, partial in aggregate.org_partials("topic/0", 7):
        decode_partial(partial)


@FUZZ
@given(value=hostile(TYK))
def test_tyk_pump_messages(value: bytes | None) -> None:
    assert_accepted_downstream(tyk_pump_reader(TykPumpSource(format="tyk-pump", topic="t")), value)


def apisix_source(**fields: Any) -> ApisixSource:
    return ApisixSource.model_validate({"format": "apisix-kafka-logger", "topic": "t", **fields})


def in_a_batch(entry: bytes | None) -> bytes | None:
    """A hostile entry after a good one, as kafka-logger sends a batch (a JSON array)."""
    return None if entry is None else b"[" + orjson.dumps(APISIX[0]) + b"," + entry + b"]"


@FUZZ
@given(value=hostile(APISIX[1]).map(in_a_batch))
def test_apisix_batches_with_a_fixed_org(value: bytes | None) -> None:
    assert_accepted_downstream(apisix_reader(apisix_source(org_id="acme")), value)


@FUZZ
@given(value=hostile(APISIX[0]))
def test_apisix_entries_with_the_org_from_a_path(value: bytes | None) -> None:
    assert_accepted_downstream(apisix_reader(apisix_source(org_path="route_id")), value)


def test_the_templates_themselves_give_hits() -> None:
    assert hits_of(tyk_pump_reader(TykPumpSource(format="tyk-pump", topic="t")), orjson.dumps(TYK))
    assert len(hits_of(apisix_reader(apisix_source(org_id="acme")), orjson.dumps(APISIX))) == 2
