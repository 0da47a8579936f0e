"""Flow-run processes forked from a warm process instead of started cold.

Prefect's runner starts each flow run of a served flow with ``prefect.flow_engine.
run_flow_in_subprocess``, which uses multiprocessing's *spawn*: a new interpreter that imports
Prefect, the flow and Shoal again for every job. Measured here (2 cores): 2.5-3 CPU s per job
and most of the 1.75-2.1 s between a flow run's creation and its ``Running`` state.

``install()`` makes that same call use a *forkserver* whose server process imports those modules
once, when the worker starts (``PRELOAD``). A flow run is then a fork of that warm process,
which is single-threaded by design (nothing in ``PRELOAD`` starts a thread at import), so
forking it is safe. Everything else stays Prefect's: the runner still builds the call, its
environment and control channel, waits for the process and signals it to cancel or stop.

The one thing replaced is what ``prefect.flow_engine`` sees as ``multiprocessing`` (its
``get_context`` answers with the forkserver context); the rest of the module is untouched.
Prefect is pinned (``requirements.lock``); ``tests/e2e/test_jobs.py`` checks that a job's flow
run is a forkserver child, so an upgrade that bypasses this shows up as a failing test, not as a
silent slowdown.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
from collections.abc import Callable
from typing import Any

import prefect.flow_engine

from shoal import chunkprocs
from shoal.settings import get_settings

#: imported once by the forkserver: what a flow-run process needs before its first line
PRELOAD = [
    "prefect.flow_engine",
    "prefect.runner",
    "flows.scrape_job",
    "flows.maintenance",
    "shoal.chunkprocs",
    "shoal.scrape",
    "shoal.finalize",
    "shoal.output",
    # what Prefect imports on a flow run's first task (~45 ms a run under cProfile, most of it
    # graphviz for `prefect.utilities.visualization`)
    "prefect.task_engine",
    "prefect.utilities.visualization",
    "prefect.concurrency._asyncio",
    "prefect.concurrency.services",
    "anyio._backends._asyncio",
    "encodings.idna",
]


def _flow_run_main(target: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """A flow-run process, forked from the warm forkserver: fork the job's chunk processes
    while this process still has one thread (``shoal.chunkprocs.prefork``), then run Prefect's
    entry point."""
    chunkprocs.prefork(get_settings())
    try:
        return target(*args)
    finally:
        # a forkserver child ends in os._exit, after multiprocessing joins its children: no
        # atexit hook runs, so stop the chunk processes (a spare never adopted waits forever)
        chunkprocs.shutdown_all()


class _Context:
    """The forkserver context, with every process started through ``_flow_run_main``."""

    def __init__(self, ctx: multiprocessing.context.BaseContext) -> None:
        self._ctx = ctx

    def Process(self, target: Callable[..., Any], args: tuple[Any, ...] = (), **kw: Any) -> Any:  # noqa: N802 - multiprocessing's name
        return self._ctx.Process(target=_flow_run_main, args=(target, args), **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)


class _Multiprocessing:
    """``multiprocessing`` as ``prefect.flow_engine`` sees it: any context is the warm one."""

    def __init__(self, ctx: _Context) -> None:
        self._ctx = ctx

    def get_context(self, method: str | None = None) -> _Context:
        return self._ctx

    def __getattr__(self, name: str) -> Any:
        return getattr(multiprocessing, name)


def install() -> None:
    """Start the forkserver, wait until it has imported ``PRELOAD`` (a few seconds, once), and
    route Prefect's flow-run processes through it. Idempotent; call it in the worker before it
    registers its deployments."""
    if isinstance(prefect.flow_engine.multiprocessing, _Multiprocessing):
        return
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    multiprocessing.forkserver.ensure_running()
    # one fork answered means the imports are done: the worker registers its deployments (and
    # `shoal up` prints its banner) only then, so the first job does not wait for them
    ready = ctx.Process(target=_ready, name="shoal-forkserver-ready")
    ready.start()
    ready.join()
    prefect.flow_engine.multiprocessing = _Multiprocessing(_Context(ctx))  # type: ignore[assignment]


def _ready() -> None:
    """The first fork: proves the forkserver has finished importing ``PRELOAD``."""
