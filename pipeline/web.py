"""HTTP endpoints on the worker's web port (faust's web server)."""

from __future__ import annotations

from typing import Any

from pipeline import __version__
from pipeline.app import Pipeline


def attach_web(pipeline: Pipeline) -> None:
    """Register the worker's pages."""
    app = pipeline.app

    # faust starts its web server only after table recovery, so a 200 here also means ready.
    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json(
            {"status": "ok", "app_id": pipeline.settings.app_id, "version": __version__}
        )
