"""Running a job's chunks in worker processes, so one job uses every core.

A flow process is CPU-bound on one core when it fetches, parses and writes every chunk itself.
Chunks, not pages, cross the process boundary (shipping a 44 KB page costs more than parsing it):
each worker process keeps ONE event loop and, per job, one ``JobRuntime`` (its engine reused by
every chunk of the job that process runs) and returns a small ``ChunkSummary``.

The job's ``concurrency`` stays a true cap across the job: it is split among the processes the
job uses (``concurrency // k``, at least 1, the remainder to the first; fewer processes when
``concurrency`` gives fewer than ``MIN_PER_PROC`` each), and the per-host cap likewise. Each
process runs up to ``PER_PROC`` chunks at once so one chunk's tail overlaps the next one's start.

A worker process watches its jobs by itself every ``progress_interval_s``: it flushes its live
counters (raise-only, as the flow's monitor does), stops on a cancel flag or at the lifetime
deadline, and exits at once when the flow process is gone (its pipe closes, or its parent
changes), so a SIGTERM or ``kill -9`` of the flow process leaves no worker behind.

A chunk whose process died fails with ``BrokenProcessPool`` (the task retries it); the dead
process is replaced on the next dispatch. Plain Python: no Prefect import.

Rendering. A job with ``render`` starts browsers in each process that runs its chunks (its
``JobRuntime.renderer``, on the first rendered URL; ``SHOAL_RENDER_MAX_PAGES`` is per process)
and closes them at ``end_job``. Each chunk's summary carries the pages it rendered and the
seconds it took, which the flow sums for the run page.

Rows. A chunk persists its finished rows as it goes (``shoal.output.ChunkWriter``), in the
process that runs it. What is finished but not yet in a piece is written before a process goes
whenever it can be: a chunk cancelled by ``stop`` writes it as it unwinds; a process whose flow
process died writes it (at most ``_LAST_PERSIST_S``) before it exits; and the cancel hook asks
every process to write it (``persist_then_kill``) before it kills them.

Starting a process. A spawned one imports the engine, DuckDB and SQLAlchemy again (~0.75 CPU s
each, per job). A flow-run process forked from the worker's warm forkserver
(``deployments/warm_start.py``) calls ``prefork`` first, while it still has one thread: its
chunk processes are then forks of a process that has imported all of it, ready when the job's
plan is. Without spares (the Prefect test harness, a flow run started some other way) a process
is spawned as before.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import logging
import multiprocessing
import os
import sys
import threading
import traceback
from collections.abc import Iterator
from concurrent.futures import Future, InvalidStateError
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from multiprocessing.connection import Connection
from typing import Any

from shoal.settings import Settings

log = logging.getLogger(__name__)

#: fewest requests in flight worth a process: below that a job is not CPU-bound, and spreading
#: its chunks only delays the first finished part (what a SIGTERM or kill -9 leaves behind)
MIN_PER_PROC = 8
#: chunks one worker process runs at once (measured: 2 keeps both cores busy over chunk tails)
PER_PROC = 2
#: longest a chunk process whose flow process died spends writing its finished rows (a piece
#: of a few hundred rows takes ~10-50 ms; the bound is for a storage that does not answer)
_LAST_PERSIST_S = 2.0


def resolve_processes(settings: Settings) -> int:
    """``SHOAL_CHUNK_PROCESSES`` as a number of processes; 0 means run chunks in the flow."""
    n = settings.chunk_processes
    if n < 0:
        n = (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )
    return n if n > 1 else 0


def split(total: int, k: int) -> list[int]:
    """``total`` over ``k`` shares: ``total // k`` each (at least 1), the remainder to the first."""
    base, rest = divmod(total, k)
    return [max(1, base + (rest if i == 0 else 0)) for i in range(k)]


def plan_shares(
    concurrency: int, host_cap: int, n_procs: int, n_chunks: int
) -> list[tuple[int, int]]:
    """(concurrency, per-host cap) of each process a job uses; [] when it should run inline."""
    k = min(n_procs, concurrency // MIN_PER_PROC, n_chunks)
    if k < 2:
        return []
    k = min(k, host_cap) if host_cap >= 1 else k
    if k < 2:
        return []
    return list(zip(split(concurrency, k), split(host_cap, k), strict=True))


# ---------------------------------------------------------------------------- worker side
def _worker_main(conn: Connection, parent_pid: int, settings: Settings) -> None:
    """Entry point of a spawned worker process: serve chunk requests until told to stop or
    orphaned."""
    logging.basicConfig(level=logging.WARNING)
    from shoal.pages import parse_inline  # the parent needs none of it

    parse_inline()  # one level of worker processes: this one is already a core's worth
    try:
        asyncio.run(_serve(conn, parent_pid, settings))
    finally:
        os._exit(0)  # never run the parent's atexit-like teardown twice, never linger


def _forked_main(conn: Connection, parents_end: Connection, parent_pid: int) -> None:
    """Entry point of a pre-forked worker process: close the pipe ends this fork inherited (its
    parent's, and the other spares'), so a dead flow process reads as EOF here; wait for the
    settings of the job that adopts it, then serve as a spawned one does."""
    parents_end.close()
    for _, other in _spares:
        other.close()
    logging.root.handlers.clear()  # the flow process's; log to stderr as a spawned one does
    try:
        kind, settings = conn.recv()
    except (EOFError, OSError):
        os._exit(0)  # never adopted: the flow process ended
    assert kind == "settings", kind
    _worker_main(conn, parent_pid, settings)


async def _serve(conn: Connection, parent_pid: int, settings: Settings) -> None:
    from shoal.scrape import JobRuntime  # imported here: the parent needs none of it

    loop = asyncio.get_running_loop()
    watchers: dict[str, asyncio.Task[None]] = {}
    tasks: dict[int, asyncio.Task[None]] = {}

    def reader() -> None:
        # a thread, so a dead parent is noticed even while the loop is busy
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                _parent_gone(loop, tasks)  # the flow process is gone: so are we
            loop.call_soon_threadsafe(inbox.put_nowait, msg)

    def orphan_check() -> None:
        while True:
            threading.Event().wait(0.5)
            if os.getppid() != parent_pid:
                _parent_gone(loop, tasks)

    inbox: asyncio.Queue[Any] = asyncio.Queue()
    threading.Thread(target=reader, daemon=True, name="chunkproc-reader").start()
    threading.Thread(target=orphan_check, daemon=True, name="chunkproc-orphan").start()

    async def run(
        req: int,
        job_id: str,
        input_url: str,
        chunk: dict[str, Any],
        conc: int,
        host: int,
        sharers: int,
    ) -> None:
        try:
            rt = await _runtime(JobRuntime, job_id, settings, conc, host, sharers, watchers)
            from shoal.chunking import Chunk
            from shoal.scrape import scrape_chunk

            summary = await scrape_chunk(rt, input_url, Chunk(**chunk))
            conn.send(("ok", req, asdict(summary)))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
            conn.send(("err", req, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))

    while True:
        msg = await inbox.get()
        if msg[0] == "chunk":
            t = asyncio.create_task(run(*msg[1:]))
            tasks[msg[1]] = t
            t.add_done_callback(functools.partial(_forget, tasks, msg[1]))
        elif msg[0] == "cancel":
            running = tasks.get(msg[1])
            if running is not None:
                running.cancel()
        elif msg[0] == "persist":  # the job is being cancelled: write what finished, now
            from shoal.output import persist_all

            rows = await asyncio.to_thread(persist_all, seal=True)
            conn.send(("ok", msg[1], {"rows": rows}))
        elif msg[0] == "end_job":
            await _end_job(JobRuntime, msg[1], watchers)
        elif msg[0] == "stop":
            for t in list(tasks.values()):
                t.cancel()
            for job_id in list(watchers):
                await _end_job(JobRuntime, job_id, watchers)
            return


_exiting = threading.Lock()


def _parent_gone(loop: asyncio.AbstractEventLoop, tasks: dict[int, asyncio.Task[None]]) -> None:
    """The flow process is gone: cancel the running chunks (each writes its finished rows as it
    unwinds), write what is left, exit — all within ``_LAST_PERSIST_S``.

    Cancelled on the loop first, not sealed from here at once: a flow process ending on SIGTERM
    sends its ``cancel`` messages and exits, and the EOF overtook them; sealing then, while the
    chunks kept fetching until the exit, lost up to twice the requests in flight (32 of 256 rows
    at C=16 in ``tests/integration/test_ui_cancel.py``), now at most those in flight."""
    if not _exiting.acquire(blocking=False):  # the other watcher thread is on it
        threading.Event().wait()
    if not tasks:  # no chunk running: nothing to write, exit at once
        os._exit(1)
    timer = threading.Timer(_LAST_PERSIST_S, os._exit, args=(1,))
    timer.daemon = True
    timer.start()

    async def unwind() -> None:
        running = list(tasks.values())
        for t in running:
            t.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    try:
        with contextlib.suppress(Exception):  # a loop that is gone has nothing to unwind
            asyncio.run_coroutine_threadsafe(unwind(), loop).result(_LAST_PERSIST_S / 2)
        from shoal.output import persist_all

        persist_all(seal=True)
    finally:
        os._exit(1)


def _forget(tasks: dict[int, asyncio.Task[None]], req: int, _task: asyncio.Task[None]) -> None:
    tasks.pop(req, None)


async def _runtime(
    runtime_cls: Any,
    job_id: str,
    settings: Settings,
    conc: int,
    host: int,
    sharers: int,
    watchers: dict[str, asyncio.Task[None]],
) -> Any:
    rt = runtime_cls.get(job_id)
    if rt is None:
        from shoal.contract import JobSpec
        from shoal.store import get_store

        row = await asyncio.to_thread(get_store(settings).get_job, job_id)
        assert row is not None, job_id
        rt = runtime_cls.get(job_id)  # another chunk may have opened it meanwhile
        if rt is None:
            rt = runtime_cls.open(
                job_id,
                JobSpec.model_validate(row.spec),
                settings,
                concurrency=conc,
                max_per_host=host,
                delay_scale=sharers,
            )
            watchers[job_id] = asyncio.create_task(_watch(rt, row.started_at))
    return rt


async def _watch(rt: Any, started_at: Any) -> None:
    """Every ``progress_interval_s``: flush live counters, stop on a cancel or the deadline."""
    from shoal.store import aware, utcnow

    started = aware(started_at) or utcnow()
    lifetime = rt.settings.job_lifetime_s
    while True:
        await asyncio.sleep(rt.settings.progress_interval_s)
        try:
            await asyncio.to_thread(rt.flush_counters)
            if await asyncio.to_thread(rt.store.cancel_requested, rt.job_id):
                rt.request_stop("cancel")
            elif (utcnow() - started).total_seconds() > lifetime:
                rt.request_stop(f"job lifetime of {lifetime} s reached; stopped with what finished")
        except Exception:  # a store hiccup must not end the watch
            log.exception("job %s: watcher tick failed", rt.job_id)


async def _end_job(runtime_cls: Any, job_id: str, watchers: dict[str, asyncio.Task[None]]) -> None:
    w = watchers.pop(job_id, None)
    if w is not None:
        w.cancel()
    rt = runtime_cls.get(job_id)
    if rt is not None:
        await asyncio.to_thread(rt.flush_counters)
        await rt.close()


# ---------------------------------------------------------------------------- parent side
@contextlib.contextmanager
def _main_not_reimported() -> Iterator[None]:
    """Spawn re-imports the parent's ``__main__`` in the child: for a flow-run process that is
    ``prefect.engine`` (~1.2 CPU s per worker, measured). The worker needs none of it."""
    main = sys.modules.get("__main__")
    saved: dict[str, Any] = {
        k: main.__dict__[k] for k in ("__spec__", "__file__") if main and k in main.__dict__
    }
    try:
        if main is not None:
            main.__spec__ = None
            main.__dict__.pop("__file__", None)
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)


class _Proc:
    """One worker process, its pipe, and the chunks it is running."""

    def __init__(self, settings: Settings) -> None:
        spare = _take_spare()
        if spare is not None:  # forked before this process had threads: ready now
            self.process, self.conn = spare
            self.conn.send(("settings", settings))
        else:
            ctx = multiprocessing.get_context("spawn")  # the flow process has threads: no fork
            self.conn, child = ctx.Pipe()
            self.process = ctx.Process(
                target=_worker_main,
                args=(child, os.getpid(), settings),
                name="shoal-chunkproc",
                daemon=False,  # a daemonic process may not start the parse pool's processes
            )
            with _main_not_reimported():
                self.process.start()
            child.close()
        self.pending: dict[int, Future[dict[str, Any]]] = {}
        self.lock = threading.Lock()
        self.alive = True
        self.slots = threading.BoundedSemaphore(PER_PROC)
        threading.Thread(target=self._read, daemon=True, name="chunkproc-results").start()

    def _read(self) -> None:
        while True:
            try:
                kind, req, payload = self.conn.recv()
            except (EOFError, OSError):
                break
            with self.lock:
                fut = self.pending.pop(req, None)
            if fut is None:
                continue
            if fut.done():  # the caller gave up on it (cancelled, timed out)
                continue
            try:
                if kind == "ok":
                    fut.set_result(payload)
                else:
                    fut.set_exception(RuntimeError(f"chunk failed in worker process: {payload}"))
            except InvalidStateError:  # cancelled just now
                pass
        self.alive = False
        with self.lock:
            pending, self.pending = self.pending, {}
        code = self.process.exitcode
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(
                    BrokenProcessPool(f"chunk worker process {self.process.pid} died ({code})")
                )

    def send(self, req: int, msg: tuple[Any, ...]) -> Future[dict[str, Any]]:
        fut: Future[dict[str, Any]] = Future()
        with self.lock:
            if not self.alive:
                raise BrokenProcessPool("chunk worker process is gone")
            self.pending[req] = fut
            self.conn.send(msg)
        return fut

    def cancel(self, req: int) -> None:
        with self.lock:
            self.pending.pop(req, None)
            if self.alive:
                with contextlib.suppress(OSError):
                    self.conn.send(("cancel", req))

    def stop(self, timeout: float) -> None:
        if self.alive:
            try:
                with self.lock:
                    self.conn.send(("stop",))
            except OSError:
                pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(1.0)
        self.conn.close()


class ChunkProcs:
    """``n`` worker processes (started lazily) that run chunks for the jobs of this process."""

    def __init__(self, n: int, settings: Settings) -> None:
        self.n = n
        self.settings = settings
        self._procs: list[_Proc | None] = [None] * n
        self._lock = threading.Lock()
        self._req = 0
        self._jobs: dict[str, list[tuple[int, int]]] = {}

    def _proc(self, i: int) -> _Proc:
        with self._lock:
            p = self._procs[i]
            if p is None or not p.alive:
                if p is not None:
                    log.warning("chunk worker process %s died; starting a new one", p.process.pid)
                    p.stop(0.1)
                p = self._procs[i] = _Proc(self.settings)
            return p

    def prestart(self, k: int) -> None:
        """Start ``k`` processes now (their imports take ~0.7 CPU s each), so they are ready
        when the job's plan is; a no-op for those already running."""
        for i in range(min(k, self.n)):
            self._proc(i)

    def start_job(self, job_id: str, shares: list[tuple[int, int]]) -> None:
        """Use ``len(shares)`` processes for the job, process i with ``shares[i]``."""
        assert 2 <= len(shares) <= self.n
        self._jobs[job_id] = shares
        for i in range(len(shares)):
            self._proc(i)  # start them now, in parallel with planning the first chunks

    def uses(self, job_id: str) -> bool:
        return job_id in self._jobs

    async def run(self, job_id: str, input_url: str, chunk: dict[str, Any]) -> dict[str, Any]:
        """Run one chunk in the least busy process of the job; its summary as a dict."""
        shares = self._jobs[job_id]
        procs = list(range(len(shares)))
        while True:
            # the process with the most free slots; wait (off the loop) when all are full
            for i in sorted(procs, key=lambda j: -self._free(j)):
                p = self._proc(i)
                if p.slots.acquire(blocking=False):
                    break
            else:
                await asyncio.sleep(0.02)
                continue
            break
        try:
            with self._lock:
                self._req += 1
                req = self._req
            conc, host = shares[i]
            fut = p.send(req, ("chunk", req, job_id, input_url, chunk, conc, host, len(shares)))
            try:
                return await asyncio.wrap_future(fut)
            except asyncio.CancelledError:  # task timeout or flow cancel: stop it over there too
                p.cancel(req)
                raise
        finally:
            p.slots.release()

    def _free(self, i: int) -> int:
        p = self._procs[i]
        return PER_PROC if p is None else p.slots._value  # type: ignore[attr-defined]

    def end_job(self, job_id: str) -> None:
        """Flush and close the job's runtimes in the processes (they keep running)."""
        shares = self._jobs.pop(job_id, None)
        if shares is None:
            return
        for p in self._procs[: len(shares)]:
            if p is not None and p.alive:
                try:
                    with p.lock:
                        p.conn.send(("end_job", job_id))
                except OSError:
                    pass

    @property
    def idle(self) -> bool:
        return not self._jobs

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop every process (killed if it does not exit within ``timeout``)."""
        with self._lock:
            procs, self._procs = self._procs, [None] * self.n
        for p in procs:
            if p is not None:
                p.stop(timeout)

    def persist_then_kill(self, timeout: float = 1.5) -> None:
        """Have every process write its chunks' finished rows (waiting at most ``timeout``),
        then kill them all: the job is being cancelled and its output built from the files."""
        futures = []
        for p in self._procs:
            if p is not None and p.alive:
                with self._lock:
                    self._req += 1
                    req = self._req
                with contextlib.suppress(BrokenProcessPool, OSError):
                    futures.append(p.send(req, ("persist", req)))
        if futures:
            concurrent.futures.wait(futures, timeout=timeout)
        self.kill()

    def kill(self) -> None:
        """Kill every process at once (the flow process is being terminated)."""
        for p in self._procs:
            if p is not None and p.process.is_alive():
                p.process.kill()


_pool: ChunkProcs | None = None
_pool_lock = threading.Lock()
#: pre-forked worker processes not adopted yet, and the parent's end of their pipes
_spares: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []


def prefork(settings: Settings) -> int:
    """Fork this process's chunk processes now; how many (0: none, chunks will be spawned or
    run in the flow).

    Only safe while this process has a single thread (a fork copies no other thread, and would
    copy a lock another thread holds): ``deployments/warm_start.py`` calls it first thing in a
    flow-run process. They wait for a job to adopt them and exit with this process otherwise."""
    n = resolve_processes(settings)
    if threading.active_count() > 1:  # not safe to fork: the job spawns its processes instead
        log.warning("not forking chunk processes: %d threads running", threading.active_count())
        return 0
    ctx = multiprocessing.get_context("fork")
    for _ in range(n - len(_spares)):
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_forked_main,
            args=(child, parent, os.getpid()),
            name="shoal-chunkproc",
            daemon=False,
        )
        proc.start()
        child.close()
        _spares.append((proc, parent))
    return n


def _take_spare() -> tuple[multiprocessing.process.BaseProcess, Connection] | None:
    while _spares:
        proc, conn = _spares.pop(0)
        if proc.is_alive():
            return proc, conn
        conn.close()
    return None


def _stop_spares() -> None:
    while _spares:
        proc, conn = _spares.pop()
        conn.close()  # EOF: it exits
        proc.join(1.0)
        if proc.is_alive():
            proc.kill()


def get_chunk_procs(settings: Settings) -> ChunkProcs | None:
    """This process's chunk processes (None when chunks run in the flow process)."""
    global _pool
    n = resolve_processes(settings)
    if n < 2:
        return None
    with _pool_lock:
        # new settings (tests; an operator's change) need processes that read them
        if _pool is None or _pool.n != n or _pool.settings != settings:
            if _pool is not None:
                _pool.shutdown()
            _pool = ChunkProcs(n, settings)
        return _pool


def current() -> ChunkProcs | None:
    return _pool


def shutdown_if_idle() -> None:
    """Stop the processes when no job of this process uses them (a flow ended)."""
    global _pool
    with _pool_lock:
        if _pool is not None and _pool.idle:
            _pool.shutdown()
            _pool = None


@atexit.register
def shutdown_all() -> None:
    """Stop this process's chunk processes, adopted or spare. At interpreter exit, and before
    a multiprocessing child's own exit joins its children (a spare waits for a job forever).

    Chunks running in this process itself (a flow process ending on SIGTERM) write their
    finished rows first; their processes' chunks do as ``stop`` cancels them."""
    pieces = sys.modules.get("shoal.output._pieces")
    if pieces is not None:
        pieces.persist_all(seal=True)
    if _pool is not None:
        _pool.shutdown(timeout=1.0)
    _stop_spares()
