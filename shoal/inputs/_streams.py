"""Byte streams for reading a URL file once: a bounded pipe from the HTTP receiver, a byte
counter with a cap (received bytes, and bytes after decompression, in size and ratio: a gzip
bomb stops here; and a stop check: an abandoned upload stops here), and a reader that puts back
bytes already peeked at."""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable
from typing import IO, Any

from shoal.errors import TooLarge


class PipeAborted(Exception):
    """The producer of a :class:`Pipe` gave up (the request failed or was refused)."""


class Pipe(io.RawIOBase):
    """A bounded byte pipe from a producer (an event loop receiving a request) to a reader
    thread (the normalizer). The producer never blocks: ``try_put`` says False while
    ``maxsize`` chunks are waiting (wait a moment and try again), and ``closed_by_reader``
    tells it the reader stopped (finished or failed), so it stops sending."""

    def __init__(self, maxsize: int = 16) -> None:
        super().__init__()
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize)
        self._buf = memoryview(b"")
        self._eof = False
        self._aborted = threading.Event()
        self._reader_stopped = threading.Event()

    # producer side
    def try_put(self, chunk: bytes | None) -> bool:
        """Queue ``chunk`` (``None``: end of data) unless the pipe is full."""
        try:
            self._q.put_nowait(chunk)
            return True
        except queue.Full:
            return False

    def abort(self) -> None:
        """The producer gives up: the reader's next read raises ``PipeAborted``."""
        self._aborted.set()

    @property
    def aborted(self) -> bool:
        """The producer gave up (a reader decompressing what it already has asks this)."""
        return self._aborted.is_set()

    @property
    def closed_by_reader(self) -> bool:
        return self._reader_stopped.is_set()

    # reader side
    def stop_reading(self) -> None:
        self._reader_stopped.set()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            if self._eof:
                return 0
            try:
                chunk = self._q.get(timeout=0.1)
            except queue.Empty:
                if self._aborted.is_set():
                    raise PipeAborted("the upload was abandoned") from None
                continue
            if chunk is None:
                self._eof = True
                return 0
            self._buf = memoryview(chunk)
        if self._aborted.is_set():
            raise PipeAborted("the upload was abandoned")
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


#: decompressed bytes always allowed, whatever the ratio (small files compress very well too)
RATIO_FLOOR = 16 << 20


class Counted(io.RawIOBase):
    """Reads ``src`` and raises ``TooLarge`` once more than ``limit`` bytes came through, or,
    reading what ``inflated_from`` decompresses, once past ``RATIO_FLOOR`` bytes that are more
    than ``ratio`` times the compressed bytes read. Each read first asks ``stop`` (when given)
    and raises ``PipeAborted`` when it says so: the caller gave up (the client left)."""

    def __init__(
        self,
        src: IO[bytes],
        limit: int | None,
        what: str,
        *,
        inflated_from: Counted | None = None,
        ratio: int | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__()
        self._src = src
        self.limit = limit
        self.count = 0
        self._what = what
        self._inflated_from = inflated_from
        self._ratio = ratio
        self._stop = stop

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._stop is not None and self._stop():
            raise PipeAborted("the upload was abandoned")
        data = self._src.read(len(b))
        n = len(data)
        self.count += n
        if self.limit is not None and self.count > self.limit:
            raise TooLarge(f"{self._what} more than {self.limit} bytes")
        packed = self._inflated_from
        if (
            packed is not None
            and self._ratio is not None
            and self.count > RATIO_FLOOR
            and self.count > self._ratio * max(packed.count, 1)
        ):
            raise TooLarge(
                f"{self._what} more than {self._ratio} times its compressed size "
                f"({self.count} bytes from {packed.count} read)"
            )
        b[:n] = data
        return n


class Prefixed(io.RawIOBase):
    """``prefix`` then the rest of ``src``: lets us look at the start of a stream."""

    def __init__(self, prefix: bytes, src: IO[bytes]) -> None:
        super().__init__()
        self._prefix = memoryview(prefix)
        self._src = src

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._prefix:
            n = min(len(b), len(self._prefix))
            b[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._src.read(len(b))
        b[: len(data)] = data
        return len(data)


def read_exactly(src: IO[bytes], n: int) -> bytes:
    out = b""
    while len(out) < n:
        data = src.read(n - len(out))
        if not data:
            break
        out += data
    return out
