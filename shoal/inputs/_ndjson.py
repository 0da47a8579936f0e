"""NDJSON URL files: a URL string, a bare URL, or an object with ``url`` per line."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

import orjson

from ._records import Writer

#: Longest line (or CSV record line) read; a longer one is an invalid record.
MAX_LINE = 1 << 20
BOM = b"\xef\xbb\xbf"


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


def _ndjson_record(w: Writer, s: bytes) -> None:
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


def normalize_ndjson(reader: IO[bytes], w: Writer) -> None:
    line_no = 0
    for raw, too_long in _ndjson_lines(reader):
        line_no += 1
        w.line_no = line_no
        if line_no > w.max_file_lines:
            w.at_line(line_no)
        if too_long:
            w.bad(None, f"line longer than {MAX_LINE} bytes")
            continue
        s = raw.strip()
        if line_no == 1 and s.startswith(BOM):
            s = s[len(BOM) :].strip()
        if s:  # a blank line is not a record
            _ndjson_record(w, s)
