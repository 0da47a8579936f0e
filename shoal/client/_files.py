"""The local files ``Client`` and ``AsyncClient`` read and write, alike in both: an upload read
a block at a time, a download written whole, then renamed into place (blocking reads and writes
of 1 MiB, brief for a local disk, in the asyncio client too)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

BLOCK = 1 << 20


def blocks(stream: IO[bytes]) -> Iterator[bytes]:
    while block := stream.read(BLOCK):
        yield block


def file_blocks(path: Path) -> Iterator[bytes]:
    """The file at ``path``, opened anew (a retried upload reads it again)."""
    with path.open("rb") as f:
        yield from blocks(f)


@contextmanager
def replacing(path: Path) -> Iterator[IO[bytes]]:
    """A file to write that becomes ``path`` once written whole (nothing is left on an error)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("wb") as f:
            yield f
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
