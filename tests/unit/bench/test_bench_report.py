"""The bench's output (pipeline.bench.report) from made-up figures: table, JSON and plot."""

from __future__ import annotations

import dataclasses
import io

import orjson
from rich.console import Console

from pipeline.bench.delivery import DeliveryBench
from pipeline.bench.ingest import IngestBenchResult
from pipeline.bench.latency import LatencyBench
from pipeline.bench.memory import MemoryBench
from pipeline.bench.report import figures, rows, show, write_json, write_plot
from pipeline.bench.results import BenchOptions, BenchResult
from pipeline.bench.sessions import SessionsBenchResult
from pipeline.bench.usage import UsageRun


def result(**changes) -> BenchResult:
    base = BenchResult(
        options=BenchOptions(records=1000, keys=100, orgs=10, partitions=4, workers=2),
        produce_per_s=50_000.0,
        ceiling_passes=(250_000.0, 400_000.0, 410_000.0),
        usage=UsageRun(records=1000, requests=5500, seconds=0.5),
        skewed=UsageRun(records=1000, requests=5400, seconds=0.6),
        heavy_share=0.9,
        latency=LatencyBench(
            1000.0, 990.0, 10.0, 10_000, 1000, 10, 998, 0.3, 0.9, 1.2, (0.3, 0.9, 1.2)
        ),
        memory=MemoryBench(1_000_000, 1200.0, 1100.0, 75.0, 900.0, resume_s=12.5),
        deliveries=DeliveryBench(20_000, 5, 2100.0, 1500.0),
        emails_per_s=250.0,
        ingest=IngestBenchResult(
            records=300_001,
            timed=300_000,
            seconds=5.0,
            produce_per_s=150_000.0,
            ceiling_passes=(100_000.0, 120_000.0, 130_000.0),
            source_records=300_001,
            keyed=291_000,
            request_records=100_000,
            requests_counted=291_000,
            message_bytes=470.0,
        ),
        sessions=SessionsBenchResult(
            sessions=100_000,
            full_seconds=12.0,
            fetch_seconds=10.0,
            diff_seconds=0.5,
            publish_seconds=1.25,
            changed=1000,
            resync_seconds=11.0,
            resync_published=1000,
            worker_seconds=4.0,
            worker_publish_seconds=1.5,
        ),
    )
    return dataclasses.replace(base, **changes)


def test_every_figure_and_verdict_is_in_the_json(tmp_path):
    path = tmp_path / "bench.json"
    write_json(result(), path)
    data = orjson.loads(path.read_bytes())
    assert data["ceiling_passes"] == [250_000, 400_000, 410_000]
    assert data["ceiling_per_s"] == 400_000
    assert data["ratio"] == 2000 / 400_000
    assert data["usage_per_s"] == 2000
    assert data["usage_requests_per_s"] == 11_000
    assert data["skewed_over_uniform"] == data["skewed_usage_per_s"] / 2000
    assert data["latency"]["p99_s"] == 0.9
    assert data["latency"]["webhooks_per_s"] == 100  # 1,000 crossings in 10 s
    assert "samples" not in data["latency"]
    assert data["memory"]["recovery_s"] == 75
    assert data["memory"]["resume_s"] == 12.5
    verdicts = {name: target["verdict"] for name, target in data["targets"].items()}
    assert verdicts == {
        "usage_over_ceiling": "not met",
        "latency_p99_s": "met",
        "peak_rss_mb": "met",
        "recovery_s": "not met",
        "skewed_over_uniform": "met",
        "webhooks_per_s": "met",
        "kept_beside_hanging": "not met",
        "emails_per_s": "not met",
        "ingest_over_ceiling": "met",
        "sessions_applied_per_s": "met",
    }


def test_the_ingest_and_sessions_figures_are_in_the_json():
    data = figures(result())
    assert data["ingest_records"] == 1000  # as many as --records unless asked
    assert data["sessions_asked"] == 100_000
    ingest = data["ingest"]
    assert ingest["records_per_s"] == 60_000
    assert ingest["ceiling_per_s"] == 120_000
    assert ingest["ratio"] == 0.5
    assert ingest["aggregation"] == 3.00001
    assert ingest["counts_match"] is True
    assert data["targets"]["ingest_over_ceiling"]["target"] == ">= 0.5"
    sessions = data["sessions"]
    assert (sessions["fetch_per_s"], sessions["publish_per_s"]) == (10_000, 80_000)
    assert sessions["worker_per_s"] == 25_000
    assert sessions["resync_published"] == 1000
    assert data["targets"]["sessions_applied_per_s"]["target"] == ">= 20,000/s"


def test_skipped_ingest_and_sessions_are_null_and_not_judged():
    skipped = dataclasses.replace(result().options, ingest_records=0, sessions=0)
    data = figures(result(options=skipped, ingest=None, sessions=None))
    assert (data["ingest_records"], data["ingest"], data["sessions"]) == (0, None, None)
    assert data["targets"]["ingest_over_ceiling"]["verdict"] == "n/a"
    assert data["targets"]["sessions_applied_per_s"]["verdict"] == "n/a"
    measures = [row.measure for row in rows(result(ingest=None, sessions=None))]
    assert not [m for m in measures if m.startswith(("ingest", "sessions", "one worker"))]


def test_the_table_has_an_ingest_and_a_sessions_section():
    out = io.StringIO()
    show(result(), Console(file=out, width=250))
    text = out.getvalue()
    assert "ingest, one worker: 300,000 of 300,001 Tyk Pump records (470 bytes each)" in text
    assert "60,000 records/s" in text
    assert "120,000 records/s (median of 100,000 / 120,000 / 130,000)" in text
    assert "ingest / ceiling" in text
    assert "3.00 (300,001 into 100,000; 291,000 of 291,000 keyed requests: every keyed" in text
    assert "sessions sync of 100,000 sessions, first pass" in text
    assert "10,000 sessions/s (10.0 s)" in text
    assert "1.25 s (80,000 sessions/s)" in text
    assert "11.0 s, 1,000 published" in text
    assert "25,000 sessions/s" in text
    assert ">= 20,000/s" in text


def test_the_table_says_when_sums_lost_or_doubled_requests():
    counted = dataclasses.replace(result().ingest, requests_counted=290_999)
    (row,) = [r for r in rows(result(ingest=counted)) if "pre-aggregation" in r.measure]
    assert "COUNTS DIFFER" in row.figure


def test_skipped_parts_are_null_and_not_judged():
    data = figures(
        result(latency=None, memory=None, deliveries=None, emails_per_s=None, ingest=None)
    )
    assert (data["latency"], data["memory"], data["deliveries"], data["emails_per_s"]) == (
        None,
        None,
        None,
        None,
    )
    assert data["targets"]["latency_p99_s"]["verdict"] == "n/a"


def test_the_table_shows_each_target_and_verdict():
    out = io.StringIO()
    show(result(), Console(file=out, width=200))
    text = out.getvalue()
    for line in ("usage / ceiling", "skewed / uniform", "latency p99", "peak RSS", "recovery"):
        assert line in text
    assert "<= 1,500 MB at 1,000,000 keys" in text
    assert "restart on its own data dir (RocksDB kept)" in text
    assert "12.5 s" in text
    assert "400,000 records/s (median of 250,000 / 400,000 / 410,000)" in text
    assert "not met" in text


def test_the_latency_row_says_how_many_webhooks_the_load_asked_for():
    (p50,) = [row for row in rows(result()) if row.measure.startswith("latency p50")]
    assert "1 record in 10 crossing: 100 webhooks/s" in p50.measure


def test_the_plot_is_a_png_with_or_without_latency(tmp_path):
    for name, run in (("with.png", result()), ("without.png", result(latency=None))):
        write_plot(run, tmp_path / name)
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
