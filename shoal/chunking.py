"""Cutting a job's staged input into chunks (planning them), and reading one chunk back.

The staged input is NDJSON, one item per line in input order. Planning streams it once,
counting lines and remembering byte offsets, so a million-URL input is never held whole and a
chunk task can seek straight to its lines. The plan is deterministic: a resumed run plans the
same chunks, so cached chunks line up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from shoal.settings import Settings
from shoal.storage import Storage

_BLOCK = 1 << 20
#: chunks per slot a job is cut into (see ``chunk_size``): 1 — a 20,000-URL job as 4 chunks
#: ran 4,760-5,030 / 4,320-4,569 pages/s at C=16 / 256 against 4,408-4,558 / 4,209-4,499 as 8
#: (``bench/throughput.py --skip-baselines``, alternating, 2026-12-02), and as 16 it was slower
#: still; each task run costs ~35 ms of Prefect server and flow CPU, and a chunk its own start
#: and tail. The chunks of one worker process share its requests in flight, so a process whose
#: other chunk finished gives all its slots to the one left; jobs over ``chunk_max_urls`` per
#: slot run in several rounds anyway. The cost: in a small job, a slow stretch of the input
#: (one slow host, sorted together) is one chunk, served by one process's share of the
#: concurrency while the other process may have nothing left to do.
ROUNDS_PER_SLOT = 1


@dataclass(frozen=True)
class Chunk:
    """Lines ``[first, first + count)`` of the input, starting at byte ``offset``."""

    index: int
    offset: int
    count: int
    first: int


def _line_offsets(storage: Storage, url: str, every: int) -> tuple[list[int], int]:
    """Byte offsets of lines 0, every, 2*every, ... and the total line count."""
    offsets = [0]
    lines = 0
    pos = 0
    last_byte = b"\n"
    with storage.open(url, "rb") as fh:
        while block := fh.read(_BLOCK):
            start = 0
            while (nl := block.find(b"\n", start)) != -1:
                lines += 1
                start = nl + 1
                if lines % every == 0:
                    offsets.append(pos + start)
            pos += len(block)
            last_byte = block[-1:]
    if last_byte != b"\n":  # a last line without newline still counts
        lines += 1
    if offsets and offsets[-1] >= pos and len(offsets) > 1:
        offsets.pop()
    return offsets, lines


def chunk_size(total: int, settings: Settings, slots: int = 1) -> int:
    """URLs per chunk for a job of ``total`` URLs run ``slots`` chunks at a time.

    About ``ROUNDS_PER_SLOT`` chunks per slot: a chunk task run costs tens of milliseconds of
    Prefect server and flow CPU (measured ~75 ms in all), so a job wants few, big chunks. Big
    enough to stay within ``max_chunks_per_job``, but never below ``chunk_min_urls`` or above
    ``chunk_max_urls`` (which wins); a multiple of ``chunk_min_urls``."""
    base = max(1, settings.chunk_min_urls)
    want = max(
        math.ceil(total / max(1, ROUNDS_PER_SLOT * slots)),
        math.ceil(total / max(1, settings.max_chunks_per_job)),
    )
    want = min(max(want, base), max(settings.chunk_max_urls, base))
    return math.ceil(want / base) * base


def plan_chunks(
    storage: Storage, url: str, settings: Settings, *, slots: int = 1, size: int | None = None
) -> tuple[list[Chunk], int]:
    """Count the input and cut it into chunks of ``size`` URLs (default: ``chunk_size``).

    A resumed job passes the ``size`` it was first planned with, so its chunks line up with the
    ones already finished whatever the settings say now."""
    # offsets every ``size`` lines, or every chunk_min_urls when the size needs the total first
    every = size or max(1, settings.chunk_min_urls)
    offsets, total = _line_offsets(storage, url, every)
    size = size or chunk_size(total, settings, slots)
    chunks = []
    for index, first in enumerate(range(0, total, size)):
        chunks.append(
            Chunk(
                index=index,
                offset=offsets[first // every],
                count=min(size, total - first),
                first=first,
            )
        )
    return chunks, total


def read_chunk(storage: Storage, url: str, chunk: Chunk) -> list[dict[str, Any]]:
    """The items of one chunk, each with its ``input_index``."""
    items: list[dict[str, Any]] = []
    local = storage.local_path(url)
    # a plain file's C readline, not fsspec's Python wrapper around it (3-4 % of a chunk's CPU)
    with open(local, "rb") if local is not None else storage.open(url, "rb") as fh:
        fh.seek(chunk.offset)
        for i in range(chunk.count):
            line = fh.readline()
            if not line:
                break
            item = orjson.loads(line)
            item["i"] = chunk.first + i
            items.append(item)
    return items
