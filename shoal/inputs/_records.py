"""The record writer: one staged line per record, checked by ``jobs.stage_record``, and the
stats of the file (records, usable URLs, the first line errors, fields overrides add, whether
a usable record asks for a screenshot)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Any, Literal

import orjson
from pydantic import ValidationError

from shoal.contract import FieldType, UrlItem, run_overrides
from shoal.errors import FieldError, TooLarge, field_errors
from shoal.jobs import add_fields, output_fields, stage_record
from shoal.settings import Settings

InputFormat = Literal["ndjson", "csv"]

#: Line errors kept in the stats (all are counted).
MAX_ERRORS = 100
_PLAIN_KEYS = frozenset({"url", "meta"})


@dataclass
class InputStats:
    """What :func:`normalize` found: ``lines`` records staged, ``urls_valid`` of them usable,
    the first ``MAX_ERRORS`` line errors, the typed output fields per-URL overrides add, and
    ``screenshots``: some usable record asks for the screenshot format (the job's CSV/Parquet
    then have a ``screenshot_url`` column: ``JobSpec.screenshots``)."""

    format: InputFormat
    gzip: bool = False
    size_bytes: int = 0
    lines: int = 0
    urls_valid: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    fields: dict[str, FieldType] = field(default_factory=dict)
    screenshots: bool = False

    @property
    def errored(self) -> int:
        return self.lines - self.urls_valid


def _pydantic_msg(exc: ValidationError) -> str:
    return "; ".join(f"{e.loc}: {e.msg}" for e in field_errors(exc.errors(), root="record"))


class Writer:
    """Stages records: one JSON line each, checked like inline URLs; keeps the stats."""

    def __init__(
        self, out: IO[bytes], stats: InputStats, settings: Settings, max_lines: int | None
    ) -> None:
        self.out = out
        self.stats = stats
        self.settings = settings
        self.max_lines = max_lines
        self.line_no = 0  # the file line the current record starts on (1-based)
        self.max_file_lines = settings.max_upload_lines
        self._buf: list[bytes] = []

    def at_line(self, n: int) -> None:
        """The reader is at physical line ``n`` (blank ones count): past the file's line limit
        the file is refused before more of it is parsed."""
        if n > self.max_file_lines:
            raise TooLarge(
                f"the file has more than {self.max_file_lines} lines (blank ones included)"
            )

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

    def ok(self, url: str, meta: Any = None, over: dict[str, Any] | None = None) -> bool:
        """Stage one record: its line if it is usable (True), else its error line (False)."""
        problems: list[FieldError] = []
        line = stage_record(url, meta, over or {}, self.settings, problems)
        if line is None:
            # a bad URL reads as the reason alone; an option or meta names itself
            why = "; ".join(p.msg if p.loc == ".url" else f"{p.loc[1:]}: {p.msg}" for p in problems)
            self.bad(url, why, None if problems[0].loc == ".meta" else meta)
            return False
        self.stats.urls_valid += 1
        if over and not self.stats.screenshots and run_overrides(over).get("screenshot"):
            self.stats.screenshots = True
        self._add(line)
        return True

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
        if self.ok(item.url, item.meta, over) and (over.get("extract") or over.get("selectors")):
            add_fields(self.stats.fields, output_fields([over]))
