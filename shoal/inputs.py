"""URL files (uploads, S3 input) into the staged input format, streamed in bounded memory.

A URL file is NDJSON (one URL string, a bare URL, or an object with ``url``, ``meta`` and any
per-URL override per line) or CSV (a header with a ``url`` column; ``meta`` and columns named
like the ``defaults`` fields), optionally gzip-compressed. :func:`normalize` reads it once and
writes the staged format, one JSON object per record::

    {"url": "...", "meta": ..., "o": {per-URL overrides}}      a usable URL
    {"url": "<as given or "">", "meta": ..., "error": "why"}   an invalid record

Exactly one staged line per record, so a record's position is its ``input_index``; an invalid
record becomes an errored result (``invalid_url``) when a job runs over it. Blank lines are
skipped: they are not records (but they do count in the file line numbers errors report).

Records are checked with the same rules as inline URLs (``UrlItem``, ``valid_http_url``,
``stage_record``); plain URL lines take a fast path without pydantic. Whole-file problems (no
``url`` column, an unknown CSV column, corrupt gzip, no records) raise ``InputError``; more bytes
than allowed (received, or after decompression: a gzip bomb) or more records than ``max_lines``
raise ``TooLarge``.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import queue
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Literal

import orjson
from pydantic import ValidationError

from shoal.contract import OVERRIDABLE, FieldType, UrlItem
from shoal.errors import FieldError, InputError, TooLarge, field_errors
from shoal.jobs import add_fields, output_fields, stage_record
from shoal.settings import Settings
from shoal.storage import Storage

InputFormat = Literal["ndjson", "csv"]

#: Longest line (or CSV record line) read; a longer one is an invalid record.
MAX_LINE = 1 << 20
#: Line errors kept in the stats (all are counted).
MAX_ERRORS = 100
_BLOCK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
_PLAIN_KEYS = frozenset({"url", "meta"})
_CSV_COLUMNS = frozenset({"url", "meta"}) | OVERRIDABLE
_NDJSON_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonl",
        "application/jsonlines",
        "application/x-jsonlines",
        "application/json-lines",
    }
)
_CSV_TYPES = frozenset({"text/csv", "application/csv", "text/x-csv", "application/x-csv"})
_GZIP_TYPES = frozenset({"application/gzip", "application/x-gzip"})
_EXTENSIONS: dict[str, InputFormat] = {
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
    ".txt": "ndjson",
    ".csv": "csv",
}


@dataclass
class InputStats:
    """What :func:`normalize` found: ``lines`` records staged, ``urls_valid`` of them usable,
    the first ``MAX_ERRORS`` line errors, and the typed output fields per-URL overrides add."""

    format: InputFormat
    gzip: bool = False
    size_bytes: int = 0
    lines: int = 0
    urls_valid: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    fields: dict[str, FieldType] = field(default_factory=dict)

    @property
    def errored(self) -> int:
        return self.lines - self.urls_valid


def media_format(content_type: str | None) -> InputFormat | None | Literal["auto"]:
    """The format a media type names: ``ndjson``, ``csv``, ``"auto"`` (gzip, octet-stream or
    plain text: tell from the content) or ``None`` (not a URL file type)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media in _NDJSON_TYPES:
        return "ndjson"
    if media in _CSV_TYPES:
        return "csv"
    if media in _GZIP_TYPES or media in ("application/octet-stream", "text/plain", ""):
        return "auto"
    return None


def name_format(name: str | None) -> InputFormat | None:
    """The format a file name or object key tells by its extension (``.csv.gz`` is csv)."""
    base = (name or "").lower().rsplit("/", 1)[-1]
    base = base.removesuffix(".gz").removesuffix(".gzip")
    return _EXTENSIONS.get(os.path.splitext(base)[1])


# --- readers ------------------------------------------------------------------------------


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


class _Counted(io.RawIOBase):
    """Reads ``src`` and raises ``TooLarge`` once more than ``limit`` bytes came through."""

    def __init__(self, src: IO[bytes], limit: int | None, what: str) -> None:
        super().__init__()
        self._src = src
        self.limit = limit
        self.count = 0
        self._what = what

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._src.read(len(b))
        n = len(data)
        self.count += n
        if self.limit is not None and self.count > self.limit:
            raise TooLarge(f"{self._what} more than {self.limit} bytes")
        b[:n] = data
        return n


class _Prefixed(io.RawIOBase):
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


def _read_exactly(src: IO[bytes], n: int) -> bytes:
    out = b""
    while len(out) < n:
        data = src.read(n - len(out))
        if not data:
            break
        out += data
    return out


# --- records ------------------------------------------------------------------------------


def _pydantic_msg(exc: ValidationError) -> str:
    return "; ".join(f"{e.loc}: {e.msg}" for e in field_errors(exc.errors(), root="record"))


class _Writer:
    """Stages records: one JSON line each, checked like inline URLs; keeps the stats."""

    def __init__(
        self, out: IO[bytes], stats: InputStats, settings: Settings, max_lines: int | None
    ) -> None:
        self.out = out
        self.stats = stats
        self.settings = settings
        self.max_lines = max_lines
        self.line_no = 0  # the file line the current record starts on (1-based)
        self._buf: list[bytes] = []

    def _add(self, line: bytes) -> None:
        self.stats.lines += 1
        if self.max_lines is not None and self.stats.lines > self.max_lines:
            raise TooLarge(f"more than {self.max_lines} URLs, the most a job may hold")
        self._buf.append(line)
        if len(self._buf) >= 4096:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            self.out.write(b"".join(self._buf))
            self._buf.clear()

    def ok(self, url: str, meta: Any = None, over: dict[str, Any] | None = None) -> None:
        problems: list[FieldError] = []
        line = stage_record(url, meta, over or {}, self.settings, problems)
        if line is None:
            # a bad URL reads as the reason alone; an option or meta names itself
            why = "; ".join(p.msg if p.loc == ".url" else f"{p.loc[1:]}: {p.msg}" for p in problems)
            self.bad(url, why, None if problems[0].loc == ".meta" else meta)
            return
        self.stats.urls_valid += 1
        self._add(line)

    def bad(self, url: Any, why: str, meta: Any = None) -> None:
        if not isinstance(url, str):
            url = "" if url is None else orjson.dumps(url).decode()
        url = url[:2048]
        try:
            line = orjson.dumps({"url": url, "meta": meta, "error": why})
        except orjson.JSONEncodeError:
            line = orjson.dumps({"url": url, "meta": None, "error": why})
        if len(self.stats.errors) < MAX_ERRORS:
            self.stats.errors.append({"line": self.line_no, "msg": why})
        self._add(line + b"\n")

    def obj(self, obj: Any) -> None:
        """One record given as an object (an NDJSON object, a CSV row as a dict)."""
        if not isinstance(obj, dict):
            self.bad(None, "not a URL string or an object with `url`")
            return
        url, meta = obj.get("url"), obj.get("meta")
        if obj.keys() <= _PLAIN_KEYS:  # the fast path: no overrides, no pydantic
            if url is None:
                self.bad(None, "url: missing", meta)
            elif not isinstance(url, str):
                self.bad(url, "url: not a string", meta)
            else:
                self.ok(url, meta)
            return
        try:
            item = UrlItem.model_validate(obj)
        except ValidationError as exc:
            self.bad(url, _pydantic_msg(exc), meta)
            return
        over = item.overrides()
        before = self.stats.urls_valid
        self.ok(item.url, item.meta, over)
        if self.stats.urls_valid > before and (over.get("extract") or over.get("selectors")):
            add_fields(self.stats.fields, output_fields([over]))


# --- NDJSON -------------------------------------------------------------------------------


def _ndjson_lines(reader: IO[bytes]) -> Iterator[tuple[bytes, bool]]:
    """(line, too_long) for each physical line, read ``MAX_LINE`` bytes at most at a time."""
    while True:
        line = reader.readline(MAX_LINE)
        if not line:
            return
        if len(line) >= MAX_LINE and not line.endswith(b"\n"):
            while (rest := reader.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                pass
            yield b"", True
            continue
        yield line, False


def _ndjson_record(w: _Writer, s: bytes) -> None:
    first = s[0]
    if first == 0x22 or first == 0x7B:  # '"' a JSON string, '{' an object
        try:
            value = orjson.loads(s)
        except orjson.JSONDecodeError as exc:
            w.bad(s.decode("utf-8", "replace"), f"not valid JSON: {exc}")
            return
        if isinstance(value, str):
            w.ok(value)
        else:
            w.obj(value)
        return
    if first == 0x5B:  # '['
        w.bad(s.decode("utf-8", "replace"), "not a URL string or an object with `url`")
        return
    try:  # a bare URL, as in a plain list of URLs
        text = s.decode("utf-8")
    except UnicodeDecodeError:
        w.bad(s.decode("utf-8", "replace"), "not valid UTF-8")
        return
    w.ok(text)


def _normalize_ndjson(reader: IO[bytes], w: _Writer) -> None:
    line_no = 0
    for raw, too_long in _ndjson_lines(reader):
        line_no += 1
        w.line_no = line_no
        if too_long:
            w.bad(None, f"line longer than {MAX_LINE} bytes")
            continue
        s = raw.strip()
        if line_no == 1 and s.startswith(_BOM):
            s = s[len(_BOM) :].strip()
        if s:  # a blank line is not a record
            _ndjson_record(w, s)


# --- CSV ----------------------------------------------------------------------------------

_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_JSON_COLUMNS = frozenset({"extract", "selectors", "headers"})
_JSON_START = frozenset('{["-0123456789')


def _csv_value(column: str, cell: str) -> Any:
    """A CSV cell as the type its override field takes (raises ValueError with why)."""
    if column in _JSON_COLUMNS:
        try:
            value = orjson.loads(cell)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{column}: not a JSON object: {exc}") from None
        return value
    if column == "formats":
        if cell.startswith("["):
            try:
                return orjson.loads(cell)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"formats: not a JSON list: {exc}") from None
        return [f.strip() for f in cell.replace(";", ",").split(",") if f.strip()]
    if column in ("render", "respect_robots"):
        flag = _BOOLS.get(cell.lower())
        if flag is None:
            raise ValueError(f"{column}: not a boolean (true/false/1/0)")
        return flag
    if column == "meta":
        if cell[0] not in _JSON_START and cell not in ("true", "false", "null"):
            return cell  # plain text (not worth a failed JSON parse per row)
        try:
            return orjson.loads(cell)
        except orjson.JSONDecodeError:
            return cell
    return cell  # proxy_type, numbers: pydantic converts and checks them


def _csv_header(row: list[str], loc: str) -> list[str]:
    names = [c.strip().lower() for c in row]
    if "url" not in names:
        raise InputError(
            "the CSV file has no `url` column",
            errors=[FieldError(loc, "the CSV header has no `url` column")],
        )
    unknown = [n for n in names if n not in _CSV_COLUMNS]
    if unknown:
        allowed = ", ".join(["url", "meta", *sorted(OVERRIDABLE)])
        raise InputError(
            f"unknown CSV column {unknown[0]!r}",
            errors=[FieldError(loc, f"unknown column {unknown[0]!r}; columns may be {allowed}")],
        )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(
            f"duplicate CSV column {dupes[0]!r}",
            errors=[FieldError(loc, f"duplicate column {dupes[0]!r}")],
        )
    return names


def _csv_record(w: _Writer, names: list[str], url_i: int, cells: list[str], bad_text: bool) -> None:
    url = cells[url_i].strip() if len(cells) > url_i else ""
    if len(cells) > len(names):
        w.bad(url, f"the row has {len(cells)} cells, the header {len(names)}")
        return
    if bad_text:
        w.bad(url, "not valid UTF-8")
        return
    obj: dict[str, Any] = {}
    for name, cell in zip(names, cells, strict=False):
        cell = cell.strip()
        if not cell:
            continue
        try:
            obj[name] = cell if name == "url" else _csv_value(name, cell)
        except ValueError as exc:
            w.bad(url, str(exc), obj.get("meta"))
            return
    if "url" not in obj:
        w.bad("", "url: missing", obj.get("meta"))
        return
    w.obj(obj)


def _normalize_csv(reader: IO[bytes], w: _Writer, loc: str) -> None:
    text = io.TextIOWrapper(reader, encoding="utf-8-sig", errors="replace", newline="")
    long_lines: set[int] = set()
    bad_lines: set[int] = set()
    physical = 0

    def lines() -> Iterator[str]:
        nonlocal physical
        while True:
            line = text.readline(MAX_LINE)
            if not line:
                return
            physical += 1
            if len(line) >= MAX_LINE and not line.endswith(("\n", "\r")):
                while (rest := text.readline(MAX_LINE)) and not rest.endswith(("\n", "\r")):
                    pass
                long_lines.add(physical)
                yield "\n"
                continue
            if "\ufffd" in line:
                bad_lines.add(physical)
            yield line

    rows = csv.reader(lines(), strict=False)
    names: list[str] | None = None
    url_i = 0
    end = 0
    while True:
        try:
            cells = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:
            w.line_no, end = end + 1, physical
            w.bad(None, f"not valid CSV: {exc}")
            continue
        start, end = end + 1, physical
        w.line_no = start
        span = range(start, end + 1)
        if any(n in long_lines for n in span):
            w.bad(None, f"line longer than {MAX_LINE} characters")
            continue
        if not any(c.strip() for c in cells):
            continue  # a blank line (or a row of empty cells) is not a record
        if names is None:
            names = _csv_header(cells, loc)
            url_i = names.index("url")
            continue
        _csv_record(w, names, url_i, cells, any(n in bad_lines for n in span))
    if names is None:
        raise InputError(
            "the file is empty", errors=[FieldError(loc, "the CSV file has no header row")]
        )


# --- the whole file -----------------------------------------------------------------------


def _sniff(head: bytes) -> InputFormat | None:
    for raw in head.splitlines():
        s = raw.strip().removeprefix(_BOM).strip()
        if not s:
            continue
        if s[:1] in (b"{", b'"') or s.lower().startswith((b"http://", b"https://")):
            return "ndjson"
        cells = next(csv.reader([s.decode("utf-8", "replace")]), [])
        if "url" in (c.strip().lower() for c in cells):
            return "csv"
        return None
    return None


def normalize(
    src: IO[bytes],
    out: IO[bytes],
    *,
    fmt: InputFormat | Literal["auto"],
    settings: Settings,
    max_bytes: int | None,
    max_lines: int | None = None,
    loc: str = "file",
) -> InputStats:
    """Read a URL file from ``src`` (plain or gzip: the magic bytes decide) and write the
    staged format to ``out``. ``fmt="auto"`` tells NDJSON from CSV by the first line.

    ``max_bytes`` caps both the bytes read and the bytes after decompression. Raises
    ``InputError`` (located at ``loc``) for whole-file problems and ``TooLarge``."""
    raw = _Counted(src, max_bytes, "the file is")
    magic = _read_exactly(raw, 2)  # type: ignore[arg-type]
    gz = magic == _GZIP_MAGIC
    stream: IO[bytes] = io.BufferedReader(_Prefixed(magic, raw), _BLOCK)  # type: ignore[arg-type]
    if gz:
        unzipped = gzip.GzipFile(fileobj=stream, mode="rb")
        stream = io.BufferedReader(
            _Counted(unzipped, max_bytes, "the file decompresses to"),  # type: ignore[arg-type]
            _BLOCK,
        )
    try:
        if fmt == "auto":
            head = _read_exactly(stream, 64 * 1024)
            stream = io.BufferedReader(_Prefixed(head, stream), _BLOCK)  # type: ignore[arg-type]
            sniffed = _sniff(head)
            if sniffed is None:
                if not head.strip():
                    raise InputError(
                        "the file is empty", errors=[FieldError(loc, "the file holds no URLs")]
                    )
                raise InputError(
                    "unknown file format",
                    errors=[
                        FieldError(
                            loc,
                            "cannot tell the format: give NDJSON lines or a CSV file with a "
                            "`url` column (name it .ndjson/.csv or send its content type)",
                        )
                    ],
                )
            fmt = sniffed
        stats = InputStats(format=fmt, gzip=gz)
        writer = _Writer(out, stats, settings, max_lines)
        if fmt == "csv":
            _normalize_csv(stream, writer, loc)
        else:
            _normalize_ndjson(stream, writer)
        writer.flush()
    except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise InputError(
            "not a valid gzip file", errors=[FieldError(loc, f"not a valid gzip file: {exc}")]
        ) from exc
    stats.size_bytes = raw.count
    if stats.lines == 0:
        raise InputError("the file is empty", errors=[FieldError(loc, "the file holds no URLs")])
    return stats


def normalize_to(
    src: IO[bytes],
    storage: Storage,
    dest: str,
    **kw: Any,
) -> InputStats:
    """:func:`normalize` into ``dest`` on ``storage``, through
    :meth:`~shoal.storage.Storage.atomic_writer`: readers never see a partial file, and on any
    error nothing is left at ``dest``."""
    with storage.atomic_writer(dest) as out:
        return normalize(src, out, **kw)
