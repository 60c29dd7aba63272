"""`quota-pipeline bench`: every figure of issue 7, measured in one run against the broker at
QP_KAFKA_BOOTSTRAP.

1. ceiling: a bare aiokafka consumer reading every record and decoding it with orjson;
2. usage stage: W worker processes (the real ones, one consumer group, a session loaded for
   every key) consuming the same records, from the first one produced until the group's
   committed offsets reach the end; records/s and requests/s (the sum of the records' counts);
3. latency from producing a threshold-crossing record to its webhook, at half that rate
   (bench_latency);
4. webhooks/s and emails/s to local servers, and webhooks/s beside an endpoint that times out
   (bench_delivery);
5. one worker's peak RSS with K active keys, and its recovery time after a restart
   (bench_memory);
6. the usage stage again when one organisation sends 90% of the records;
7. one worker's ingest stage on a Tyk Pump load beside a bare consumer of that topic, and its
   pre-aggregation ratio (bench_ingest);
8. `sessions sync` from a stand-in Tyk Gateway, and one worker applying the sessions
   (bench_sessions).

Each part uses its own app id and topics, and deletes them when it ends.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console

from pipeline.bench.delivery import (
    derived_config,
    run_delivery_bench,
    run_email_bench,
)
from pipeline.bench.ingest import run_ingest_bench
from pipeline.bench.latency import run_latency_bench
from pipeline.bench.memory import run_memory_bench
from pipeline.bench.plan import HEAVY_SHARE, OrgLayout, plan_load
from pipeline.bench.results import BenchOptions, BenchResult
from pipeline.bench.sessions import run_sessions_bench
from pipeline.bench.usage import UsageRun, ceiling, usage_run
from pipeline.cli.topics import contract_topics
from pipeline.config import KafkaSettings, Settings
from pipeline.devtools.demo import remove_topics
from pipeline.devtools.local import isolated_config
from pipeline.engine.clients import create_topics, probe_broker

#: Passes of the bare consumer over the load, of which the ceiling is the median.
CEILING_PASSES = 3


async def run_bench(options: BenchOptions, kafka: KafkaSettings) -> BenchResult:
    """Every measurement, in a folder of its own for the workers' data and logs: removed when
    the run succeeds, kept (and named) when it fails, for its logs."""
    workdir = Path(tempfile.mkdtemp(prefix="quota-bench-"))
    try:
        result = await measure(options, workdir, kafka)
    except BaseException:
        print(f"bench: the workers' logs are kept in {workdir}", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    return result


async def measure(options: BenchOptions, workdir: Path, kafka: KafkaSettings) -> BenchResult:
    """Every part of the bench, on the broker ``kafka`` reaches, connecting as it says (the
    workers, the load generators and the ceiling's consumer alike)."""
    run = uuid.uuid4().hex[:8]
    config = isolated_config(
        f"bench-{run}",
        kafka=kafka.connection(),
        partitions=options.partitions,
        data_dir=workdir / "data",
    )
    settings = Settings.model_validate(config)
    await probe_broker(settings)
    await create_topics(settings, contract_topics(settings), options.partitions)
    try:
        even = OrgLayout(options.keys, options.orgs)
        usage, produced = await usage_run(
            config,
            workdir,
            plan_load(options.records, even, exponent=options.exponent),
            keys=options.keys,
            orgs=options.orgs,
            workers=options.workers,
            name="usage",
        )
        # With the workers stopped: the ceiling has the machine to itself.
        ceiling_passes = [await ceiling(settings, options.records) for _ in range(CEILING_PASSES)]
    finally:
        await remove_topics(settings)
    skewed, heavy_share = await skewed_usage(config, workdir, options)
    latency = memory = delivery = email_rate = None
    if options.latency_seconds:
        latency = await run_latency_bench(
            config,
            workdir,
            rate=usage.records_per_s / 2,
            seconds=options.latency_seconds,
            background_keys=options.keys,
            workers=options.workers,
            crossing_every=options.crossing_every,
            exponent=options.exponent,
        )
    if options.active_keys:
        memory = await run_memory_bench(config, workdir, options.active_keys)
    if options.deliveries:
        delivery = await run_delivery_bench(config, workdir, options.deliveries)
    if options.emails:
        email_rate = await run_email_bench(config, workdir, options.emails)
    ingest = sessions = None
    if options.ingest_load:
        ingest = await run_ingest_bench(
            config,
            workdir,
            options.ingest_load,
            keys=options.keys,
            orgs=options.orgs,
            exponent=options.exponent,
        )
    if options.sessions:
        sessions = await run_sessions_bench(
            derived_config(config, "sessions"), workdir, options.sessions
        )
    return BenchResult(
        options=options,
        produce_per_s=produced.per_s,
        ceiling_passes=tuple(ceiling_passes),
        usage=usage,
        skewed=skewed,
        heavy_share=heavy_share,
        latency=latency,
        memory=memory,
        deliveries=delivery,
        emails_per_s=email_rate,
        ingest=ingest,
        sessions=sessions,
    )


async def skewed_usage(
    base: dict[str, Any], workdir: Path, options: BenchOptions
) -> tuple[UsageRun, float]:
    """The usage stage on its own topics and group, one org sending HEAVY_SHARE of the records;
    returns the run and the heavy org's actual share."""
    config = derived_config(base, "skewed")
    settings = Settings.model_validate(config)
    await create_topics(settings, contract_topics(settings), options.partitions)
    try:
        layout = OrgLayout(options.keys, options.orgs, HEAVY_SHARE)
        plan = list(plan_load(options.records, layout, exponent=options.exponent, seed=2))
        run, _ = await usage_run(
            config,
            workdir,
            plan,
            keys=options.keys,
            orgs=options.orgs,
            workers=options.workers,
            name="skewed",
        )
    finally:
        await remove_topics(settings)
    return run, sum(1 for record in plan if record.org == 0) / len(plan)


def bench(
    options: BenchOptions, kafka: KafkaSettings, *, json_path: str | None, plot_path: str | None
) -> int:
    """Entry point of `quota-pipeline bench`."""
    from pipeline.bench.report import show, write_json, write_plot

    result = asyncio.run(run_bench(options, kafka))
    show(result, Console())
    if json_path:
        write_json(result, Path(json_path))
    if plot_path:
        write_plot(result, Path(plot_path))
    return 0
