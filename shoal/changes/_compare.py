"""Compare the rows of one run with an earlier run's: added, removed, changed, unchanged.

The rules (docs/API.md "Change reports" says them to callers):

- A row takes part when its ``status`` is ``ok``; its key is the input URL (``url``) or the
  extracted field ``key`` as text. An ok row whose key field is null has no key: it is counted
  in ``null_keys`` and gets no ``change``.
- A key of this run not among the previous run's ok rows is ``added`` (also when the previous
  run fetched it with an error: it delivered nothing for it). A key of the previous run's ok
  rows not in this run is ``removed`` — unless this run has an errored row for it (its URL, or
  the previous row's URL for a field key) that is not a ``404``/``410``: Shoal could not see
  the page (a timeout, a 5xx...), so it is neither removed nor compared. A page that answers
  404 Not Found or 410 Gone is gone: that is how a shop removes a product, so its key is
  ``removed``. An errored row of this run gets no ``change``.
- Duplicates are never merged: the n-th row of a key in this run (input order) is compared with
  the n-th row of that key in the previous run; extra rows on either side are added or removed.
  ``duplicate_keys`` counts the keys seen more than once among this run's ok rows.
- A key in both runs is ``changed`` when any compared field differs (null against a value is a
  difference; null against null is not), and each differing field is counted in ``fields``.

How: two lazy scans joined on the key (and the occurrence number when a key repeats), in
Polars' streaming engine; the join's result — a row per key with its change, a flag per field,
and the two values — is collected, because the labels, the counts and the changes file are all
read from it: one join instead of three (``collect_all`` of the three took 2.0 s a million
rows where one collect took 1.35 s). Numbering occurrences (``int_range().over(key)``) costs
~2 s a million rows, so the join is made on the key alone; the keys that show twice in its
result (``is_duplicated``, 0.25 s) have their rows joined again on key and occurrence, those
rows only (another scan of both runs, filtered). Values are compared typed (``_scan``).
Bench: ``bench/change_report.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import polars as pl

from shoal.changes._scan import as_text, field_columns

log = logging.getLogger(__name__)

#: a row's ``change`` as the output and the results show it
ROW_CHANGES = ("added", "changed", "unchanged")
ROW_CHANGE = pl.Enum(ROW_CHANGES)
CHANGE_KINDS = pl.Enum(("added", "removed", "changed"))
# the codes of the joined frame
_ADDED, _REMOVED, _CHANGED, _UNCHANGED, _UNSEEN, _ERRORED, _NULL_KEY = range(7)
_STREAMING: Final = "streaming"
#: HTTP statuses of an errored row that say its page is gone (its key is removed)
GONE = (404, 410)


@dataclass
class Comparison:
    """The counts of a comparison, this run's row labels and the changed rows."""

    added: int = 0
    removed: int = 0
    changed: int = 0
    unchanged: int = 0
    duplicate_keys: int = 0
    null_keys: int = 0
    fields: dict[str, int] = field(default_factory=dict)
    #: ``input_index`` (sorted) and ``change`` of this run's rows that have one
    labels: pl.DataFrame = field(default_factory=lambda: _empty_labels())
    #: ``key, change, field, old, new, url``: a row per changed field, per added/removed key
    changes: pl.DataFrame = field(default_factory=lambda: _empty_changes())

    def counts(self) -> dict[str, object]:
        return {
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "duplicate_keys": self.duplicate_keys,
            "null_keys": self.null_keys,
            "fields": dict(self.fields),
        }


def _empty_labels() -> pl.DataFrame:
    return pl.DataFrame(schema={"input_index": pl.Int64, "change": ROW_CHANGE})


def _empty_changes() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "key": pl.String,
            "change": CHANGE_KINDS,
            "field": pl.String,
            "old": pl.String,
            "new": pl.String,
            "url": pl.String,
        }
    )


@dataclass(frozen=True)
class _Plan:
    key: str
    fields: dict[str, str]  # compared field -> type
    key_type: str | None
    text: bool  # every value as JSON text (a value did not fit its type)

    @property
    def by_url(self) -> bool:
        return self.key == "url"

    @property
    def values(self) -> list[str]:
        return [f"_v{i}" for i in range(len(self.fields))]

    def decoded(self) -> dict[str, str]:
        """Fields to read from ``data_json``: the compared ones, and the key field."""
        out = dict(self.fields)
        if not self.by_url:
            out.setdefault(self.key, self.key_type or "string")
        return out

    def names(self) -> dict[str, str]:
        names = {f: v for f, v in zip(self.fields, self.values, strict=True)}
        if not self.by_url and self.key not in names:
            names[self.key] = "_k"
        return names

    def key_expr(self, column: str | None = None) -> pl.Expr:
        """The key as text, from the URL or from the key field's column."""
        if self.by_url:
            return pl.col("_url")
        col = pl.col(column or self.names()[self.key])
        return col if self.text else as_text(col, self.key_type)


def compare(
    current: pl.LazyFrame,
    previous: pl.LazyFrame,
    *,
    key: str,
    fields: Mapping[str, str],
    key_type: str | None = None,
) -> Comparison:
    """Compare ``current``'s rows with ``previous``'s (frames of ``_scan.scan_rows``) by
    ``key`` (``url`` or an extracted field of type ``key_type``) on ``fields`` (name -> type)."""
    plan = _Plan(key, dict(fields), key_type, text=False)
    try:
        return _compare(current, previous, plan)
    except pl.exceptions.ComputeError as exc:
        # a value that does not fit its field's type: compare every value as its JSON text
        log.warning("change report: typed read failed (%s); comparing values as text", exc)
        return _compare(current, previous, _Plan(key, dict(fields), key_type, text=True))


def _side(rows: pl.LazyFrame, plan: _Plan, *, current: bool) -> pl.LazyFrame:
    """One run's rows that take part: key, input index, URL, values (and, for this run keyed
    by URL, its errored rows, marked: they stop a previous row from counting as removed)."""
    names = plan.names()
    kept = pl.col("status") == "ok"
    if current and plan.by_url:
        kept = kept | _unseen_error()
    cols = field_columns(plan.decoded(), names, text=plan.text)
    out = rows.filter(kept).select(
        pl.col("input_index").alias("_idx"),
        pl.col("url").alias("_url"),
        (pl.col("status") == "error").alias("_err"),
        *cols,
    )
    out = out.with_columns(plan.key_expr().alias("_key"))
    # keyed by URL the key is the URL: not carried twice through the join (35 MB a million)
    url = [] if plan.by_url else ["_url"]
    return out.select("_key", "_idx", *url, "_err", *plan.values)


def _compare(current: pl.LazyFrame, previous: pl.LazyFrame, plan: _Plan) -> Comparison:
    cur, prev = _side(current, plan, current=True), _side(previous, plan, current=False)
    frame = _joined(cur, prev, plan, by_occurrence=False)
    key = pl.col("_key")
    repeated = frame.filter(key.is_not_null() & key.is_duplicated()).get_column("_key").unique()
    duplicate_keys = 0
    if not repeated.is_empty():
        # a key repeats in a run: join its rows again, the n-th with the n-th; only those
        # rows, so numbering and joining them is small
        some = key.is_in(repeated.implode())
        occ = pl.int_range(pl.len(), dtype=pl.UInt32).over("_key").alias("_occ")
        again = _joined(
            cur.filter(some).with_columns(occ),
            prev.filter(some).with_columns(occ),
            plan,
            by_occurrence=True,
        )
        frame = pl.concat([frame.filter(~some.fill_null(False)), again.select(frame.columns)])
        duplicate_keys = (
            again.filter(pl.col("_idx").is_not_null()).group_by("_key").len()
            .filter(pl.col("len") > 1).height
        )  # fmt: skip
    if not plan.by_url:
        frame = _unseen(frame, current)
    return _summarize(frame, plan, duplicate_keys)


def _joined(
    cur: pl.LazyFrame, prev: pl.LazyFrame, plan: _Plan, *, by_occurrence: bool
) -> pl.DataFrame:
    """The full join of the two sides, a row per key (per occurrence), with its state and a
    changed flag per field. Rows without a key match nothing (Polars never joins nulls)."""
    on = ["_key", "_occ"] if by_occurrence else ["_key"]
    joined = cur.join(prev.drop("_err"), on=on, how="full", coalesce=True, suffix="_p")
    flags = [pl.col(v).ne_missing(pl.col(f"{v}_p")).alias(f"{v}_c") for v in plan.values]
    any_flag = pl.any_horizontal(*(pl.col(f"{v}_c") for v in plan.values)) if flags else False
    state = (
        pl.when(pl.col("_key").is_null())
        .then(pl.when(pl.col("_idx").is_not_null()).then(pl.lit(_NULL_KEY)).otherwise(None))
        .when(pl.col("_err"))
        .then(pl.lit(_ERRORED))
        .when(pl.col("_idx_p").is_null())
        .then(pl.lit(_ADDED))
        .when(pl.col("_idx").is_null())
        .then(pl.lit(_REMOVED))
        .when(any_flag)
        .then(pl.lit(_CHANGED))
        .otherwise(pl.lit(_UNCHANGED))
        .cast(pl.UInt8)
        .alias("_state")
    )
    return joined.with_columns(flags).with_columns(state).collect(engine=_STREAMING)


def _unseen_error() -> pl.Expr:
    """An errored row that says nothing of its page (not a 404/410: the page is gone then)."""
    gone = pl.col("http_status").is_in(list(GONE)).fill_null(False)
    return (pl.col("status") == "error") & ~gone


def _unseen(frame: pl.DataFrame, current: pl.LazyFrame) -> pl.DataFrame:
    """Removed rows of a field key whose previous URL errored in this run: not seen."""
    removed = frame.get_column("_state") == _REMOVED
    if not removed.any():
        return frame
    errored = (
        current.filter(_unseen_error())
        .select(pl.col("url").unique())
        .collect(engine=_STREAMING)
        .get_column("url")
    )
    if errored.is_empty():
        return frame
    return frame.with_columns(
        pl.when(pl.col("_state") == _REMOVED, pl.col("_url_p").is_in(errored.implode()))
        .then(pl.lit(_UNSEEN, pl.UInt8))
        .otherwise(pl.col("_state"))
        .alias("_state")
    )


def _summarize(frame: pl.DataFrame, plan: _Plan, duplicate_keys: int) -> Comparison:
    state = pl.col("_state")
    sums = frame.select(
        *((state == code).sum().alias(str(code)) for code in (*range(4), _NULL_KEY)),
        *((pl.col(f"{v}_c") & (state == _CHANGED)).sum().alias(v) for v in plan.values),
    ).row(0, named=True)
    labels = (
        frame.filter(state.is_in([_ADDED, _CHANGED, _UNCHANGED]))
        .select(
            pl.col("_idx").alias("input_index"),
            state.replace_strict(
                {_ADDED: "added", _CHANGED: "changed", _UNCHANGED: "unchanged"},
                return_dtype=ROW_CHANGE,
            ).alias("change"),
        )
        .sort("input_index")
    )
    return Comparison(
        added=sums[str(_ADDED)],
        removed=sums[str(_REMOVED)],
        changed=sums[str(_CHANGED)],
        unchanged=sums[str(_UNCHANGED)],
        duplicate_keys=duplicate_keys,
        null_keys=sums[str(_NULL_KEY)],
        fields={f: sums[v] for f, v in zip(plan.fields, plan.values, strict=True)},
        labels=labels,
        changes=_changes(frame, plan),
    )


def _changes(frame: pl.DataFrame, plan: _Plan) -> pl.DataFrame:
    """The changes file's rows, this run's input order first, then removed keys in the previous
    run's order; the changed fields of one key together, in ``fields`` order. (One frame per
    field, concatenated and sorted: 0.05 s for 100,000 changes, where a list of structs per
    row, exploded, took 1.1 s.)"""
    state = pl.col("_state")
    moved = frame.filter(state.is_in([_ADDED, _REMOVED, _CHANGED])).with_columns(
        pl.coalesce(pl.col("_idx"), pl.col("_idx_p") + (1 << 62)).alias("_order"),
        (pl.col("_key") if plan.by_url else pl.coalesce(pl.col("_url"), pl.col("_url_p"))).alias(
            "url"
        ),
    )
    if moved.is_empty():
        return _empty_changes()
    kind = state.replace_strict(
        {_ADDED: "added", _REMOVED: "removed", _CHANGED: "changed"}, return_dtype=CHANGE_KINDS
    )
    whole = moved.filter(state != _CHANGED).select(
        pl.col("_key").alias("key"),
        kind.alias("change"),
        pl.lit(None, pl.String).alias("field"),
        pl.lit(None, pl.String).alias("old"),
        pl.lit(None, pl.String).alias("new"),
        "url",
        "_order",
        pl.lit(-1, pl.Int32).alias("_field"),
    )
    per_field = [
        moved.filter(pl.col(f"{v}_c") & (state == _CHANGED)).select(
            pl.col("_key").alias("key"),
            pl.lit("changed", CHANGE_KINDS).alias("change"),
            pl.lit(f, pl.String).alias("field"),
            _text(pl.col(f"{v}_p"), t, plan.text).alias("old"),
            _text(pl.col(v), t, plan.text).alias("new"),
            "url",
            "_order",
            pl.lit(i, pl.Int32).alias("_field"),
        )
        for i, ((f, t), v) in enumerate(zip(plan.fields.items(), plan.values, strict=True))
    ]
    return pl.concat([whole, *per_field]).sort("_order", "_field").drop("_order", "_field")


def _text(expr: pl.Expr, ftype: str, text: bool) -> pl.Expr:
    return expr if text else as_text(expr, ftype)
