"""The worker's web port: three probes open to all, and the HTTP API (pipeline.service.api).

Nothing else is served (the engine turns faust's own pages off), and every route but the
probes needs the token.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST

from pipeline import __version__
from pipeline.engine.web import Reply, WebRequest, serve
from pipeline.service.api import attach_api
from pipeline.service.metrics import exposition
from pipeline.wiring import Pipeline

#: The pages anyone may read: everything else on the worker's port needs the token.
OPEN_PAGES = ("/healthz", "/readyz", "/metrics")


def attach_web(pipeline: Pipeline) -> None:
    """Register the worker's pages: the three probes and the HTTP API."""
    engine = pipeline.engine
    attach_api(pipeline)

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
        return Reply(200, exposition(), {"Content-Type": CONTENT_TYPE_LATEST})

    serve(engine, "/healthz", {"GET": healthz}, name="healthz")
    serve(engine, "/readyz", {"GET": readyz}, name="readyz")
    serve(engine, "/metrics", {"GET": metrics}, name="metrics")


def worker_ready(pipeline: Pipeline) -> bool:
    engine = pipeline.engine
    return (
        engine.assigned_once()
        and not engine.rebalancing()
        and pipeline.org_directory.ready.is_set()
    )
