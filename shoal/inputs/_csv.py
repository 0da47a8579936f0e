"""CSV URL files: a header with a ``url`` column, ``meta``, and columns named like the
``defaults`` fields (per-URL overrides)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import IO, Any

import orjson

from shoal.contract import OVERRIDABLE
from shoal.errors import FieldError, InputError

from ._ndjson import MAX_LINE
from ._records import Writer

_CSV_COLUMNS = frozenset({"url", "meta"}) | OVERRIDABLE

_BLANK = frozenset({"\n", "\r\n", "\r"})
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
    if column in ("formats", "block_resources"):
        if cell.startswith("["):
            try:
                return orjson.loads(cell)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{column}: not a JSON list: {exc}") from None
        return [f.strip() for f in cell.replace(";", ",").split(",") if f.strip()]
    if column == "wait_for" and cell.startswith("{"):  # {"selector": ...} or {"ms": ...}
        try:
            return orjson.loads(cell)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"wait_for: not a JSON object: {exc}") from None
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


def _csv_record(w: Writer, names: list[str], url_i: int, cells: list[str], bad_text: bool) -> None:
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


def normalize_csv(reader: IO[bytes], w: Writer, loc: str) -> None:
    text = io.TextIOWrapper(reader, encoding="utf-8-sig", errors="replace", newline="")
    long_lines: set[int] = set()
    bad_lines: set[int] = set()
    physical = 0

    def lines() -> Iterator[str]:
        nonlocal physical
        ahead: str | None = None
        while True:
            line = ahead if ahead is not None else text.readline(MAX_LINE)
            ahead = None
            if not line:
                return
            physical += 1
            if physical > w.max_file_lines:
                w.at_line(physical)
            if line in _BLANK:
                # a run of blank lines as one string: one empty row for the reader (kept as it
                # is inside a quoted cell), not a Python step and a row per line
                run = [line]
                while (ahead := text.readline(MAX_LINE)) in _BLANK and len(run) < 65_536:
                    run.append(ahead)
                    ahead = None
                physical += len(run) - 1
                if physical > w.max_file_lines:
                    w.at_line(physical)
                yield "".join(run)
                continue
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
