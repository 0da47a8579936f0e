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
``url`` column, an unknown CSV column, no records) raise ``InputError``, corrupt gzip
``MalformedBody``; more bytes than allowed (received, or after decompression: a gzip bomb, by
size and by ratio), more lines than ``max_upload_lines`` or more records than ``max_lines``
raise ``TooLarge``. A caller that gives up (the client left) stops the work through ``stop``.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import zlib
from collections.abc import Callable
from typing import IO, Any, Literal

from shoal.errors import FieldError, InputError, MalformedBody
from shoal.settings import Settings
from shoal.storage import Storage

from ._csv import normalize_csv
from ._ndjson import BOM, MAX_LINE, normalize_ndjson
from ._records import MAX_ERRORS, InputFormat, InputStats, Writer
from ._streams import Counted, Pipe, PipeAborted, Prefixed, read_exactly

__all__ = [
    "MAX_ERRORS",
    "MAX_LINE",
    "InputFormat",
    "InputStats",
    "Pipe",
    "PipeAborted",
    "media_format",
    "name_format",
    "normalize",
    "normalize_to",
]

_BLOCK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
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


# --- the whole file -----------------------------------------------------------------------


def _sniff(head: bytes) -> InputFormat | None:
    for raw in head.splitlines():
        s = raw.strip().removeprefix(BOM).strip()
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
    gzipped: bool = False,
    stop: Callable[[], bool] | None = None,
) -> InputStats:
    """Read a URL file from ``src`` (plain or gzip: the magic bytes decide; ``gzipped``: it
    must be gzip, as a ``Content-Encoding: gzip`` says) and write the staged format to ``out``.
    ``fmt="auto"`` tells NDJSON from CSV by the first line.

    ``max_bytes`` caps both the bytes read and the bytes after decompression, which may also be
    at most ``settings.max_upload_ratio`` times the bytes read (past 16 MiB); the file may have
    ``settings.max_upload_lines`` lines and ``max_lines`` records. Raises ``MalformedBody`` for
    data that is not the gzip it claims to be, ``InputError`` (located at ``loc``) for other
    whole-file problems, ``TooLarge``, and ``PipeAborted`` as soon as ``stop()`` is true."""
    raw = Counted(src, max_bytes, "the file is", stop=stop)
    magic = read_exactly(raw, 2)  # type: ignore[arg-type]
    gz = magic == _GZIP_MAGIC
    if gzipped and not gz and magic:
        raise MalformedBody(
            "the body is not gzip data",
            errors=[FieldError(loc, "sent with Content-Encoding: gzip, but it is not gzip data")],
        )
    stream: IO[bytes] = io.BufferedReader(Prefixed(magic, raw), _BLOCK)  # type: ignore[arg-type]
    if gz:
        unzipped = gzip.GzipFile(fileobj=stream, mode="rb")
        inflated = Counted(
            unzipped,  # type: ignore[arg-type]
            max_bytes,
            "the file decompresses to",
            inflated_from=raw,
            ratio=settings.max_upload_ratio,
            stop=stop,
        )
        stream = io.BufferedReader(inflated, _BLOCK)
    try:
        if fmt == "auto":
            head = read_exactly(stream, 64 * 1024)
            stream = io.BufferedReader(Prefixed(head, stream), _BLOCK)  # type: ignore[arg-type]
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
        writer = Writer(out, stats, settings, max_lines)
        if fmt == "csv":
            normalize_csv(stream, writer, loc)
        else:
            normalize_ndjson(stream, writer)
        writer.flush()
    except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise MalformedBody(
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
