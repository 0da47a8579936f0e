"""Task: scrape one chunk of a job.

The cache key is (job id, chunk index) — not Prefect's default, which includes the flow run id,
and not the task source, which a code change invalidates — so a resumed run of the same job skips
the chunks that finished, while their part files stay where they were written.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import task
from prefect.context import TaskRunContext
from prefect.states import Cancelled, State

from shoal import chunkprocs
from shoal.chunking import Chunk
from shoal.contract import JobSpec
from shoal.scrape import JobRuntime
from shoal.scrape import scrape_chunk as _scrape_chunk
from shoal.settings import get_settings
from shoal.store import get_store


def _chunk_key(_ctx: TaskRunContext, params: dict[str, Any]) -> str:
    return f"shoal-chunk-{params['job_id']}-{params['chunk']['index']}"


@task(
    name="scrape_chunk",
    task_run_name="chunk-{chunk[index]}",
    retries=get_settings().chunk_retries,
    retry_delay_seconds=5,
    timeout_seconds=get_settings().chunk_timeout_s,
    cache_key_fn=_chunk_key,
    persist_result=True,
)
async def scrape_chunk(
    job_id: str, input_url: str, chunk: dict[str, Any]
) -> dict[str, Any] | State[Any]:
    """Fetch and extract the chunk's URLs and write its part file; returns its counts.

    When the job's flow gave it worker processes (``SHOAL_CHUNK_PROCESSES``), the chunk runs in
    one of them; a chunk whose process died raises ``BrokenProcessPool`` and is retried.

    A chunk stopped before its last URL (a cancel, the lifetime deadline, a later run taking the
    job) ends ``Cancelled`` with its counts as the state's data: the run page shows what
    happened, and only a ``Completed`` chunk is cached, so a resumed run finishes a stopped one
    instead of skipping it."""
    procs = chunkprocs.current()
    if procs is not None and procs.uses(job_id):
        summary = await procs.run(job_id, input_url, chunk)
    else:
        rt = JobRuntime.get(job_id)
        if rt is None:  # a task run outside the job's flow process
            settings = get_settings()
            row = get_store(settings).get_job(job_id)
            assert row is not None, job_id
            rt = JobRuntime.open(job_id, JobSpec.model_validate(row.spec), settings)
        summary = asdict(await _scrape_chunk(rt, input_url, Chunk(**chunk)))
    if not summary["complete"]:
        return Cancelled(
            message=f"stopped after {summary['rows']} of {chunk['count']} URLs", data=summary
        )
    return summary


async def chunk_summary(state: State[Any]) -> dict[str, Any]:
    """The counts of a finished ``scrape_chunk`` run (``return_state=True``); raises what the
    chunk raised when it failed."""
    if state.is_cancelled():
        return state.data if isinstance(state.data, dict) else {"complete": False}
    return await state.result()  # type: ignore[no-any-return]
