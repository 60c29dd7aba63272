"""The ingest relay in a process of its own, a child of the worker (``ingest.own_process``).

The relay's work is Python for every source record (reading a Tyk Pump message, summing,
record batches), and a worker's event loop runs on one core, which it shares with the usage
stage counting what the relay makes: in the worker's own loop the two took turns on one core
while two thirds of the machine's other core sat idle. A child gives the relay a core of its
own.

How the two hold together:
- the worker starts the child (``python -m pipeline.ingest.process``) and writes it its
  settings and log level (pickled) on its stdin; the child writes one JSON line to its stdout
  per committed transaction, which the worker counts in its metrics; its log lines go to the
  worker's stderr;
- the child dies with the worker: it asks Linux for SIGKILL when its parent dies
  (``PR_SET_PDEATHSIG``), and anywhere it stops when its stdin ends;
- SIGTERM from the worker stops it as the relay stops (the batch under way is committed);
  Ctrl-C is the worker's to handle, so the child ignores SIGINT;
- a child that exits on its own is started again after a second. Exactly once does not depend
  on any of this: it is the relay's (pipeline.engine.relay), whichever process runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import pickle
import signal
import sys
from collections.abc import Callable

from pipeline.config import Settings
from pipeline.ingest.stage import Tally, ingest_relay
from pipeline.service import redaction

log = logging.getLogger(__name__)

#: Seconds between a child's unexpected exit and the next child.
RESTART_AFTER = 1.0
#: Seconds a stopping child has to commit its batch before it is killed.
STOP_WITHIN = 30.0
#: linux/prctl.h
_PR_SET_PDEATHSIG = 1


class IngestProcess:
    """The worker's side: starts the child, counts what it commits, starts it again if it
    exits, and stops it with the worker."""

    def __init__(
        self, settings: Settings, loglevel: str, *, counted: Callable[[Tally], None]
    ) -> None:
        self._settings = settings
        self._loglevel = loglevel
        self._counted = counted
        self._child: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._running = False

    async def run(self) -> None:
        self._running = True
        try:
            while not self._stopping.is_set():
                try:
                    status: int | str = await self._run_child()
                except OSError as exc:  # no process to be had (limits, memory): try again
                    status = f"none: {exc}"
                if self._stopping.is_set():
                    break
                log.warning(
                    "ingest process exited with status %s; starting another in %.0f s",
                    status,
                    RESTART_AFTER,
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RESTART_AFTER):
                        await self._stopping.wait()
        finally:
            self._stopped.set()

    async def stop(self) -> None:
        """SIGTERM to the child, and wait for it (SIGKILL after STOP_WITHIN seconds)."""
        self._stopping.set()
        if not self._running:
            return
        self._signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_WITHIN):
                await self._stopped.wait()
        except TimeoutError:
            log.warning("ingest process did not stop in %.0f s: killed", STOP_WITHIN)
            self._signal(signal.SIGKILL)
            await self._stopped.wait()

    def _signal(self, signum: int) -> None:
        child = self._child
        if child is not None and child.returncode is None:
            child.send_signal(signum)

    async def _run_child(self) -> int:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._child = child
        if self._stopping.is_set():  # stop() came while it was being started
            child.terminate()
        assert child.stdin is not None
        assert child.stdout is not None
        order = (self._settings, self._loglevel, os.getpid())
        with contextlib.suppress(ConnectionError):  # it died at once: its status tells
            child.stdin.write(pickle.dumps(order))
            await child.stdin.drain()
        # stdin stays open: its end tells the child that the worker has gone.
        async for line in child.stdout:
            try:
                tally = Tally.from_json(line)
            except (ValueError, TypeError):  # a library's print, not ours: shown, not fatal
                log.warning("ingest process wrote %r", line[:200])
                continue
            self._counted(tally)
        return await child.wait()


# --- the child ----------------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the worker dies, however it dies (Linux); elsewhere stdin's end does it."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the request took hold
        os._exit(1)


async def _relay(settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    out = sys.stdout.buffer

    def committed(tally: Tally) -> None:
        out.write(tally.to_json() + b"\n")
        out.flush()

    relay = ingest_relay(settings, counted=committed)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # stdin ends when the worker has gone (its pipe closed), whatever stopped it.
    loop.add_reader(sys.stdin.fileno(), _stop_at_end_of(sys.stdin.fileno(), stop))
    running = asyncio.create_task(relay.run())
    await stop.wait()
    await relay.stop()
    await running


def _stop_at_end_of(fd: int, stop: asyncio.Event) -> Callable[[], None]:
    def readable() -> None:
        if not os.read(fd, 4096):
            stop.set()

    return readable


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Written by the worker that started us, on a pipe of ours alone.
    settings, loglevel, parent = pickle.load(sys.stdin.buffer)  # noqa: S301
    _die_with_parent(parent)
    level = redaction.LEVELS[loglevel]
    logging.basicConfig(
        level=level, format=f"[%(asctime)s] [ingest {os.getpid()}] %(levelname)s %(message)s"
    )
    redaction.install(redaction.Redactor(redaction.secrets_of(settings)), level)
    redaction.quiet_libraries(level)
    asyncio.run(_relay(settings))


if __name__ == "__main__":
    main()
