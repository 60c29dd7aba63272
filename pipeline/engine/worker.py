"""Running the engine's App as a worker process (faust's Worker: signals, logging, the loop)."""

from __future__ import annotations

from pathlib import Path

import faust

from pipeline.engine.app import Engine


def tables_dir(engine: Engine) -> Path:
    """Where the App keeps its tables' local state (RocksDB)."""
    return Path(engine.app.conf.tabledir)


def run(engine: Engine, *, loglevel: str) -> None:
    """Run the App until SIGTERM or Ctrl-C; SystemExit says how it ended."""
    # faust's own CLI sets this, and its transactions (exactly_once) are off without it. Set it
    # before anything reads app.in_transaction, which faust caches on first read.
    engine.app.in_worker = True
    faust.Worker(engine.app, loglevel=loglevel, quiet=True).execute_from_commandline()
