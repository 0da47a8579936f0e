"""``row_spans`` / ``read_span`` (``shoal.output._parts``): where a previous job's row is, read
by row group (a finished chunk) or by chunk (one still in pieces), each ``input_index`` once."""

from __future__ import annotations

import orjson

from shoal.output import compacted_url, piece_url, write_part
from shoal.output._parts import _ROW_GROUP_ROWS, part_urls, read_span, row_spans
from shoal.storage import get_storage


def _rows(indices: range, tag: str) -> list[dict]:
    return [
        {"url": f"http://shop.test/{i}", "input_index": i, "status": "ok", "data": {"t": tag}}
        for i in indices
    ]


def test_spans_cover_row_groups_and_pieces(settings) -> None:
    storage = get_storage(settings)
    n = 2 * _ROW_GROUP_ROWS + 10  # chunk 0: one compacted part of three row groups
    write_part(storage, compacted_url(storage, "job_p", 0, "0000000001aa"), _rows(range(n), "a"))
    # chunk 1: two pieces of one attempt that overlap at index n + 5 (the first one wins)
    write_part(
        storage, piece_url(storage, "job_p", 1, "0000000002bb", 1), _rows(range(n, n + 6), "b")
    )
    write_part(
        storage, piece_url(storage, "job_p", 1, "0000000002bb", 2), _rows(range(n + 5, n + 9), "c")
    )
    spans = row_spans(storage, part_urls(storage, "job_p"))
    assert [(s.first, s.last, s.row_group) for s in spans] == [
        (0, _ROW_GROUP_ROWS - 1, 0),
        (_ROW_GROUP_ROWS, 2 * _ROW_GROUP_ROWS - 1, 1),
        (2 * _ROW_GROUP_ROWS, n - 1, 2),
        (n, n + 8, -1),
    ]
    middle = read_span(storage, spans[1], ["input_index", "data_json"])
    assert middle.column("input_index").to_pylist() == list(
        range(_ROW_GROUP_ROWS, 2 * _ROW_GROUP_ROWS)
    )
    pieces = read_span(storage, spans[3], ["input_index", "data_json", "not_modified"])
    assert pieces.column("input_index").to_pylist() == list(range(n, n + 9))
    tags = [orjson.loads(d)["t"] for d in pieces.column("data_json").to_pylist()]
    assert tags == ["b"] * 6 + ["c"] * 3
    assert pieces.column("not_modified").null_count == 9
