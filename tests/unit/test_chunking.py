"""shoal.chunking: chunks cover every staged line exactly once, in order."""

from __future__ import annotations

import orjson
import pytest

import shoal.chunking
from shoal.chunking import Chunk, chunk_size, plan_chunks, read_chunk
from shoal.settings import Settings
from shoal.storage import Storage


def _stage(tmp_path, n: int, *, trailing_newline: bool = True) -> tuple[Storage, str]:
    storage = Storage(str(tmp_path))
    url = storage.url("jobs", "job_P", "input.ndjson")
    lines = [
        orjson.dumps({"url": f"https://a.com/{j}", "meta": {"j": j}, "o": {}}) for j in range(n)
    ]
    data = b"\n".join(lines)
    if n and trailing_newline:
        data += b"\n"
    storage.write_bytes_atomic(url, data)
    return storage, url


def _read_all(storage, url, chunks):
    items = []
    for c in chunks:
        got = read_chunk(storage, url, c)
        assert len(got) == c.count
        items.extend(got)
    return items


def _check_cover(storage, url, chunks, total, n):
    assert total == n
    assert [c.index for c in chunks] == list(range(len(chunks)))
    first = 0
    for c in chunks:  # contiguous, non-overlapping
        assert c.first == first and c.count > 0
        first += c.count
    assert first == n
    items = _read_all(storage, url, chunks)
    assert [it["i"] for it in items] == list(range(n))
    assert [it["meta"]["j"] for it in items] == list(range(n))
    assert [it["url"] for it in items] == [f"https://a.com/{j}" for j in range(n)]


@pytest.mark.parametrize(
    ("n", "expected_chunks"),
    [(0, 0), (1, 1), (249, 1), (250, 1), (251, 2), (500, 2), (10_000, 10)],
)
def test_plan_covers_every_line_once(tmp_path, n, expected_chunks):
    storage, url = _stage(tmp_path, n)
    cfg = Settings(chunk_min_urls=250, max_chunks_per_job=1_000)
    chunks, total = plan_chunks(storage, url, cfg, slots=10)
    assert len(chunks) == expected_chunks
    _check_cover(storage, url, chunks, total, n)


@pytest.mark.parametrize(
    ("total", "slots", "size"),
    [
        (0, 4, 250),
        (600, 4, 250),  # small jobs: the smallest chunk
        (2_000, 4, 500),
        (10_000, 4, 2_500),  # one chunk per slot
        (10_001, 4, 2_750),  # rounded up to a multiple of chunk_min_urls
        (20_001, 4, 5_000),  # capped by chunk_max_urls: a few rounds
        (1_000_000, 4, 5_000),  # capped by chunk_max_urls
        (10_000_000, 4, 5_000),  # chunk_max_urls wins over the chunk budget
    ],
)
def test_chunk_size_gives_few_big_chunks_for_big_jobs(total, slots, size):
    cfg = Settings(chunk_min_urls=250, chunk_max_urls=5_000, max_chunks_per_job=1_000)
    assert chunk_size(total, cfg, slots) == size


def test_a_resumed_plan_keeps_its_first_chunk_size(tmp_path):
    storage, url = _stage(tmp_path, 10_000)
    first, _ = plan_chunks(storage, url, Settings(chunk_min_urls=250), slots=4)
    assert {c.count for c in first} == {2_500}
    # the operator changed the settings since: the stored size still cuts the same chunks
    again, total = plan_chunks(
        storage, url, Settings(chunk_min_urls=300, chunk_max_urls=600), size=2_500
    )
    assert again == first
    _check_cover(storage, url, again, total, 10_000)


def test_plan_stays_under_chunk_budget(tmp_path):
    storage, url = _stage(tmp_path, 10_000)
    cfg = Settings(chunk_min_urls=250, max_chunks_per_job=4)
    chunks, total = plan_chunks(storage, url, cfg, slots=8)  # slots alone would cut 8
    assert len(chunks) == 4 and {c.count for c in chunks} == {2_500}
    _check_cover(storage, url, chunks, total, 10_000)


def test_plan_chunk_size_is_capped_by_chunk_max(tmp_path):
    storage, url = _stage(tmp_path, 10_000)
    cfg = Settings(chunk_min_urls=100, chunk_max_urls=1_000, max_chunks_per_job=2)
    chunks, total = plan_chunks(storage, url, cfg)
    assert max(c.count for c in chunks) == 1_000 and len(chunks) == 10
    _check_cover(storage, url, chunks, total, 10_000)


@pytest.mark.parametrize("n", [1, 6, 7, 8, 14, 15, 100])
@pytest.mark.parametrize("max_chunks", [1, 3, 1_000])
def test_plan_odd_sizes_and_tiny_blocks(tmp_path, monkeypatch, n, max_chunks):
    # a tiny read block puts newlines on every block boundary
    monkeypatch.setattr(shoal.chunking, "_BLOCK", 5)
    storage, url = _stage(tmp_path, n)
    cfg = Settings(chunk_min_urls=7, chunk_max_urls=50, max_chunks_per_job=max_chunks)
    chunks, total = plan_chunks(storage, url, cfg)
    _check_cover(storage, url, chunks, total, n)


@pytest.mark.parametrize("n", [1, 249, 250, 251])
def test_last_line_without_newline(tmp_path, n):
    storage, url = _stage(tmp_path, n, trailing_newline=False)
    cfg = Settings(chunk_min_urls=250, max_chunks_per_job=1_000)
    chunks, total = plan_chunks(storage, url, cfg)
    _check_cover(storage, url, chunks, total, n)


def test_plan_is_deterministic(tmp_path):
    storage, url = _stage(tmp_path, 1_234)
    cfg = Settings(chunk_min_urls=100, max_chunks_per_job=5)
    assert plan_chunks(storage, url, cfg) == plan_chunks(storage, url, cfg)


def test_read_chunk_seeks_to_offset(tmp_path):
    storage, url = _stage(tmp_path, 600)
    cfg = Settings(chunk_min_urls=250, max_chunks_per_job=1_000)
    chunks, _ = plan_chunks(storage, url, cfg, slots=3)
    last = chunks[-1]
    assert isinstance(last, Chunk) and (last.first, last.count) == (500, 100)
    items = read_chunk(storage, url, last)
    assert items[0]["i"] == 500 and items[0]["url"] == "https://a.com/500"
    assert items[-1]["i"] == 599
