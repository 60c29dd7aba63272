"""HTTP endpoints on the worker's web port (faust's web server)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from pipeline import __version__
from pipeline.api import attach_api
from pipeline.app import Pipeline
from pipeline.metrics import exposition


def attach_web(pipeline: Pipeline) -> None:
    """Register the worker's pages: these two, open to all, and the HTTP API (token-only)."""
    app = pipeline.app
    attach_api(pipeline)

    # Liveness: the process serves HTTP. It says nothing about partitions or table recovery
    # (the API's reads answer 503 until this worker has its partitions).
    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json(
            {"status": "ok", "app_id": pipeline.settings.app_id, "version": __version__}
        )

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset in content_type, so the full type goes in as a header.
        return web.bytes(exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})
