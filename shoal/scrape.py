"""Scraping one chunk: fetch and extract each URL, persisting the rows as it goes.

A ``JobRuntime`` holds what every chunk of a job shares inside one process: the fetch engine
(one client, and the job's ``concurrency`` as a true cap on requests in flight), the cancel /
stop flag, and the chunk counters not yet written to the store.
A failed URL is data (a row with ``status: error``), never an exception out of the chunk.

A URL with ``render`` is admitted by the engine as a fetch is (``Engine.browse``: robots.txt,
the guard, the host's and the job's slots, the proxy pool's pick) and loaded by the process's
``Renderer`` (started on the first rendered URL, closed with the runtime); its row is made from
the rendered DOM as a fetched page's is from its body. The chunk's summary says how many pages
the browser loaded and how long rendering took, so the flow can sum them over processes.

A chunk writes its rows in pieces while it runs and one compacted part at its end
(``shoal.output.ChunkWriter``), and a new attempt at it fetches only what earlier ones did not
persist. Its counters are those of the rows persisted, recorded after each piece: they never
go back and, at the end, equal the rows of the output.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import heapq
import itertools
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from shoal import output, screenshots
from shoal.chunking import Chunk, read_chunk
from shoal.conditional import ChunkAsks, Conditional, previous_job_id
from shoal.contract import SCREENSHOT_NEEDS_RENDER, JobSpec, run_overrides
from shoal.errors import ExtractError, FetchError, RenderUnavailable
from shoal.fetch import Engine, FetchOptions, FetchResponse, status_error
from shoal.pages import PageWorkers, get_page_workers
from shoal.render import DEFAULT_BLOCK
from shoal.settings import Settings
from shoal.storage import Storage, get_storage
from shoal.store import Counters, Store, get_host_leases, get_store

if TYPE_CHECKING:
    from shoal.render import Renderer

log = logging.getLogger(__name__)

_HTML_TYPES = ("text/html", "application/xhtml+xml", "text/plain", "")
#: per-URL overrides that change what a row holds: such a URL is not asked conditionally
_CONTENT_OPTIONS = frozenset(
    {"extract", "selectors", "formats", "screenshot", "render", "wait_for", "block_resources"}
)


class OrderedGate:
    """The job's cap on URLs in flight, admitting the lowest ``order`` (input index) first.

    A chunk's workers each hold a slot from one URL to the next and give it up only to a waiter
    of a lower input index, so the earliest running chunk is finished first: its compacted part
    exists early (what results page through by footers while the job runs; a kill keeps the
    pieces of the others too) instead of every running chunk being half done. A slot is held
    while a page is parsed; parsing in the process is synchronous, so that takes no request
    slot from anyone."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._free = slots
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def should_yield(self, order: int) -> bool:
        """Whether a waiter with a lower order than ``order`` is queued."""
        return bool(self._waiters) and self._waiters[0][0] < order

    async def acquire(self, order: int) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (order, next(self._seq), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted as we were cancelled: pass it on
                self.release()
            else:
                self._waiters = [w for w in self._waiters if w[2] is not fut]
                heapq.heapify(self._waiters)
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)  # the slot goes straight to the waiter
                return
        self._free += 1


@dataclass
class LiveCounters:
    """A chunk's persisted counts that ``record_chunk`` has not taken yet (a store hiccup)."""

    done: int = 0
    errored: int = 0
    credits: int = 0
    dirty: bool = False


@dataclass
class ChunkSummary:
    """A chunk's counts; ``rendered``/``render_s``: pages the browser loaded in this attempt
    and the seconds spent rendering (the run page sums them over chunks and processes)."""

    index: int
    rows: int
    errored: int
    credits: int
    complete: bool
    rendered: int = 0
    render_s: float = 0.0


@dataclass
class JobRuntime:
    """Shared state of one job in this process (see module docstring)."""

    job_id: str
    spec: JobSpec
    settings: Settings
    storage: Storage
    store: Store
    engine: Engine
    admit: OrderedGate
    pages: PageWorkers
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    stop_reason: str | None = None
    live: dict[int, LiveCounters] = field(default_factory=dict)
    defaults: dict[str, Any] = field(init=False)
    default_fetch: FetchOptions = field(init=False)
    conditional: Conditional | None = field(init=False)
    #: pages rendered and seconds spent rendering, summed from the chunk summaries (the flow's)
    rendered: int = 0
    render_s: float = 0.0
    _renderer: Renderer | None = None
    _renderer_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _render_unavailable: str | None = None

    def __post_init__(self) -> None:
        # computed once per job: the per-URL path must not re-dump the pydantic model
        self.defaults = self.spec.defaults.model_dump()
        self.default_fetch = _fetch_options(self.defaults, self.settings)
        self.conditional = None
        if previous_job_id(self.spec) is not None:
            self.conditional = Conditional.of_job(self.storage, self.store, self.job_id, self.spec)

    _registry: ClassVar[dict[str, JobRuntime]] = {}

    @classmethod
    def open(
        cls,
        job_id: str,
        spec: JobSpec,
        settings: Settings,
        *,
        concurrency: int | None = None,
        max_per_host: int | None = None,
        delay_scale: int = 1,
    ) -> JobRuntime:
        """The job's runtime in this process, created on first use.

        ``concurrency`` and ``max_per_host`` give this process its share of the job's caps when
        the job's chunks run in several processes (``shoal.chunkprocs``); default: the job's.
        ``delay_scale`` is how many processes share the job: each spaces its requests to one
        host that many times further apart, so the job as a whole keeps a Crawl-delay."""
        rt = cls._registry.get(job_id)
        if rt is None:
            concurrency = concurrency or spec.concurrency
            engine = Engine(
                concurrency=concurrency,
                settings=settings,
                max_per_host=max_per_host or spec.defaults.max_per_host,
                delay_scale=delay_scale,
                host_leases=get_host_leases(settings),  # SHOAL_MAX_PER_HOST across all jobs
            )
            rt = cls(
                job_id=job_id,
                spec=spec,
                settings=settings,
                storage=get_storage(settings),
                store=get_store(settings),
                engine=engine,
                admit=OrderedGate(concurrency),
                pages=get_page_workers(settings),
            )
            cls._registry[job_id] = rt
        return rt

    @classmethod
    def get(cls, job_id: str) -> JobRuntime | None:
        return cls._registry.get(job_id)

    def host_cap(self) -> int:
        """The job's cap on requests in flight to one host (what its engine enforces)."""
        cap = min(
            self.settings.max_per_host, self.spec.defaults.max_per_host or self.spec.concurrency
        )
        return max(1, min(cap, self.spec.concurrency))

    async def renderer(self) -> Renderer:
        """The browsers of this process for the job, started on its first rendered URL.

        A browser that cannot start fails every rendered URL of the job here with
        ``render_failed`` naming the missing piece, without trying again per URL (a launch
        that fails takes up to 30 s)."""
        if self._renderer is not None:
            return self._renderer
        async with self._renderer_lock:
            if self._renderer is None:
                if self._render_unavailable is not None:
                    raise FetchError("render_failed", self._render_unavailable)
                from shoal.render import Renderer

                renderer = Renderer(self.settings)
                try:
                    await renderer.start()
                except RenderUnavailable as exc:
                    await renderer.aclose()
                    self._render_unavailable = f"rendering is not available here: {exc.detail}"
                    raise FetchError("render_failed", self._render_unavailable) from exc
                except BaseException:
                    await renderer.aclose()
                    raise
                self._renderer = renderer
            return self._renderer

    async def close(self) -> None:
        self._registry.pop(self.job_id, None)
        try:
            if self._renderer is not None:
                renderer, self._renderer = self._renderer, None
                await renderer.aclose()
        finally:
            await self.engine.aclose()

    def request_stop(self, reason: str) -> None:
        if not self.stop.is_set():
            self.stop_reason = reason
            self.stop.set()

    def flush_counters(self) -> None:
        """Write changed live counters to the store (raise-only, so they never go back)."""
        for index, c in list(self.live.items()):
            if c.dirty:
                c.dirty = False
                try:
                    self.store.record_chunk(
                        self.job_id,
                        index,
                        Counters(c.done, c.errored, c.credits),
                        finished=False,
                        exact=False,
                    )
                except Exception:
                    c.dirty = True
                    raise

    def record_persisted(self, index: int, kept: output.Kept) -> None:
        """A chunk's counts as persisted so far, to the store now (from the writing thread).

        Raise-only, like every live update: each attempt reports what it found persisted plus
        what it wrote, never more than the files hold, so the largest report is the truest."""
        c = self.live.setdefault(index, LiveCounters())
        c.done, c.errored, c.credits = kept.rows, kept.errored, kept.credits
        c.dirty = True
        self.flush_counters()


_second: tuple[int, str] = (-1, "")


def _now() -> str:
    """UTC now as ``2026-11-23T19:10:01.123Z``; the second's part is formatted once a second
    (``datetime.isoformat`` per row was 1.4 % of a chunk's CPU)."""
    global _second
    t = time.time()
    whole = int(t)
    if whole != _second[0]:
        _second = (whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S."))
    return f"{_second[1]}{int((t - whole) * 1000):03d}Z"


def _fetch_options(opts: dict[str, Any], settings: Settings) -> FetchOptions:
    return FetchOptions(
        timeout_s=float(opts["timeout_s"]),
        headers=opts.get("headers") or {},
        max_body_bytes=opts.get("max_body_bytes") or settings.default_body_bytes,
        proxy_type=opts.get("proxy_type") or "none",
        respect_robots=bool(opts.get("respect_robots", True)),
    )


def _ms_since(started: float) -> int:
    return round((asyncio.get_running_loop().time() - started) * 1000)


def _credits(settings: Settings, opts: dict[str, Any]) -> int:
    if opts.get("proxy_type") == "residential":
        return settings.credits_residential
    if opts.get("render"):
        return settings.credits_render
    return settings.credits_plain


def _is_html(resp: FetchResponse) -> bool:
    return resp.content_type.split(";")[0].strip().lower() in _HTML_TYPES


def _error_row(row: dict[str, Any], exc: FetchError) -> dict[str, Any]:
    row.update(
        status="error",
        http_status=exc.http_status,
        final_url=exc.final_url,
        attempts=exc.attempts,
        error={"code": exc.code, "message": exc.message},
    )
    return row


async def _scrape_one(
    rt: JobRuntime, item: dict[str, Any], asks: ChunkAsks | None = None
) -> dict[str, Any]:
    """One URL -> one result row (the caller holds a slot of the job's gate). ``asks``: the
    chunk's validators from the previous run (a conditional job)."""
    ask = asks.get(item["i"]) if asks else None
    overrides = item.get("o")
    if overrides:  # per-URL overrides replace whole keys of the defaults (shallow)
        opts = {**rt.defaults, **overrides}
        fetch_opts = _fetch_options(opts, rt.settings)
        if ask is not None and not _CONTENT_OPTIONS.isdisjoint(overrides):
            ask = None  # its previous row was made with the job's defaults
    else:
        opts, fetch_opts = rt.defaults, rt.default_fetch
    # with the previous run's validators; a browser never gets them (see _render_if_modified)
    asked = fetch_opts
    if ask is not None:
        asked = dataclasses.replace(fetch_opts, headers={**fetch_opts.headers, **ask.headers()})
    row: dict[str, Any] = {
        "url": item["url"],
        "input_index": item["i"],
        "meta": item.get("meta"),
        "credits": 0,
        "attempts": 0,
        "data": None,
        "error": None,
    }
    row["fetched_at"] = _now()
    started = asyncio.get_running_loop().time()
    if item.get("error"):  # a line that was invalid in the input
        row["elapsed_ms"] = 0
        return _error_row(row, FetchError("invalid_url", item["error"], attempts=0))
    if opts.get("render"):
        if ask is not None and asks is not None:
            return await _render_if_modified(rt, item, row, opts, fetch_opts, asked, asks)
        return await _render_one(rt, item, row, opts, fetch_opts, started)
    if opts.get("screenshot") is not None:
        # a file's row that left render to the job's defaults, known only now (inline URLs
        # are 422; a row saying render: false was refused when its file was read): refused as
        # that row was, an invalid record naming the field, nothing fetched, nothing charged
        row["elapsed_ms"] = 0
        why = f"formats: {SCREENSHOT_NEEDS_RENDER}"
        return _error_row(row, FetchError("invalid_url", why, attempts=0))
    try:
        resp = await rt.engine.fetch(item["url"], asked)
    except FetchError as exc:
        row["elapsed_ms"] = _ms_since(started)
        if exc.http_status is not None:
            row["credits"] = _credits(rt.settings, opts)
        return _error_row(row, exc)
    except Exception as exc:  # a bug must cost one URL, not the chunk
        log.exception("unexpected error fetching %s", item["url"])
        row["elapsed_ms"] = _ms_since(started)
        return _error_row(row, FetchError("connect", f"internal error: {exc!r}"))
    if resp.status == 304:
        return await _not_modified(
            rt, item, row, resp, asks if ask else None, _credits(rt.settings, opts)
        )
    headers = resp.headers
    row.update(
        status="ok",
        http_status=resp.status,
        final_url=resp.final_url,
        attempts=resp.attempts,
        elapsed_ms=resp.elapsed_ms,
        credits=_credits(rt.settings, opts),
        content_hash="sha256:" + hashlib.sha256(resp.content).hexdigest(),
        etag=headers.get("etag"),  # the next run's validators (internal part columns)
        last_modified=headers.get("last-modified"),
    )
    if not _is_html(resp):
        return row
    utf8 = resp.utf8
    # from the bytes: the text only if asked for
    return await _with_page(
        rt, row, opts, resp.text if utf8 is None else None, resp.final_url, utf8
    )


async def _with_page(
    rt: JobRuntime,
    row: dict[str, Any],
    opts: dict[str, Any],
    text: str | None,
    final_url: str,
    utf8: bytes | None,
) -> dict[str, Any]:
    """``row`` with the page's data and formats (a fetched body or a rendered DOM), or an
    ``extract_failed`` row when extraction failed."""
    parsed = await rt.pages.run(
        text,
        final_url,
        opts.get("extract"),
        opts.get("selectors"),
        opts.get("formats"),
        utf8,
    )
    if "error" in parsed:
        return _error_row(row, ExtractError(parsed["error"]))
    row.update(parsed)
    return row


async def _render_one(
    rt: JobRuntime,
    item: dict[str, Any],
    row: dict[str, Any],
    opts: dict[str, Any],
    fetch_opts: FetchOptions,
    started: float,
) -> dict[str, Any]:
    """A URL with ``render``: admitted by the engine (``Engine.browse``), loaded by the
    browser within the URL's ``timeout_s``, its row made from the rendered DOM. A document
    answered 4xx/5xx is ``http_4xx``/``http_5xx`` and charged, as a fetch's is; a page that
    never loaded (``render_failed``, ``timeout``, refused by the guard) is not charged.
    ``row["_render_s"]``: the seconds the browser spent (the caller counts it)."""
    loop = asyncio.get_running_loop()
    shot = opts.get("screenshot")
    block = opts.get("block_resources")
    try:
        async with rt.engine.browse(item["url"], fetch_opts) as proxy:
            renderer = await rt.renderer()
            begun = loop.time()
            try:
                page = await renderer.render(
                    item["url"],
                    wait_for=opts.get("wait_for"),
                    block_resources=DEFAULT_BLOCK if block is None else block,
                    deadline_s=fetch_opts.timeout_s,
                    screenshot=shot,
                    proxy=proxy,
                    headers=fetch_opts.headers,
                    allow_navigation=rt.engine.navigation_check(fetch_opts),
                )
            finally:
                row["_render_s"] = loop.time() - begun
    except FetchError as exc:
        row["elapsed_ms"] = _ms_since(started)
        return _error_row(row, exc)
    except Exception as exc:  # a bug must cost one URL, not the chunk
        log.exception("unexpected error rendering %s", item["url"])
        row["elapsed_ms"] = _ms_since(started)
        return _error_row(row, FetchError("render_failed", f"internal error: {exc!r}"))
    cost = _credits(rt.settings, opts)
    row["elapsed_ms"] = _ms_since(started)
    if page.status >= 400:
        row["credits"] = cost
        return _error_row(
            row, status_error(page.status, url=page.final_url, attempts=page.attempts)
        )
    dom = page.html.encode("utf-8", "surrogatepass")
    row.update(
        status="ok",
        http_status=page.status,
        final_url=page.final_url,
        attempts=page.attempts,
        credits=cost,
        content_hash="sha256:" + hashlib.sha256(dom).hexdigest(),  # of the rendered DOM
        # the document's validators: the next run asks with them first (_render_if_modified)
        etag=page.headers.get("etag"),  # Playwright's names are lower-cased
        last_modified=page.headers.get("last-modified"),
    )
    if page.screenshot_png is not None:
        try:
            # its name: the link is signed when the row is served (shoal.screenshots)
            row["screenshot_url"] = await asyncio.to_thread(
                screenshots.save, rt.storage, rt.job_id, item["i"], page.screenshot_png
            )
        except Exception as exc:  # storage down: the page is there, its picture is not
            log.exception("job %s: could not store the screenshot of %s", rt.job_id, item["url"])
            why = f"the page rendered, but its screenshot could not be stored: {exc!r}"
            return _error_row(row, FetchError("render_failed", why, final_url=page.final_url))
    return await _with_page(rt, row, opts, page.html, page.final_url, None)


async def _render_if_modified(
    rt: JobRuntime,
    item: dict[str, Any],
    row: dict[str, Any],
    opts: dict[str, Any],
    fetch_opts: FetchOptions,
    asked: FetchOptions,
    asks: ChunkAsks,
) -> dict[str, Any]:
    """A rendered URL of a conditional job with the previous run's validators: asked first
    with a plain conditional GET through the engine (``asked``: the URL's options with
    ``If-None-Match``/``If-Modified-Since``). A ``304`` carries the previous row forward as
    for a fetched URL (``_not_modified``: ``not_modified``, no credit), with its screenshot
    copied into this job; any other answer, or a failed GET, renders the page as without
    validators (the browser never sends them: a 304 would leave it nothing to render).

    The cost is on changed pages: one more request to the site, its body read and thrown
    away, before the browser loads the page (``tests/integration/test_render_conditional.py``
    counts it: a changed page answers two 200s, an unchanged one a single 304). Measured with
    ``bench/render_conditional.py`` (the nightly catalog site on 127.0.0.1, 0.6 KB pages, one
    at a time, 2026-12-05, on a machine shared at load 15-20; two runs): the GET's 200 took
    1.6-8.8 ms median, a 304 0.9-4.5 ms, the render 369-574 ms: the extra request adds
    0.4-1.5 % to a changed page, and a 304 saves a whole render, so asking first pays once
    more than ~1.5 % of the pages are unchanged. The site sees up to twice the requests on a
    night where every page changed."""
    started = asyncio.get_running_loop().time()
    try:
        resp = await rt.engine.fetch(item["url"], asked)
    except FetchError as exc:  # the render says what is wrong, as it would have
        log.info(
            "job %s: conditional GET of %s failed (%s); rendering", rt.job_id, item["url"], exc.code
        )
        resp = None
    if resp is None or resp.status != 304:
        return await _render_one(rt, item, row, opts, fetch_opts, started)
    carried = await _not_modified(rt, item, row, resp, asks, _credits(rt.settings, opts))
    if not carried.get("not_modified") or opts.get("screenshot") is None:
        return carried
    ask = asks[item["i"]]
    try:
        carried["screenshot_url"] = await asyncio.to_thread(
            screenshots.carry,
            rt.storage,
            asks.cond.prev_job_id,
            ask.prev_index,
            rt.job_id,
            item["i"],
        )
    except FileNotFoundError:  # the previous picture is gone: render the page afresh
        log.info("job %s: previous screenshot of %s gone; rendered", rt.job_id, item["url"])
        return await _scrape_one(rt, item, None)
    return carried


async def _not_modified(
    rt: JobRuntime,
    item: dict[str, Any],
    row: dict[str, Any],
    resp: FetchResponse,
    asks: ChunkAsks | None,
    cost: int,
) -> dict[str, Any]:
    """A ``304``: the previous run's row carried forward, free (``shoal.conditional``); the URL
    fetched again without validators when that row has gone since the plan; an ``http_304``
    error row, charged as any answered error is, when we asked without validators of ours (a
    site answering 304 to nothing, or to the caller's own ``If-*`` headers)."""
    ask = asks.get(item["i"]) if asks else None
    if asks is None or ask is None:
        row["elapsed_ms"] = resp.elapsed_ms
        row["credits"] = cost
        return _error_row(
            row,
            FetchError(
                "http_304",
                "304 Not Modified, but no previous row of this URL to carry forward",
                http_status=304,
                final_url=resp.final_url,
                attempts=resp.attempts,
            ),
        )
    previous = await asyncio.to_thread(asks.previous_row, ask.prev_index, item["url"])
    if previous is None:
        log.info("job %s: previous row of %s gone; fetched again", rt.job_id, item["url"])
        return await _scrape_one(rt, item, None)
    headers = resp.headers
    row.update(
        previous,
        status="ok",
        http_status=304,
        final_url=resp.final_url,
        attempts=resp.attempts,
        elapsed_ms=resp.elapsed_ms,
        credits=0,
        not_modified=True,
        etag=headers.get("etag") or ask.etag,
        last_modified=headers.get("last-modified") or ask.last_modified,
    )
    return row


def _run_form(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chunk's items with their overrides as a job runs them (``run_overrides``): lines
    staged before that form (an old upload's, a resumed or retried job's) carry the request's
    ``formats`` with no ``screenshot``; converted here, once a chunk, not per URL."""
    for item in items:
        over = item.get("o")
        if over and "formats" in over and "screenshot" not in over:
            item["o"] = run_overrides(over)
    return items


async def _persist_every(
    writer: output.ChunkWriter, wake: asyncio.Event, end: asyncio.Event, interval: float
) -> None:
    """Write a piece when ``wake`` is set (enough rows pending) or every ``interval`` s, until
    ``end`` is set. Ended by a flag, not by cancelling it: on Python 3.11 ``wait_for`` loses a
    cancel that lands as the event it waits for is set (the chunk then waited forever, 2 runs
    in 5 here); ``asyncio.timeout`` does not."""
    while not end.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await wake.wait()
        wake.clear()
        if end.is_set():
            return
        if writer.pending:
            try:
                await asyncio.to_thread(writer.persist)
            except Exception:  # storage hiccup: the rows stay pending, tried again next time
                log.exception(
                    "job %s chunk %d: could not write a piece", writer.job_id, writer.index
                )


async def scrape_chunk(rt: JobRuntime, input_url: str, chunk: Chunk) -> ChunkSummary:
    """Scrape what earlier attempts at the chunk did not persist, persisting as it goes.

    Returns the chunk's counts (kept rows: earlier attempts' and this one's). Cancelled (task
    timeout, a chunk process told to stop, the flow process unwinding on SIGTERM), it writes
    its finished rows before it goes; a kill loses at most one piece's worth."""
    items = _run_form(await asyncio.to_thread(read_chunk, rt.storage, input_url, chunk))
    asks: ChunkAsks | None = None
    if rt.conditional is not None:
        try:
            asks = await asyncio.to_thread(
                rt.conditional.for_chunk, input_url, chunk.first, chunk.count
            )
        except Exception:  # an optimization: without it the chunk fetches every URL whole
            log.exception("job %s chunk %d: no conditional requests", rt.job_id, chunk.index)
    writer = await asyncio.to_thread(
        output.ChunkWriter.open,
        rt.storage,
        rt.job_id,
        chunk.index,
        partial(rt.record_persisted, chunk.index),
    )
    if writer.kept_indices:
        log.info(
            "job %s chunk %d: %d of %d rows kept by earlier attempts",
            rt.job_id,
            chunk.index,
            len(writer.kept_indices),
            len(items),
        )
        items_todo = [it for it in items if it["i"] not in writer.kept_indices]
    else:
        items_todo = items
    todo = iter(items_todo)
    persist_rows = max(1, rt.settings.persist_rows)
    full = asyncio.Event()
    rendered = [0, 0.0]  # pages the browser loaded, seconds rendering

    async def worker() -> None:
        # a few workers pulling from the list, not a task per URL queued on the job's gate:
        # thousands of waiting tasks cost event-loop time on every wake-up
        held = False
        try:
            for item in todo:
                if held and rt.admit.should_yield(item["i"]):
                    rt.admit.release()
                    held = False
                if not held:
                    await rt.admit.acquire(item["i"])
                    held = True
                if rt.stop.is_set():  # stopped: the URLs not started are skipped
                    continue
                row = await _scrape_one(rt, item, asks)
                took = row.pop("_render_s", None)
                if took is not None:
                    rendered[0] += row.get("http_status") is not None
                    rendered[1] += took
                if writer.add(row) >= persist_rows:
                    full.set()
        finally:
            if held:
                rt.admit.release()

    end = asyncio.Event()
    persister = asyncio.create_task(
        _persist_every(writer, full, end, rt.settings.persist_interval_s)
    )
    try:
        # no more workers than slots: a worker holding an item while it waits for a slot would
        # outrank the running ones and make every URL a hand-off
        await asyncio.gather(*(worker() for _ in range(min(len(items_todo), rt.admit.slots))))
    except BaseException:
        # cancelled or killed: keep what finished (blocking, a piece's worth, on purpose: the
        # loop may not run again)
        end.set()
        persister.cancel()
        try:
            writer.persist()
        finally:
            writer.close()
        raise
    end.set()
    full.set()
    await persister  # a piece being written is written; then the rest goes into the part
    kept = await asyncio.to_thread(writer.finish)
    complete = kept.rows == len(items)
    await asyncio.to_thread(
        rt.store.record_chunk,
        rt.job_id,
        chunk.index,
        Counters(kept.rows, kept.errored, kept.credits),
        finished=complete,
        exact=False,
    )
    rt.live.pop(chunk.index, None)
    return ChunkSummary(
        chunk.index,
        kept.rows,
        kept.errored,
        kept.credits,
        complete,
        rendered=int(rendered[0]),
        render_s=round(rendered[1], 3),
    )
