"""`quota-pipeline bench`, output: the table (each figure beside its target), the JSON, the plot."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from rich.console import Console
from rich.table import Table

from pipeline.bench.plan import TARGETS, Target, verdict

if TYPE_CHECKING:
    from pipeline.bench.results import BenchResult

VERDICT_STYLE = {"met": "green", "not met": "red", "n/a": "dim"}
#: Every target of the table: issue 7's, the ingest stage's ("one worker moves at least half
#: of the raw consume-and-decode rate of the source topic") and the sessions' (a worker applies
#: 20,000 sessions/s).
ALL_TARGETS: dict[str, Target] = {
    **TARGETS,
    "ingest_over_ceiling": Target(0.5, at_least=True),
    "sessions_applied_per_s": Target(20_000, at_least=True, unit="/s"),
}


class Row(NamedTuple):
    """One line of the table; ``target`` names an entry of TARGETS, or is None."""

    measure: str
    figure: str
    target: str | None = None
    value: float | None = None


def target_figures(result: BenchResult) -> dict[str, float | None]:
    """The figure each target of TARGETS judges, None where that part was skipped."""
    latency, memory, deliveries = result.latency, result.memory, result.deliveries
    ingest, sessions = result.ingest, result.sessions
    return {
        "usage_over_ceiling": result.ratio,
        "latency_p99_s": latency.p99_s if latency else None,
        "peak_rss_mb": memory.peak_rss_mb if memory else None,
        "recovery_s": memory.recovery_s if memory else None,
        "skewed_over_uniform": result.skewed_over_uniform,
        "webhooks_per_s": deliveries.healthy_per_s if deliveries else None,
        "kept_beside_hanging": deliveries.kept if deliveries else None,
        "emails_per_s": result.emails_per_s,
        "ingest_over_ceiling": ingest.ratio if ingest else None,
        "sessions_applied_per_s": sessions.worker_per_s if sessions else None,
    }


def verdicts(result: BenchResult) -> dict[str, dict[str, Any]]:
    """Every target with its figure, its bound and whether the figure meets it."""
    active_keys = result.memory.active_keys if result.memory else 0
    return {
        name: {
            "figure": value,
            "target": ALL_TARGETS[name].text(),
            "verdict": verdict(ALL_TARGETS[name], value, active_keys),
        }
        for name, value in target_figures(result).items()
    }


def rows(result: BenchResult) -> list[Row]:
    figures = target_figures(result)
    usage, skewed = result.usage, result.skewed
    out = [
        Row("produce (load generator)", f"{result.produce_per_s:,.0f} records/s"),
        Row(
            "ceiling: aiokafka consume + orjson",
            f"{result.ceiling_per_s:,.0f} records/s (median of "
            + " / ".join(f"{rate:,.0f}" for rate in result.ceiling_passes)
            + ")",
        ),
        Row("usage stage, orgs even", f"{usage.records_per_s:,.0f} records/s"),
        Row("usage stage, orgs even: requests", f"{usage.requests_per_s:,.0f} requests/s"),
        Row("usage / ceiling", f"{result.ratio:.3f}", "usage_over_ceiling"),
        Row(
            f"usage stage, one org sends {result.heavy_share:.0%}",
            f"{skewed.records_per_s:,.0f} records/s ({skewed.requests_per_s:,.0f} requests/s)",
        ),
        Row("skewed / uniform", f"{result.skewed_over_uniform:.2f}", "skewed_over_uniform"),
    ]
    if (latency := result.latency) is not None:
        load = (
            f"at {latency.produced_per_s:,.0f} of {latency.rate_per_s:,.0f} records/s asked, "
            f"{latency.seconds:.0f} s, "
            f"{latency.matched} of {latency.crossings} webhooks, "
            f"1 record in {latency.crossing_every:,} crossing: "
            f"{latency.webhooks_per_s:,.0f} webhooks/s"
        )
        out += [
            Row(f"latency p50 ({load})", f"{latency.p50_s * 1000:,.0f} ms"),
            Row("latency p99", f"{latency.p99_s * 1000:,.0f} ms", "latency_p99_s"),
            Row("latency max", f"{latency.max_s * 1000:,.0f} ms"),
        ]
    if (memory := result.memory) is not None:
        keys = f"{memory.active_keys:,} active keys"
        out += [
            Row(f"peak RSS of a worker, {keys}", f"{memory.peak_rss_mb:,.0f} MB", "peak_rss_mb"),
            Row(
                f"recovery from the changelogs alone, {keys}",
                f"{memory.recovery_s:,.1f} s",
                "recovery_s",
            ),
            Row("peak RSS of the recovered worker", f"{memory.recovered_peak_rss_mb:,.0f} MB"),
        ]
        if memory.resume_s is not None:
            out.append(
                Row("restart on its own data dir (RocksDB kept)", f"{memory.resume_s:,.1f} s")
            )
    if (deliveries := result.deliveries) is not None:
        endpoints = deliveries.endpoints
        out += [
            Row(
                f"webhooks, {endpoints} healthy endpoints",
                f"{deliveries.healthy_per_s:,.0f}/s",
                "webhooks_per_s",
            ),
            Row(
                f"webhooks to {endpoints - 1} healthy endpoints while 1 times out",
                f"{deliveries.beside_hanging_per_s:,.0f}/s",
            ),
            Row("kept while one times out", f"{deliveries.kept:.2f}", "kept_beside_hanging"),
        ]
    if result.emails_per_s is not None:
        out.append(
            Row("emails to a local SMTP server", f"{result.emails_per_s:,.0f}/s", "emails_per_s")
        )
    out += ingest_rows(result) + sessions_rows(result)
    return [row._replace(value=figures[row.target]) if row.target else row for row in out]


def ingest_rows(result: BenchResult) -> list[Row]:
    if (ingest := result.ingest) is None:
        return []
    checked = "every keyed request counted once" if ingest.counts_match else "COUNTS DIFFER"
    return [
        Row(
            f"ingest, one worker: {ingest.timed:,} of {ingest.records:,} Tyk Pump records "
            f"({ingest.message_bytes:,.0f} bytes each)",
            f"{ingest.records_per_s:,.0f} records/s",
        ),
        Row(
            "ingest ceiling: aiokafka consume + orjson of the source",
            f"{ingest.ceiling_per_s:,.0f} records/s (median of "
            + " / ".join(f"{rate:,.0f}" for rate in ingest.ceiling_passes)
            + ")",
        ),
        Row("ingest / ceiling", f"{ingest.ratio:.3f}", "ingest_over_ceiling"),
        Row(
            "ingest pre-aggregation: source records per gateway.requests record",
            f"{ingest.aggregation:.2f} ({ingest.source_records:,} into "
            f"{ingest.request_records:,}; {ingest.requests_counted:,} of {ingest.keyed:,} "
            f"keyed requests: {checked})",
        ),
    ]


def sessions_rows(result: BenchResult) -> list[Row]:
    if (sessions := result.sessions) is None:
        return []
    return [
        Row(
            f"sessions sync of {sessions.sessions:,} sessions, first pass",
            f"{sessions.full_seconds:,.1f} s",
        ),
        Row(
            "sessions sync: fetch from the stand-in Tyk Gateway",
            f"{sessions.fetch_per_s:,.0f} sessions/s ({sessions.fetch_seconds:,.1f} s)",
        ),
        Row(
            "sessions sync: publish",
            f"{sessions.publish_seconds:,.2f} s ({sessions.publish_per_s:,.0f} sessions/s)",
        ),
        Row(
            f"sessions sync, second pass after {sessions.changed:,} changed",
            f"{sessions.resync_seconds:,.1f} s, {sessions.resync_published:,} published",
        ),
        Row(
            "one worker applying the sessions",
            f"{sessions.worker_per_s:,.0f} sessions/s",
            "sessions_applied_per_s",
        ),
    ]


def show(result: BenchResult, console: Console) -> None:
    options = result.options
    active_keys = result.memory.active_keys if result.memory else 0
    table = Table(title="quota-pipeline bench")
    for column in ("measure", "figure", "target", "met"):
        table.add_column(column, justify="right" if column == "figure" else "left")
    for row in rows(result):
        if row.target is None:
            table.add_row(row.measure, row.figure, "", "")
            continue
        target = ALL_TARGETS[row.target]
        met = verdict(target, row.value, active_keys)
        table.add_row(row.measure, row.figure, target.text(), f"[{VERDICT_STYLE[met]}]{met}[/]")
    console.print(table)
    if result.usage.records_per_s > 0.9 * result.produce_per_s:
        # The stage is timed while the load is produced: it can only show what arrives.
        console.print(
            "[yellow]the usage stage kept up with the load generator: its rate is a floor"
        )
    console.print(
        f"{options.records:,} records, {options.keys:,} keys "
        f"({options.skew or 'uniform'}), {options.orgs:,} orgs, "
        f"{options.partitions} partitions, {options.workers} worker(s)"
    )


def figures(result: BenchResult) -> dict[str, Any]:
    """Every figure of the run, as the JSON file holds them."""
    options = result.options
    out: dict[str, Any] = {
        "records": options.records,
        "keys": options.keys,
        "orgs": options.orgs,
        "partitions": options.partitions,
        "workers": options.workers,
        "skew": options.skew,
        "produce_per_s": result.produce_per_s,
        "ceiling_per_s": result.ceiling_per_s,
        "ceiling_passes": list(result.ceiling_passes),
        "usage_per_s": result.usage.records_per_s,
        "usage_requests_per_s": result.usage.requests_per_s,
        "ratio": result.ratio,
        "skewed_usage_per_s": result.skewed.records_per_s,
        "skewed_requests_per_s": result.skewed.requests_per_s,
        "skewed_heavy_share": result.heavy_share,
        "skewed_over_uniform": result.skewed_over_uniform,
        "latency": None,
        "memory": asdict(result.memory) if result.memory else None,
        "deliveries": None,
        "emails_per_s": result.emails_per_s,
        "ingest_records": options.ingest_load,
        "ingest": None,
        "sessions_asked": options.sessions,
        "sessions": None,
        "targets": verdicts(result),
    }
    if result.latency is not None:
        out["latency"] = {k: v for k, v in asdict(result.latency).items() if k != "samples"}
        out["latency"]["webhooks_per_s"] = result.latency.webhooks_per_s
    if result.deliveries is not None:
        out["deliveries"] = {**asdict(result.deliveries), "kept": result.deliveries.kept}
    if (ingest := result.ingest) is not None:
        out["ingest"] = {
            **asdict(ingest),
            "records_per_s": ingest.records_per_s,
            "ceiling_per_s": ingest.ceiling_per_s,
            "ratio": ingest.ratio,
            "aggregation": ingest.aggregation,
            "counts_match": ingest.counts_match,
        }
    if (sessions := result.sessions) is not None:
        out["sessions"] = {
            **asdict(sessions),
            "fetch_per_s": sessions.fetch_per_s,
            "publish_per_s": sessions.publish_per_s,
            "worker_per_s": sessions.worker_per_s,
        }
    return out


def write_json(result: BenchResult, path: Path) -> None:
    path.write_bytes(orjson.dumps(figures(result), option=orjson.OPT_INDENT_2))


def write_plot(result: BenchResult, path: Path) -> None:
    """Throughput bars (log scale) beside the latency CDF, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 5), layout="constrained")
    FigureCanvasAgg(figure)  # the Agg canvas: no display, no pyplot state
    bars, cdf = figure.subplots(1, 2)
    throughput = {
        "ceiling": result.ceiling_per_s,
        "usage\n(orgs even)": result.usage.records_per_s,
        f"usage\n(one org {result.heavy_share:.0%})": result.skewed.records_per_s,
        "webhooks": result.deliveries.healthy_per_s if result.deliveries else 0.0,
        "emails": result.emails_per_s or 0.0,
        "ingest\n(Tyk Pump)": result.ingest.records_per_s if result.ingest else 0.0,
    }
    drawn = bars.bar(list(throughput), list(throughput.values()), color="tab:blue")
    bars.bar_label(drawn, labels=[f"{v:,.0f}" if v else "skipped" for v in throughput.values()])
    bars.set_yscale("log")
    bars.set_ylabel("per second (records; webhooks; emails)")
    bars.set_title("throughput")
    if result.latency is not None:
        latency = result.latency
        samples = sorted(latency.samples)
        share = [(i + 1) / len(samples) for i in range(len(samples))]
        cdf.step([s * 1000 for s in samples], share, where="post")
        cdf.axvline(TARGETS["latency_p99_s"].threshold * 1000, color="tab:red", linestyle="--")
        cdf.axhline(0.99, color="tab:gray", linestyle=":")
        cdf.set_xlabel("produce to webhook, ms")
        cdf.set_ylabel("share of webhooks")
        cdf.set_title(
            f"latency at {latency.rate_per_s:,.0f} records/s: "
            f"p50 {latency.p50_s * 1000:,.0f} ms, p99 {latency.p99_s * 1000:,.0f} ms"
        )
    else:
        cdf.set_title("latency: not measured")
        cdf.set_axis_off()
    figure.savefig(path, format="png", dpi=100)
