"""HTTP endpoints on the worker's web port (faust's web server)."""

from __future__ import annotations

from typing import Any

from faust.web.base import BlueprintManager
from prometheus_client import CONTENT_TYPE_LATEST

from pipeline import __version__
from pipeline.engine.app import Pipeline
from pipeline.service.api import attach_api
from pipeline.service.metrics import exposition

#: The pages anyone may read: everything else on the worker's port needs the token.
OPEN_PAGES = ("/healthz", "/readyz", "/metrics")


def attach_web(pipeline: Pipeline) -> None:
    """Register the worker's pages: these three, open to all, and the HTTP API (token-only).
    Nothing else is served: faust's own pages (its tables, the router, statistics) would
    answer without the token, and its table pages show sessions with developers' emails."""
    app = pipeline.app
    app.web.blueprints = BlueprintManager()
    attach_api(pipeline)

    # Liveness: the process serves HTTP. It says nothing about partitions or table recovery
    # (the API's reads answer 503 until this worker has its partitions).
    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json(
            {"status": "ok", "app_id": pipeline.settings.app_id, "version": __version__}
        )

    # Readiness: this worker has been through a rebalance (its partitions assigned and their
    # tables recovered), is not in another one, and knows every org published before it
    # started. 503 until then: a readiness probe, and a benchmark's starting line.
    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ready = worker_ready(pipeline)
        # The consumer group generation this worker last joined: workers that are all ready in
        # the same one share the partitions between them (see local.wait_group_settled).
        body = {"ready": ready, "generation": pipeline.app.consumer_generation_id}
        return web.json(body, status=200 if ready else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset in content_type, so the full type goes in as a header.
        return web.bytes(exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def worker_ready(pipeline: Pipeline) -> bool:
    app = pipeline.app
    assigned_once = app.rebalancing_count > 0
    return assigned_once and not app.rebalancing and pipeline.org_directory.ready.is_set()
