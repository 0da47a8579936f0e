"""NDJSON URL files: a URL string, a bare URL, or an object with ``url`` per line."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

import orjson

from ._records import Writer

#: Longest line (or CSV record line) read; a longer one is an invalid record.
MAX_LINE = 1 << 20
BOM = b"\xef\xbb\xbf"


def _blank_run(reader: IO[bytes], most: int) -> int:
    """Skip the blank lines (``\\n``, ``\\r\\n``) ahead of ``reader``; how many. Counted in C
    over the buffer, not one Python step per line: a file of a billion newlines costs what
    its size does until the line limit stops it. Stops past ``most``."""
    peek = getattr(reader, "peek", None)
    skipped = 0
    while peek is not None:
        buf = peek(1 << 16)
        run = buf[: len(buf) - len(buf.lstrip(b"\r\n"))]
        end = run.rfind(b"\n") + 1  # a lone \r after the last \n belongs to the next line
        if not end:
            break
        skipped += run.count(b"\n", 0, end)
        reader.read(end)
        if end < len(buf) or skipped > most:
            break
    return skipped


def _ndjson_lines(reader: IO[bytes], max_lines: int) -> Iterator[tuple[bytes, bool, int]]:
    """(line, too_long, physical lines it stands for) for each line, read ``MAX_LINE`` bytes at
    most at a time; a run of blank lines comes as one blank line standing for all of them."""
    while True:
        line = reader.readline(MAX_LINE)
        if not line:
            return
        if len(line) >= MAX_LINE and not line.endswith(b"\n"):
            while (rest := reader.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                pass
            yield b"", True, 1
            continue
        if line in (b"\n", b"\r\n"):
            yield b"", False, 1 + _blank_run(reader, max_lines)
            continue
        yield line, False, 1


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
    for raw, too_long, lines in _ndjson_lines(reader, w.max_file_lines):
        line_no += lines
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
