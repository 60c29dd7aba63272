"""`quota-pipeline worker`: one process of the pipeline's consumer group."""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.delivery.activity import DeliveryActivity
from pipeline.delivery.agent import attach_delivery_agents, build_deliverer
from pipeline.delivery.planning import Notifier
from pipeline.delivery.router import DeliveryRouter
from pipeline.engine import worker as engine_worker
from pipeline.engine.clients import probe_broker
from pipeline.engine.relay import Relay
from pipeline.engine.versions import check_versions
from pipeline.ingest.process import IngestProcess
from pipeline.ingest.stage import count_committed, ingest_relay
from pipeline.portal.agent import attach_portal_agent
from pipeline.service import redaction
from pipeline.service.summary import start_line
from pipeline.service.web import attach_web
from pipeline.usage.key_agents import attach_usage_agents
from pipeline.usage.org_agents import attach_org_agents
from pipeline.wiring import Pipeline, build_pipeline

log = logging.getLogger(__name__)

#: Written after a clean shutdown; its absence at start means the last run died.
CLEAN_SHUTDOWN_MARKER = ".clean-shutdown"


def build_worker_pipeline(settings: Settings, *, loglevel: str = "info") -> Pipeline:
    """The pipeline with every agent, task and page a worker runs."""
    pipeline = build_pipeline(settings)
    attach_usage_agents(pipeline)
    attach_org_agents(pipeline)

    async def follow_orgs() -> None:
        await pipeline.org_directory.follow(settings)

    pipeline.engine.task(follow_orgs)
    if settings.ingest.sources:
        relay: Relay | IngestProcess = (
            IngestProcess(settings, loglevel, counted=count_committed(settings))
            if settings.ingest.own_process
            else ingest_relay(settings)
        )
        pipeline.engine.task(relay.run)
        pipeline.engine.on_stop(relay.stop)

    async def announce() -> None:
        log.info("%s", start_line(settings))

    pipeline.engine.task(announce)
    deliverer = build_deliverer(pipeline)
    router = DeliveryRouter(
        pipeline.topics.retry_tiers, pipeline.topics.dlq, activity=DeliveryActivity()
    )
    notifier = Notifier.from_settings(settings)
    attach_delivery_agents(pipeline, deliverer=deliverer, router=router, notifier=notifier)
    attach_portal_agent(pipeline, notifier=notifier, deliverer=deliverer, router=router)

    def deliveries(now: float) -> dict[str, Any]:
        return router.activity.snapshot(now, deliverer.endpoint_states(now))

    attach_web(pipeline, deliveries)
    return pipeline


def discard_state_after_crash(data_dir: Path, tables_dir: Path) -> bool:
    """Drop local table state unless the last run shut down cleanly; True when dropped.

    RocksDB keeps writes the moment they are made, committed or not. After a crash it may hold
    changes whose Kafka transaction was aborted, and replaying the changelog from the last
    committed offset does not undo them. Rebuilding from the changelog (read_committed) does:
    that is the price of exactly-once after a crash, paid in recovery time.
    """
    marker = data_dir / CLEAN_SHUTDOWN_MARKER
    clean = marker.exists()
    marker.unlink(missing_ok=True)
    if clean or not tables_dir.exists():
        return False
    shutil.rmtree(tables_dir)
    return True


#: Allocations between young-generation collections (CPython's default is 700), and how many
#: collections of each generation before one of the next.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Collect cyclic garbage less often, and never scan what start-up built.

    Every record fetched and decoded allocates a handful of objects, almost all freed by their
    reference counts. With CPython's defaults, that churn still started 36 full collections in
    a worker reading 600,000 records, each walking every object in the process: 2.7 s of
    its 12 s. Frozen start-up objects and these thresholds: 0.3 s. The worker's memory is held
    in RocksDB and in record batches, not in cycles, so collecting later costs little memory.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_worker(settings: Settings, *, loglevel: str = "info") -> None:
    """Run until SIGTERM or Ctrl-C. Libraries outside their tested ranges raise ConfigError,
    and an unreachable broker BrokerUnavailable, first."""
    check_versions()
    # The probe reports an unreachable broker in our one line; faust's logging takes over after.
    aiokafka_log = logging.getLogger("aiokafka")
    aiokafka_log.setLevel(logging.CRITICAL)
    try:
        asyncio.run(probe_broker(settings))
    finally:
        redaction.quiet_libraries(redaction.LEVELS[loglevel])
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    pipeline = build_worker_pipeline(settings, loglevel=loglevel)
    exactly_once = settings.kafka.processing_guarantee == "exactly_once"
    if exactly_once and discard_state_after_crash(
        settings.data_dir, engine_worker.tables_dir(pipeline.engine)
    ):
        log.warning("last run did not shut down cleanly: rebuilding tables from the changelogs")
    tune_gc()
    try:
        engine_worker.run(pipeline.engine, loglevel=loglevel)
    except SystemExit as exc:
        if exc.code in (0, None):
            (settings.data_dir / CLEAN_SHUTDOWN_MARKER).touch()
        raise
