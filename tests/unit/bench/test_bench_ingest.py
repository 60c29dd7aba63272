"""The ingest part's load (pipeline.bench.ingest): Tyk Pump records as the pump writes them,
read back by the ingest stage's own reader."""

from __future__ import annotations

import collections

import pytest

from pipeline.bench.ingest import (
    EVENT_RATE,
    KEYLESS_SHARE,
    REFUSED_SHARE,
    IngestBenchResult,
    ingest_config,
    pump_message,
    pump_plan,
)
from pipeline.bench.usage import T0, key_name, org_name
from pipeline.config import Settings, TykPumpSource
from pipeline.devtools.local import isolated_config
from pipeline.ingest.tyk_pump import tyk_pump_reader
from tests.unit.ingest.reading import hits_of


def test_the_plan_mixes_refusals_and_keyless_requests_and_advances_event_time():
    plan = list(pump_plan(20_000, 50, 5))
    assert [record.ts for record in plan[:3]] == [T0, T0 + 1 / EVENT_RATE, T0 + 2 / EVENT_RATE]
    keyless = sum(1 for record in plan if record.key is None)
    refused = sum(1 for record in plan if record.code == 429)
    assert keyless == pytest.approx(20_000 * KEYLESS_SHARE, rel=0.25)
    assert refused == pytest.approx(20_000 * REFUSED_SHARE, rel=0.25)
    assert all(record.org == record.key % 5 for record in plan if record.key is not None)
    assert list(pump_plan(100, 50, 5)) == plan[:100]  # the same seed, the same load


def test_a_zipf_plan_favours_the_first_keys():
    counts = collections.Counter(r.key for r in pump_plan(10_000, 100, 5, exponent=1.2))
    assert counts[0] > 10 * counts[50]


def test_the_stage_reads_each_record_as_the_plan_says():
    read = tyk_pump_reader(TykPumpSource(format="tyk-pump", topic="t"))
    for record in pump_plan(2_000, 20, 4):
        message = pump_message(record)
        assert 300 <= len(message) <= 600
        (hit,) = hits_of(read, message)
        assert hit.org_id == org_name(record.org)
        assert hit.ts == pytest.approx(record.ts, abs=1e-6)
        assert hit.key == (key_name(record.key) if record.counts_for_key else "")


def test_the_ingest_config_has_topics_and_a_tyk_pump_source_of_its_own(tmp_path):
    base = isolated_config(
        "b", kafka={"bootstrap_servers": "x:9092"}, partitions=2, data_dir=tmp_path
    )
    settings = Settings.model_validate(ingest_config(base))
    (source,) = settings.ingest.sources
    assert settings.app_id == "qp-b-ingest"
    assert source.topic == "qp-b-ingest.tyk-analytics"
    assert settings.topics.requests != Settings.model_validate(base).topics.requests


def test_figures_of_a_run():
    run = IngestBenchResult(
        records=1001,
        timed=1000,
        seconds=0.5,
        produce_per_s=10_000.0,
        ceiling_passes=(3000.0, 8000.0, 4000.0),
        source_records=1001,
        keyed=970,
        request_records=0,
        requests_counted=969,
        message_bytes=450.0,
    )
    assert (run.records_per_s, run.ceiling_per_s, run.ratio) == (2000, 4000, 0.5)
    assert run.aggregation == 0.0  # nothing produced: no ratio, not a division by zero
    assert not run.counts_match
