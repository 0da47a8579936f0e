"""A chunk persists its rows as it goes (issue 11): pieces appear while it runs, a cancelled
chunk keeps what finished, a new attempt fetches only what no piece holds, and readers keep each
``input_index`` once whatever pieces overlap."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from shoal import jobs, output
from shoal.chunking import Chunk, plan_chunks
from shoal.contract import JobCreate, JobSpec
from shoal.finalize import finalize_job
from shoal.output import (
    build_output,
    count_kept,
    iter_part_batches,
    part_urls,
    piece_url,
    read_results,
    write_part,
)
from shoal.scrape import JobRuntime, scrape_chunk
from shoal.settings import Settings, get_settings
from shoal.storage import Storage, get_storage
from shoal.store import get_store
from tests.sites.catalog import Site


@pytest.fixture
def env(settings, monkeypatch) -> Callable[..., Settings]:
    """``env(**shoal_settings)``: the test's settings with these set (through the env)."""

    def make(**kw: Any) -> Settings:
        for k, v in kw.items():
            monkeypatch.setenv(f"SHOAL_{k.upper()}", str(v))
        get_settings.cache_clear()
        return get_settings()

    return make


def _job(settings: Settings, urls: list[str], concurrency: int = 4) -> tuple[str, str, Chunk]:
    """A job of one chunk over ``urls``, staged; its id, input URL and chunk."""
    store = get_store(settings)
    account, _ = store.get_or_create_account("persist")
    req = JobCreate.model_validate({"urls": urls, "concurrency": concurrency})
    spec, items = jobs.validate(req, settings, account)
    row = jobs.new_job_row(req, spec, account, urls_total=len(items))
    storage = get_storage(settings)
    jobs.stage_inline(storage, row.id, items)
    store.insert_job(row)
    in_url = jobs.input_url(storage, row.id)
    chunks, _ = plan_chunks(storage, in_url, settings, size=len(urls))
    assert len(chunks) == 1
    return row.id, in_url, chunks[0]


def _runtime(settings: Settings, job_id: str) -> JobRuntime:
    row = get_store(settings).get_job(job_id)
    assert row is not None
    return JobRuntime.open(job_id, JobSpec.model_validate(row.spec), settings)


async def _poll(cond: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
    return got


def _slow_hits(site: Site) -> dict[int, int]:
    return {int(p.split("/")[2]): n for p, n in site.stats.hits.items() if p.startswith("/slow/")}


async def test_pieces_appear_while_the_chunk_runs_and_counters_follow_them(site, env) -> None:
    settings = env(
        allow_private_networks=1, parse_workers=0, persist_rows=5, persist_interval_s=0.2
    )
    n = 60
    jid, in_url, chunk = _job(settings, [site.url(f"/slow/{i}?ms=150") for i in range(n)])
    rt = _runtime(settings, jid)
    storage, store = rt.storage, rt.store
    task = asyncio.create_task(scrape_chunk(rt, in_url, chunk))
    try:
        # a piece is on disk long before the chunk ends (60 URLs x 150 ms / 4 in flight ~ 2.3 s;
        # at 60 ms, ~0.9 s, a machine at load ~20 once ended the chunk before the first look)
        pieces = await _poll(lambda: [u for u in part_urls(storage, jid) if u.count("-") >= 2])
        assert not task.done()
        assert 0 < count_kept(storage, pieces).rows < n
        seen = []
        while not task.done():  # counters are those of persisted rows, and never go back
            done = store.counters(jid).done
            assert done <= count_kept(storage, part_urls(storage, jid)).rows
            seen.append(done)
            await asyncio.sleep(0.03)
        summary = await task
    finally:
        await rt.close()
    assert seen == sorted(seen) and seen[-1] > 0
    assert (summary.rows, summary.complete) == (n, True)
    # at the end: one compacted part; its rows, in order; counters equal to them
    [part] = part_urls(storage, jid)
    assert output.parse_part_name(part).kind == 0
    rows, total = read_results(storage, [part], limit=100, offset=0)
    assert total == n and [r["input_index"] for r in rows] == list(range(n))
    assert store.counters(jid).done == n and store.counters(jid).credits == n


async def test_cancelled_chunk_keeps_what_finished_and_resume_fetches_only_the_rest(
    site, env
) -> None:
    settings = env(allow_private_networks=1, parse_workers=0, persist_rows=1000)
    settings_slow_persist = settings.persist_interval_s
    assert settings_slow_persist >= 2.0  # nothing written by the timer before the cancel
    n = 80
    jid, in_url, chunk = _job(settings, [site.url(f"/slow/{i}?ms=50") for i in range(n)])
    rt = _runtime(settings, jid)
    storage = rt.storage
    task = asyncio.create_task(scrape_chunk(rt, in_url, chunk))
    await _poll(lambda: len(_slow_hits(site)) >= 30)
    task.cancel()  # as a task timeout, a chunk process told to stop, a SIGTERM unwinding
    with pytest.raises(asyncio.CancelledError):
        await task
    await rt.close()
    first = _slow_hits(site)
    kept = count_kept(storage, part_urls(storage, jid))
    # every finished row was written as the chunk unwound; only the 4 in flight are lost
    assert len(first) - 4 <= kept.rows <= len(first) < n
    assert get_store(settings).counters(jid).done == kept.rows
    kept_indices = {
        r["input_index"]
        for r in read_results(storage, part_urls(storage, jid), limit=1000, offset=0)[0]
    }

    rt = _runtime(settings, jid)  # a new attempt (a retried task, a resumed flow run)
    try:
        summary = await scrape_chunk(rt, in_url, chunk)
    finally:
        await rt.close()
    assert (summary.rows, summary.complete) == (n, True)
    hits = _slow_hits(site)
    assert all(hits[i] == 1 for i in kept_indices)  # what was kept was not fetched again
    assert all(hits[i] >= 1 for i in range(n))
    assert sum(hits.values()) <= n + 4  # at most the requests cut off in flight twice
    files = part_urls(storage, jid)
    assert len(files) == 1  # compacted: the first attempt's pieces were replaced
    rows, total = read_results(storage, files, limit=1000, offset=0)
    assert total == n and [r["input_index"] for r in rows] == list(range(n))


async def test_stop_flag_ends_the_chunk_with_what_finished(site, env) -> None:
    """``DELETE`` (the cancel flag): the URLs not started are skipped, the rest is one part."""
    settings = env(allow_private_networks=1, parse_workers=0, persist_rows=3)
    n = 60
    jid, in_url, chunk = _job(settings, [site.url(f"/slow/{i}?ms=40") for i in range(n)])
    rt = _runtime(settings, jid)
    task = asyncio.create_task(scrape_chunk(rt, in_url, chunk))
    await _poll(lambda: len(_slow_hits(site)) >= 12)
    rt.request_stop("cancel")
    summary = await task
    await rt.close()
    assert not summary.complete and 12 <= summary.rows < n
    assert summary.rows == len(_slow_hits(site))  # requests in flight finished and were kept
    job = finalize_job(jid, settings, cancelled=True)
    assert (job.status, job.urls_done, job.credits_used) == (
        "cancelled",
        summary.rows,
        summary.rows,
    )


def _row(i: int, tag: str, **kw: Any) -> dict[str, Any]:
    row = {
        "url": f"https://store.test/p/{i}",
        "input_index": i,
        "status": "ok",
        "http_status": 200,
        "final_url": f"https://store.test/p/{i}",
        "fetched_at": "2026-12-05T05:00:00Z",
        "elapsed_ms": 10,
        "attempts": 1,
        "credits": 1,
        "content_hash": None,
        "meta": {"tag": tag},
        "data": {"name": f"Product {i}"},
        "error": None,
    }
    row.update(kw)
    return row


def _overlapping(storage: Storage, job: str) -> None:
    """Chunk 0 (rows 0..9) as two attempts left it, overlapping; chunk 1 (10..19) compacted
    by one attempt, with a stale attempt's piece beside it."""
    a, b = "0000000000aaaaaa", "0000000000bbbbbb"
    write_part(storage, piece_url(storage, job, 0, a, 1), [_row(i, "a1") for i in (0, 2, 4, 6)])
    write_part(storage, piece_url(storage, job, 0, a, 2), [_row(i, "a2") for i in (1, 3, 5)])
    # the stale attempt b fetched 4..9 again: 4, 5, 6 are duplicates (errored there, 5 credits)
    b_rows = [
        _row(i, "b1", credits=5, status="error", error={"code": "timeout", "message": "x"})
        for i in (4, 5, 6)
    ]
    write_part(
        storage, piece_url(storage, job, 0, b, 1), [*b_rows, *(_row(i, "b1") for i in (7, 8, 9))]
    )
    write_part(
        storage, output.compacted_url(storage, job, 1, a), [_row(i, "c") for i in range(10, 20)]
    )
    write_part(storage, piece_url(storage, job, 1, b, 1), [_row(i, "stale") for i in (11, 19)])
    # a temp file of a write in progress is never read
    storage.write_bytes_atomic(storage.url("jobs", job, "parts", "000001-x.parquet.tmp-123"), b"x")


def test_overlapping_pieces_are_read_once_each_first_kept_wins(tmp_path) -> None:
    storage = Storage(str(tmp_path / "results"))
    _overlapping(storage, "j1")
    parts = part_urls(storage, "j1")
    assert len(parts) == 5
    rows, total = read_results(storage, parts, limit=100, offset=0)
    assert total == 20 and [r["input_index"] for r in rows] == list(range(20))
    tags = [r["meta"]["tag"] for r in rows]
    # earlier attempt's pieces before a later one's; a compacted part before any piece
    assert tags == ["a1", "a2", "a1", "a2", "a1", "a2", "a1", "b1", "b1", "b1"] + ["c"] * 10
    assert count_kept(storage, parts) == (20, 0, 20)  # credits of the rows kept, not of b's
    for offset, limit in [(0, 3), (3, 5), (8, 4), (12, 8), (19, 5)]:
        page, total = read_results(storage, parts, limit=limit, offset=offset)
        assert [r["input_index"] for r in page] == list(range(offset, min(20, offset + limit)))
    got = [
        i
        for b in iter_part_batches(storage, parts, ["input_index"], batch_rows=4)
        for i in b.column(0).to_pylist()
    ]
    assert got == list(range(20))
    for fmt in ("ndjson", "csv", "parquet"):
        [f] = build_output(
            storage, parts, storage.url("out", fmt), fmt=fmt, gzip=False, fields={"name": "string"}
        )
        assert f.rows == 20
    lines = storage.open(storage.url("out", "ndjson", "result.ndjson")).read().splitlines()
    assert [orjson.loads(x)["input_index"] for x in lines] == list(range(20))


def test_reader_lists_again_when_a_piece_was_compacted_under_it(tmp_path) -> None:
    storage = Storage(str(tmp_path / "results"))
    _overlapping(storage, "j1")
    stale = part_urls(storage, "j1")
    # chunk 0 compacted meanwhile: its pieces are gone, one part holds them
    rows = read_results(storage, [u for u in stale if "/000000" in u], limit=100, offset=0)[0]
    for u in stale:
        if "/000000" in u:
            storage.rm(u)
    write_part(storage, output.compacted_url(storage, "j1", 0, "0000000001cccccc"), rows)
    page, total = read_results(storage, stale, limit=100, offset=0)
    assert total == 20 and [r["input_index"] for r in page] == list(range(20))
    assert count_kept(storage, stale).rows == 20


def test_persist_failure_keeps_the_rows_pending(tmp_path, monkeypatch) -> None:
    storage = Storage(str(tmp_path / "results"))
    seen: list[output.Kept] = []
    w = output.ChunkWriter(storage, "j1", 0, on_persist=seen.append)
    for i in (2, 0, 1):
        w.add(_row(i, "x"))
    real = storage.write_bytes_atomic

    def broken(url: str, data: bytes) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(storage, "write_bytes_atomic", broken)
    with pytest.raises(OSError):
        w.persist()
    assert w.pending == 3 and not part_urls(storage, "j1")
    monkeypatch.setattr(storage, "write_bytes_atomic", real)
    assert w.persist() == 3 and seen[-1] == (3, 0, 3)
    w.add(_row(3, "x"))
    assert output.persist_all(seal=True) == 1  # the emergency path: then nothing more
    w.add(_row(4, "x"))
    assert w.persist() == 0 and w.finish() == (4, 0, 4)
    rows, total = read_results(storage, part_urls(storage, "j1"), limit=10, offset=0)
    assert total == 4 and [r["input_index"] for r in rows] == [0, 1, 2, 3]


def test_retry_takes_the_errored_urls_of_the_rows_kept(tmp_path) -> None:
    """``POST /v1/jobs/{id}/retry`` reads the parts through the same dedupe: index 4-6 errored
    only in the stale attempt's duplicate (the kept row is ok), so only real errors retry."""
    from shoal.submit import errored_input

    storage = Storage(str(tmp_path / "results"))
    _overlapping(storage, "j1")
    write_part(
        storage,
        piece_url(storage, "j1", 2, "0000000000aaaaaa", 1),
        [_row(20, "e", status="error", error={"code": "dns", "message": "x"}), _row(21, "ok")],
    )
    lines = [orjson.dumps({"url": f"https://store.test/p/{i}", "i": i}) + b"\n" for i in range(22)]
    storage.write_bytes_atomic(jobs.input_url(storage, "j1"), b"".join(lines))
    assert errored_input(storage, "j1") == [lines[20]]


def test_retention_removes_pieces_with_the_job(settings, store, alice, make_job) -> None:
    from datetime import timedelta

    from shoal.retention import remove_expired
    from shoal.store import utcnow

    storage = get_storage(settings)
    job = make_job(alice.account, status="cancelled", urls_total=20)
    _overlapping(storage, job.id)
    store.update_job(job.id, completed_at=utcnow() - timedelta(days=40), output_expires_at=utcnow())
    assert part_urls(storage, job.id)
    report = remove_expired(settings, now=utcnow() + timedelta(seconds=1))
    assert job.id in report.jobs_removed
    assert storage.list(storage.url("jobs", job.id, "parts")) == []


def test_two_attempts_at_one_chunk_at_once_lose_nothing_and_duplicate_nothing(tmp_path) -> None:
    """A stale attempt (A) that has not noticed it was replaced goes on beside the new one (B):
    both write pieces, both compact, in the worst order. Every row either wrote is read once."""
    storage = Storage(str(tmp_path / "results"))
    a = output.ChunkWriter.open(storage, "j1", 0)
    for i in range(0, 10):
        a.add(_row(i, "a"))
    a.persist()  # A: 0-9 persisted
    b = output.ChunkWriter.open(storage, "j1", 0)  # B starts: sees 0-9 kept
    assert b.kept_indices == set(range(10))
    for i in range(10, 20):
        a.add(_row(i, "a"))  # A goes on: 10-19 ...
        b.add(_row(i, "b"))  # ... which B fetches too
    a.persist()
    b.persist()
    for i in range(20, 25):
        a.add(_row(i, "a"))  # rows only A has, never persisted by a piece before A's end
    for i in range(25, 30):
        b.add(_row(i, "b"))
    assert b.finish() == (25, 0, 25)  # 0-9 (A's first piece, removed now), 10-19, 25-29
    assert a.finish().rows == 25  # A compacts from memory: its removed piece costs it nothing
    files = part_urls(storage, "j1")
    assert len(files) == 2 and all(output.parse_part_name(u).kind == 0 for u in files)
    rows, total = read_results(storage, files, limit=100, offset=0)
    assert total == 30 and [r["input_index"] for r in rows] == list(range(30))
    # the earlier attempt's compacted part comes first: its rows win the duplicates 10-19
    assert {r["meta"]["tag"] for r in rows if 10 <= r["input_index"] < 20} == {"a"}
    assert count_kept(storage, files) == (30, 0, 30)
    # a third attempt finds every row kept, fetches nothing, and leaves one part
    c = output.ChunkWriter.open(storage, "j1", 0)
    assert c.kept_indices == set(range(30))
    assert c.finish() == (30, 0, 30)
    assert len(part_urls(storage, "j1")) == 1


_FLOW_PROCESS = """
import asyncio, json, sys
from shoal import chunkprocs
from shoal.settings import get_settings
job_id, in_url, chunk = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
procs = chunkprocs.ChunkProcs(2, get_settings())
procs.start_job(job_id, [(4, 4), (4, 4)])
print(" ".join(str(p.process.pid) for p in procs._procs if p), flush=True)
asyncio.run(procs.run(job_id, in_url, chunk))
"""


def test_chunk_process_writes_its_finished_rows_when_the_flow_process_is_killed(site, env) -> None:
    """SIGKILL of the flow process (an OOM, the runner's kill after its grace): its chunk
    process notices, cancels its chunk and writes what finished before it exits — with pieces
    due only every 1,000 rows or 30 s, nothing else would have written them."""
    import dataclasses
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from tests.procs import process_running

    settings = env(
        allow_private_networks=1, parse_workers=0, persist_rows=1000, persist_interval_s=30
    )
    n = 200
    jid, in_url, chunk = _job(settings, [site.url(f"/slow/{i}?ms=100") for i in range(n)])
    root = Path(__file__).resolve().parents[2]
    flow = subprocess.Popen(
        [sys.executable, "-c", _FLOW_PROCESS, jid, in_url, orjson.dumps(dataclasses.asdict(chunk))],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert flow.stdout is not None
        pids = [int(p) for p in flow.stdout.readline().split()]
        deadline = time.monotonic() + 30
        while len(_slow_hits(site)) < 40:
            assert time.monotonic() < deadline and flow.poll() is None
            time.sleep(0.02)
        assert not part_urls(get_storage(settings), jid)  # nothing written yet
        os.kill(flow.pid, signal.SIGKILL)
        flow.wait(10)
        deadline = time.monotonic() + 10
        while any(process_running(p) for p in pids):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        flow.kill()
    hits = len(_slow_hits(site))
    kept = count_kept(get_storage(settings), part_urls(get_storage(settings), jid)).rows
    assert hits - 4 <= kept <= hits < n  # only the 4 requests in flight are lost
