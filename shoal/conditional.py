"""Conditional fetch: ask with the previous run's validators; a ``304`` carries its row forward.

A job with ``conditional: true`` and ``compare.previous_job_id`` (a schedule's runs get both)
sends ``If-None-Match`` / ``If-Modified-Since`` for each URL whose row in that previous job was
``ok`` and kept the response's ``ETag`` / ``Last-Modified`` (part columns ``etag`` and
``last_modified``). A ``304`` gives an ``ok`` row with ``not_modified: true``, ``http_status``
304, ``credits`` 0 and the previous row's content (``data``, ``content_hash`` and whichever of
``html``, ``markdown``, ``text``, ``links``, ``metadata`` it had); its validators are the 304's
own where it sent them, else the previous ones, so the run after can ask again.

Finding a URL's previous row scales with the chunk, not with the job. Once per job (at plan
time, ``prepare``), this job's staged input is matched on URL with the previous job's ok rows
that have a validator, into ``jobs/<id>/conditional.parquet``: ``input_index`` (this job's) →
``etag``, ``last_modified``, ``prev_index``, in input order, row groups of ``_GROUP_ROWS``. The
match holds URLs as 64-bit hashes (8 bytes a URL, not the URL) and ``pyarrow.compute.index_in``
finds each input URL's first previous row; a 304's previous row is then checked by URL itself.
A chunk reads only the plan's row groups of its own range (their footers' min/max). The
previous row's content is read only for a 304: the previous part's row group holding it, once
per chunk, keeping the rows of the chunk's own URLs (``ChunkAsks``).

Measured with ``bench/conditional_plan.py`` (1,000,000 URLs, previous parts of 5,000 rows,
local disk, 2026-12-05, CPU seconds: the 2 cores were shared with a load of ~16):

- the plan: 2.5-3.3 CPU s, peak RSS 358-374 MB, once per job (DuckDB's join of the URL
  strings took 2.8 CPU s but 648 MB; capped at 256 MB it spilled 1.7 GB and had not ended
  after 15 minutes);
- a chunk's range: 20 chunks of 5,000 and the 5,000 carried rows of one of them, 0.41 CPU s
  in all, 148 MB peak, when the input is in last night's order. In another order (shuffled)
  a chunk's rows are spread over every previous row group: carrying 5,000 rows read them all
  once, 2.4 CPU s (~0.5 ms a 304, about what fetching and parsing the page costs);
- what a chunk would pay without the plan (the previous job's URLs and validators read into
  a dict): 1.7 CPU s and 521 MB, in every chunk (200 for a million URLs).

No previous results (never, or removed by retention), a previous job asked for other content
(``extract``, ``selectors``, ``formats``, the screenshot's mode, ``render``, ``wait_for`` or
``block_resources`` differ: its rows are not what this job would produce) → nothing is asked
conditionally. A previous row gone between plan and 304 → the URL is fetched again without
validators. A 304 to a request without validators of ours is an error row ``http_304``.

A rendered row keeps the validators of the document the browser loaded; the next run asks
such a URL with a plain conditional GET before it renders (``shoal.scrape``'s
``_render_if_modified``, where its cost is measured): a 304 carries the row (and its
screenshot) forward, anything else is rendered.
"""

from __future__ import annotations

import bisect
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shoal.contract import JobSpec
from shoal.output import iter_part_batches, part_urls
from shoal.output._parts import RowSpan, open_part, read_span, row_spans
from shoal.storage import Storage
from shoal.store import Store

log = logging.getLogger(__name__)

#: DuckDB's memory for the plan's join (it spills past it)
#: rows per row group of the plan file: a chunk (250-5,000 URLs) reads 1-3 of them
_GROUP_ROWS = 4096
#: input lines per batch looked up at once while the plan is built (each lookup hashes the
#: previous URLs anew: fewer, bigger batches)
_INPUT_BATCH = 262_144
#: what makes two jobs' rows alike: the options that decide a row's content
_CONTENT_OPTIONS = (
    "extract",
    "selectors",
    "formats",
    "screenshot",
    "render",
    "wait_for",  # a rendered page's DOM depends on them
    "block_resources",
)
#: the previous row's columns a 304 carries forward
CARRIED = ("content_hash", "data_json", "html", "markdown", "text", "links_json", "metadata_json")
_JSON_CARRIED = (("data_json", "data"), ("links_json", "links"), ("metadata_json", "metadata"))
_PLAN_SCHEMA = pa.schema(
    [
        ("input_index", pa.int64()),
        ("etag", pa.string()),
        ("last_modified", pa.string()),
        ("prev_index", pa.int64()),
    ]
)
_PREV_SCHEMA = pa.schema(
    [
        ("h", pa.int64()),
        ("prev_index", pa.int64()),
        ("etag", pa.string()),
        ("last_modified", pa.string()),
    ]
)


@dataclass(frozen=True)
class Validators:
    """What to ask one URL with, and where its previous row is."""

    etag: str | None
    last_modified: str | None
    prev_index: int

    def headers(self) -> dict[str, str]:
        out = {}
        if self.etag:
            out["If-None-Match"] = self.etag
        if self.last_modified:
            out["If-Modified-Since"] = self.last_modified
        return out


def plan_url(storage: Storage, job_id: str) -> str:
    return storage.url("jobs", job_id, "conditional.parquet")


def previous_job_id(spec: JobSpec) -> str | None:
    """The job whose validators and rows a conditional job uses; None: not conditional."""
    if not spec.conditional or spec.compare is None:
        return None
    return spec.compare.previous_job_id


def content_differs(spec: dict[str, Any], previous: dict[str, Any]) -> str | None:
    """Why the previous job's rows are not what this job would produce, or None."""
    ours, theirs = spec.get("defaults") or {}, previous.get("defaults") or {}
    for name in _CONTENT_OPTIONS:
        if ours.get(name) != theirs.get(name):
            return f"its {name} differs"
    return None


def prepare_job(storage: Storage, store: Store, job_id: str, spec: JobSpec, input_url: str) -> int:
    """``prepare`` for a conditional job (``plan_job`` calls it once the input is staged): the
    URLs it can ask conditionally. Reads the previous job's record to judge its rows."""
    prev_id = previous_job_id(spec)
    if prev_id is None:
        return 0
    previous = store.get_job(prev_id)
    refuse = None
    if previous is None:
        refuse = f"no job {prev_id}"
    else:
        # both as a job runs them (a spec stored before the run form reads into it)
        theirs = JobSpec.model_validate(previous.spec).model_dump() if previous.spec else {}
        refuse = content_differs(spec.model_dump(), theirs)
    return prepare(storage, job_id, input_url, prev_id, refuse=refuse)


def prepare(
    storage: Storage,
    job_id: str,
    input_url: str,
    prev_job_id: str,
    *,
    refuse: str | None = None,
) -> int:
    """Write the job's plan file (once: a resumed run finds it); the URLs it can ask
    conditionally. ``refuse``: why not at all (an empty plan is written)."""
    url = plan_url(storage, job_id)
    if storage.exists(url):
        with open_part(storage, url) as pf:
            return int(pf.metadata.num_rows)
    prev_parts = [] if refuse else part_urls(storage, prev_job_id)
    if refuse or not prev_parts:
        log.info(
            "job %s: no conditional requests (%s)",
            job_id,
            refuse or f"no results of {prev_job_id} left",
        )
        storage.write_bytes_atomic(url, _parquet_bytes(_PLAN_SCHEMA.empty_table()))
        return 0
    # URLs as 64-bit hashes (``hash`` of the string, consistent within this process): 8 bytes
    # a URL in memory instead of the URL; a 304's previous row is checked by URL itself
    prev = pa.Table.from_batches(list(_prev_batches(storage, prev_parts)), _PREV_SCHEMA)
    known = prev.column("h").combine_chunks() if prev.num_rows else pa.array([], pa.int64())
    rows = 0
    fd, tmp = tempfile.mkstemp(suffix=".parquet")
    os.close(fd)
    try:
        with pq.ParquetWriter(tmp, _PLAN_SCHEMA) as writer:
            for hashes, first in _input_hashes(storage, input_url):
                # the position of each URL in last night's rows (its first there), else null
                pos = pc.index_in(hashes, value_set=known)
                found = pc.is_valid(pos)
                at = pc.filter(pos, found)
                indices = pa.array(range(first, first + len(hashes)), pa.int64())
                table = pa.table(
                    [
                        pc.filter(indices, found),
                        prev.column("etag").take(at),
                        prev.column("last_modified").take(at),
                        prev.column("prev_index").take(at),
                    ],
                    schema=_PLAN_SCHEMA,
                )
                writer.write_table(table, row_group_size=_GROUP_ROWS)
                rows += table.num_rows
        storage.put_file(tmp, url)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("job %s: %d URLs asked conditionally (from %s)", job_id, rows, prev_job_id)
    return rows


def _input_hashes(storage: Storage, input_url: str) -> Iterator[tuple[pa.Array, int]]:
    """The staged input's URLs as hashes, in batches, with the input index of each first."""
    hashes: list[int] = []
    first = 0
    with storage.open(input_url, "rb") as fh:
        for line in fh:
            hashes.append(hash(orjson.loads(line).get("url")))
            if len(hashes) == _INPUT_BATCH:
                yield pa.array(hashes, pa.int64()), first
                first += len(hashes)
                hashes = []
    if hashes:
        yield pa.array(hashes, pa.int64()), first


def _prev_batches(storage: Storage, prev_parts: list[str]) -> Iterator[pa.RecordBatch]:
    cols = ["url", "input_index", "status", "etag", "last_modified"]
    for batch in iter_part_batches(storage, prev_parts, cols, batch_rows=_INPUT_BATCH):
        usable = pc.and_(
            pc.equal(batch.column("status"), "ok"),
            pc.or_(pc.is_valid(batch.column("etag")), pc.is_valid(batch.column("last_modified"))),
        )
        kept = batch.filter(usable)
        if kept.num_rows:
            hashes = pa.array([hash(u) for u in kept.column("url").to_pylist()], pa.int64())
            yield pa.RecordBatch.from_arrays(
                [hashes, *(kept.column(c) for c in ("input_index", "etag", "last_modified"))],
                schema=_PREV_SCHEMA,
            )


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


class Conditional:
    """One conditional job's plan and previous rows, in one process (``JobRuntime`` holds it).

    Thread-safe: chunks read their ranges, and 304s their previous rows, from worker
    threads."""

    def __init__(
        self,
        storage: Storage,
        job_id: str,
        prev_job_id: str,
        *,
        plan: Callable[[str], object] | None = None,
    ) -> None:
        """``plan(input_url)`` writes the plan when a chunk finds none (see ``of_job``)."""
        self.storage = storage
        self.job_id = job_id
        self.prev_job_id = prev_job_id
        self._plan = plan
        self._lock = threading.Lock()
        self._spans: list[RowSpan] | None = None
        self._starts: list[int] = []

    @classmethod
    def of_job(cls, storage: Storage, store: Store, job_id: str, spec: JobSpec) -> Conditional:
        """A conditional job's ``Conditional`` (``previous_job_id(spec)`` is not None)."""
        prev = previous_job_id(spec)
        assert prev is not None, "not a conditional job"
        return cls(storage, job_id, prev, plan=partial(prepare_job, storage, store, job_id, spec))

    def for_chunk(self, input_url: str, first: int, count: int) -> ChunkAsks:
        """Validators of the URLs ``[first, first + count)`` of this job that have some
        (blocking: reads the plan's row groups of that range)."""
        url = plan_url(self.storage, self.job_id)
        if not self.storage.exists(url) and self._plan is not None:
            self._plan(input_url)  # plan_job writes it; a chunk run some other way
        out = ChunkAsks(self)
        last = first + count - 1
        with open_part(self.storage, url) as pf:
            meta = pf.metadata
            for rg in range(meta.num_row_groups):
                stats = meta.row_group(rg).column(0).statistics
                if stats is not None and stats.has_min_max and not stats.min <= last:
                    continue
                if stats is not None and stats.has_min_max and stats.max < first:
                    continue
                table = pf.read_row_group(rg)
                for i, etag, modified, prev in zip(
                    *(table.column(c).to_pylist() for c in _PLAN_SCHEMA.names), strict=True
                ):
                    if first <= i <= last:
                        out[i] = Validators(etag, modified, prev)
        return out

    def span_of(self, prev_index: int) -> RowSpan | None:
        """Where the previous job's row ``prev_index`` is (its footers, read once)."""
        with self._lock:
            if self._spans is None:
                self._spans = row_spans(self.storage, part_urls(self.storage, self.prev_job_id))
                self._starts = [s.first for s in self._spans]
        k = bisect.bisect_right(self._starts, prev_index) - 1
        if k < 0 or prev_index > self._spans[k].last:
            return None
        return self._spans[k]


class ChunkAsks(dict[int, Validators]):
    """One chunk's validators by input index, and the previous rows its 304s carry.

    A 304 reads the previous row group holding its row once for the chunk, keeping the rows
    of every URL of this chunk in it (not the group): an input in last night's order reads
    each previous row group about once; one in another order scatters a chunk's rows over
    many groups (see the module docstring for what that costs)."""

    def __init__(self, cond: Conditional) -> None:
        super().__init__()
        self.cond = cond
        self._lock = threading.Lock()
        self._read: set[RowSpan] = set()
        self._rows: dict[int, tuple[Any, ...]] = {}

    def previous_row(self, prev_index: int, url: str) -> dict[str, Any] | None:
        """The carried columns of the previous job's row ``prev_index`` (decoded as
        ``rows_table`` takes them), or None when that row is gone or is not ``url``'s (the
        plan matched URLs by hash). Blocking; once per row."""
        with self._lock:
            if prev_index not in self._rows:
                try:
                    self._load(prev_index)
                except FileNotFoundError:  # removed by retention since the plan was made
                    return None
            raw = self._rows.pop(prev_index, None)
        if raw is None or raw[1] != url:
            return None
        row = dict(zip(CARRIED, raw[2:], strict=True))
        out: dict[str, Any] = {"content_hash": row["content_hash"], "data": None}
        for col, key in _JSON_CARRIED:
            if row[col] is not None:
                out[key] = orjson.loads(row[col])
        for key in ("html", "markdown", "text"):
            if row[key] is not None:
                out[key] = row[key]
        return out

    def _load(self, prev_index: int) -> None:
        span = self.cond.span_of(prev_index)
        if span is None or span in self._read:
            return
        self._read.add(span)
        mine = [v.prev_index for v in self.values() if span.first <= v.prev_index <= span.last]
        cols = ["input_index", "url", *CARRIED]
        table = read_span(self.cond.storage, span, cols)
        table = table.filter(pc.is_in(table.column("input_index"), pa.array(mine, pa.int64())))
        for values in zip(*(table.column(c).to_pylist() for c in cols), strict=True):
            self._rows[values[0]] = values
