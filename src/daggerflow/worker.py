"""Running an engine as a worker process: until SIGINT/SIGTERM, then drain and exit.

A worker owns its process, so here (and not in the engine) are the signal handlers, the
freezing of start-up garbage, and the rule that a worker whose runtime stopped working
exits with its error instead of staying up deaf.
"""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import signal
from typing import Any, Protocol

log = logging.getLogger("daggerflow")


class _Runtime(Protocol):
    def vital_task(self) -> asyncio.Task[None]: ...


class Engine(Protocol):
    """What a worker runs: ``Dagger`` (started, it has a runtime)."""

    @property
    def runtime(self) -> Any: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def _dump_tasks() -> None:
    """Log the stack of every asyncio task (``kill -USR1`` a worker that seems stuck)."""
    for task in asyncio.all_tasks():
        out = io.StringIO()
        task.print_stack(file=out)
        log.warning("task %s:\n%s", task.get_name(), out.getvalue())


async def until_stop_signal() -> None:
    """Return on SIGINT or SIGTERM: for a command that serves until it is told to stop (the
    demo's ``--serve``, ``daggerflow ui``)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run_worker(engine: Engine, *, override_logging: bool = False) -> None:
    if not logging.getLogger().handlers or override_logging:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_until_signalled(engine))


async def run_until_signalled(engine: Engine) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)  # what is each task waiting on?
    await engine.start()
    # Move what start-up built (modules, templates) out of the collector's reach: it halves
    # the pauses of full collections in a long-running worker.
    gc.freeze()
    try:
        waiter = asyncio.create_task(stop.wait())
        runtime: _Runtime = engine.runtime
        vital = runtime.vital_task()
        await asyncio.wait({waiter, vital}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        error = vital.exception() if vital.done() and not vital.cancelled() else None
        if error is not None:
            where = "; ".join(getattr(error, "__notes__", ())) or f"{vital.get_name()} failed"
            log.error("the worker stops: %s: %r", where, error, exc_info=error)
            raise error
        # (it ends while stopping, the loops being stopped: that is not news)
        vital.add_done_callback(lambda t: t.cancelled() or t.exception())
        log.info("signal received: draining")
    finally:
        await engine.stop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            loop.remove_signal_handler(sig)
