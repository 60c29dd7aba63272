"""The worker's web port: three probes open to all, the HTTP API (pipeline.service.api) and
the ops page (pipeline.ops.pages).

Nothing else is served (the engine turns faust's own pages off), and every route but the
probes needs the token.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST

from pipeline import __version__
from pipeline.engine.web import Reply, WebRequest, serve
from pipeline.ops.pages import attach_ops
from pipeline.ops.snapshot import DeliveriesView
from pipeline.service.api import attach_api
from pipeline.service.metrics import BATCH_SECONDS, CONSUMER_LAG, LAST_BATCH, exposition
from pipeline.wiring import Pipeline

#: The pages anyone may read: everything else on the worker's port needs the token.
OPEN_PAGES = ("/healthz", "/readyz", "/metrics")


def attach_web(pipeline: Pipeline, deliveries: DeliveriesView) -> None:
    """Register the worker's pages: the three probes, the HTTP API and the ops page
    (``deliveries`` tells it what this worker's deliveries did)."""
    engine = pipeline.engine
    attach_api(pipeline)
    attach_ops(pipeline, deliveries)
    engine.activity.listen(observe_batch)

    # Liveness: the process serves HTTP. It says nothing about partitions or table recovery
    # (the API's reads answer 503 until this worker has its partitions).
    async def healthz(request: WebRequest) -> Reply:
        return Reply.json(
            {"status": "ok", "app_id": pipeline.settings.app_id, "version": __version__}
        )

    # Readiness: this worker has been through a rebalance (its partitions assigned and their
    # tables recovered), is not in another one, and knows every org published before it
    # started. 503 until then: a readiness probe, and a benchmark's starting line.
    async def readyz(request: WebRequest) -> Reply:
        ready = worker_ready(pipeline)
        # The consumer group generation this worker last joined: workers that are all ready in
        # the same one share the partitions between them (see devtools.local.wait_group_settled).
        body = {"ready": ready, "generation": engine.generation()}
        return Reply.json(body, status=200 if ready else 503)

    async def metrics(request: WebRequest) -> Reply:
        # Lag is read when asked for: the last fetch's offsets, no request to the broker.
        set_lags(await engine.lags())
        return Reply(200, exposition(), {"Content-Type": CONTENT_TYPE_LATEST})

    serve(engine, "/healthz", {"GET": healthz}, name="healthz")
    serve(engine, "/readyz", {"GET": readyz}, name="readyz")
    serve(engine, "/metrics", {"GET": metrics}, name="metrics")


def observe_batch(agent: str, seconds: float, at: float) -> None:
    BATCH_SECONDS.labels(agent=agent).observe(seconds)
    LAST_BATCH.labels(agent=agent).set(at)


#: The partitions whose lag was last reported: one no longer assigned loses its series.
_reported_lags: set[tuple[str, str]] = set()


def set_lags(lags: dict[tuple[str, int], int]) -> None:
    labels = {(topic, str(partition)): lag for (topic, partition), lag in lags.items()}
    for gone in _reported_lags - labels.keys():
        CONSUMER_LAG.remove(*gone)
    for (topic, partition), lag in labels.items():
        CONSUMER_LAG.labels(topic=topic, partition=partition).set(lag)
    _reported_lags.clear()
    _reported_lags.update(labels)


def worker_ready(pipeline: Pipeline) -> bool:
    engine = pipeline.engine
    return (
        engine.assigned_once()
        and not engine.rebalancing()
        and pipeline.org_directory.ready.is_set()
    )
