"""Turning a fetched page into a result's ``data`` and formats, on every core.

The fetch loop is one event loop in one process; parsing is CPU work. Extracting ``data`` with
selectolax costs ~0.2 ms for a 44 KB page, less than shipping the page to another process, so it
runs inline: measured on 46 KB pages from nginx, 2,820 URLs/s inline against 1,660 through two
worker processes. The heavy formats (``markdown``, ``text``: html2text costs ~8 ms a page) go to a
pool of processes beside the loop (``SHOAL_PARSE_WORKERS``; one per core by default, none on a
one-core machine): 117 URLs/s inline, 210 with two workers.

One level of worker processes: that pool serves a job whose chunks run in the flow process. A
chunk process (``shoal.chunkprocs``, one per core already) parses every format inline
(``parse_inline``); a pool inside each would make cores x cores processes for the same cores.
Measured with ``formats: ["markdown"]`` on 3,000 44 KB pages, two chunk processes, a machine
shared with other work: 65 pages/s inline against 63 with a two-process pool in each
(best of two alternating runs: ``bench/parse_processes.py`` at ded4235).
"""

from __future__ import annotations

import asyncio
import atexit
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from shoal.errors import ExtractError
from shoal.extract import Page, extract_data, page_formats
from shoal.settings import Settings

_EXTRA_FORMATS = frozenset({"html", "markdown", "text", "links", "metadata"})
#: formats whose cost outweighs the round trip to a worker process
HEAVY_FORMATS = frozenset({"markdown", "text"})


def process_page(
    html: str | None,
    base_url: str,
    extract: dict[str, str] | None,
    selectors: dict[str, str] | None,
    formats: list[str] | None,
    utf8: bytes | None = None,
) -> dict[str, Any]:
    """``{"data": ..., <format>: ...}``, or ``{"error": message}`` when extraction failed.

    ``utf8``: ``html`` as UTF-8 bytes when the caller has them (parsed from those, see
    ``Page``; ``html`` may then be ``None``). Plain data in and out, so it can cross a process
    boundary."""
    try:
        page = Page(html, base_url=base_url, utf8=utf8)
        out: dict[str, Any] = {
            "data": extract_data(page, base_url=base_url, extract=extract, selectors=selectors)
        }
        extra = [f for f in formats or () if f in _EXTRA_FORMATS]
        if extra:
            out.update(page_formats(page, base_url=base_url, formats=extra))
        return out
    except ExtractError as exc:
        return {"error": exc.message}
    except Exception as exc:  # a parser bug must cost one URL, not the chunk
        return {"error": f"internal error: {exc!r}"}


class PageWorkers:
    """Runs ``process_page`` inline, or for heavy formats in ``n`` worker processes (started on
    first need)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor | None:
        if self._pool is None and self.n > 0:
            # spawn, not fork: the flow process has threads (Prefect's), fork would copy locks
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=self.n, mp_context=ctx)
            atexit.register(self.shutdown)
        return self._pool

    async def run(
        self,
        html: str | None,
        base_url: str,
        extract: dict[str, str] | None,
        selectors: dict[str, str] | None,
        formats: list[str] | None,
        utf8: bytes | None = None,
    ) -> dict[str, Any]:
        pool = self._get_pool() if HEAVY_FORMATS.intersection(formats or ()) else None
        if pool is None:
            return process_page(html, base_url, extract, selectors, formats, utf8)
        if html is None:  # ship one copy of the page, as text
            assert utf8 is not None
            html = utf8.decode("utf-8", "replace")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            pool, process_page, html, base_url, extract, selectors, formats
        )

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


_workers: PageWorkers | None = None


def parse_inline() -> None:
    """Make this process parse every page itself (a chunk process: see the module docstring)."""
    global _workers
    _workers = PageWorkers(0)  # a forked copy of the parent's pool is not ours to shut down


def get_page_workers(settings: Settings) -> PageWorkers:
    """The process's page workers, started on first use."""
    global _workers
    if _workers is None:
        n = settings.parse_workers
        if n < 0:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
            n = cores if cores > 1 else 0
        _workers = PageWorkers(n)
    return _workers
