"""The API's endpoints as plain values (a :class:`Call`: method, path, body, how to read the
answer), shared by ``Client`` and ``AsyncClient`` so that the two differ only in how they wait
for an answer. Nothing here does I/O.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx

from shoal.client._errors import ShoalError
from shoal.client._models import (
    Job,
    JobPage,
    Result,
    Schedule,
    SchedulePage,
    SubmittedJob,
    Upload,
)

T = TypeVar("T")

#: the upload media type a file's extension names (``.gz`` is looked through)
_MEDIA = {
    ".csv": "text/csv",
    ".ndjson": "application/x-ndjson",
    ".jsonl": "application/x-ndjson",
    ".json": "application/x-ndjson",
    ".txt": "application/x-ndjson",  # NDJSON lines may be bare URLs
}


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how its (2xx) answer becomes a value."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    headers: Mapping[str, str] | None = None
    #: may be sent again after an answer was lost (default: GET only)
    idempotent: bool | None = None


def _model(cls: Callable[..., T]) -> Callable[[httpx.Response], T]:
    return lambda r: cls.model_validate(r.json())  # type: ignore[attr-defined,no-any-return]


def _nothing(r: httpx.Response) -> None:
    return None


# --- jobs -------------------------------------------------------------------------------------


def job_body(
    *,
    urls: Iterable[str | Mapping[str, Any]] | None,
    upload_id: str | None,
    s3_uri: str | None,
    role_arn: str | None,
    extract: Mapping[str, str] | None,
    selectors: Mapping[str, str] | None,
    format: str | None,
    gzip: bool | None,
    name: str | None,
    defaults: Mapping[str, Any] | None,
    fields: Mapping[str, Any],
) -> dict[str, Any]:
    """A ``POST /v1/jobs`` body from ``submit``'s keywords (one input already chosen)."""
    source: dict[str, Any]
    if urls is not None:
        source = {"urls": [u if isinstance(u, str) else dict(u) for u in urls]}
    elif upload_id is not None:
        source = {"upload_id": upload_id}
    else:
        source = {"s3_uri": s3_uri, **({"role_arn": role_arn} if role_arn else {})}
    merged = dict(defaults or {})
    if extract is not None:
        merged["extract"] = dict(extract)
    if selectors is not None:
        merged["selectors"] = dict(selectors)
    body: dict[str, Any] = {"input": source, **fields}
    if merged:
        body["defaults"] = merged
    output = dict(body.pop("output", None) or {})
    if format is not None:
        output["format"] = format
    if gzip is not None:
        output["gzip"] = gzip
    if output:
        body["output"] = output
    if name is not None:
        body["name"] = name
    return body


def one_input(*given: object) -> None:
    if sum(x is not None for x in given) != 1:
        raise ValueError("give exactly one of urls, file, upload_id or s3_uri")


def create_job(body: Mapping[str, Any], idempotency_key: str | None) -> Call[SubmittedJob]:
    """``POST /v1/jobs`` with an ``Idempotency-Key`` (a new one unless given)."""
    # idempotent: the key makes a repeated POST answer the job the first one made
    headers = {"Idempotency-Key": idempotency_key or f"shoal-client-{uuid.uuid4()}"}
    return Call("POST", "/v1/jobs", _model(SubmittedJob), None, dict(body), headers, True)


def get_job(job_id: str) -> Call[Job]:
    return Call("GET", f"/v1/jobs/{job_id}", _model(Job))


def list_jobs(
    status: str | Iterable[str] | None, limit: int, offset: int, schedule_id: str | None
) -> Call[JobPage]:
    if status is not None and not isinstance(status, str):
        status = ",".join(status)
    params = {"status": status, "limit": limit, "offset": offset, "schedule_id": schedule_id}
    return Call("GET", "/v1/jobs", _model(JobPage), params)


def cancel_job(job_id: str) -> Call[Job]:
    return Call("DELETE", f"/v1/jobs/{job_id}", _model(Job))


def retry_job(job_id: str) -> Call[SubmittedJob]:
    return Call("POST", f"/v1/jobs/{job_id}/retry", _model(SubmittedJob))


@dataclass(frozen=True)
class ResultsPage:
    """One page of a job's results, as the API sent its rows."""

    rows: list[Any]
    #: the offset of the page after this one; ``None`` after the last
    next: int | None

    def results(self) -> Iterator[Result]:
        return (Result.model_validate(row) for row in self.rows)


def results_page(job_id: str, limit: int, offset: int) -> Call[ResultsPage]:
    def parse(r: httpx.Response) -> ResultsPage:
        page = r.json()
        rows = page.get("results") or []
        end = offset + len(rows)
        return ResultsPage(rows, end if rows and end < int(page.get("total", 0)) else None)

    params = {"limit": limit, "offset": offset}
    return Call("GET", f"/v1/jobs/{job_id}/results", parse, params)


def get_upload(upload_id: str) -> Call[Upload]:
    return Call("GET", f"/v1/uploads/{upload_id}", _model(Upload))


def upload_headers(name: object, media_type: str | None, size: int | None = None) -> dict[str, str]:
    """Headers of an upload named ``name``: its media type and, for ``.gz``, its coding
    (a stream without a name: the server tells by the content); its length when known."""
    lower = name.lower() if isinstance(name, str) else ""
    headers = {}
    if lower.endswith(".gz"):
        headers["Content-Encoding"] = "gzip"
        lower = lower.removesuffix(".gz")
    suffix = Path(lower).suffix
    headers["Content-Type"] = media_type or _MEDIA.get(suffix, "application/octet-stream")
    if size is not None:
        headers["Content-Length"] = str(size)
    return headers


def download_targets(job: Job, dest: Path) -> list[tuple[str, Path]]:
    """Each part's link and the file it goes to (``dest``, then ``<stem>.part<N><suffix>``);
    ``ShoalError`` when the job has no result to download."""
    if not job.result_available or not job.download_url:
        raise ShoalError(None, "no result to download", f"job {job.id} is {job.status}")
    parts = [p.url for p in job.download_parts or []] or [job.download_url or ""]
    paths = [dest] + [
        dest.with_name(f"{dest.stem}.part{n}{dest.suffix}") for n in range(2, len(parts) + 1)
    ]
    return list(zip(parts, paths, strict=True))


class Poll:
    """When ``wait`` asks again: ``poll`` seconds, growing by half while the counters stand
    still (up to ``max_poll``), back to ``poll`` when they move; never past the deadline."""

    def __init__(self, job_id: str, timeout: float | None, poll: float, max_poll: float) -> None:
        self.job_id = job_id
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.poll = poll
        self.max_poll = max_poll
        self.interval = poll
        self.seen: tuple[Any, ...] = ()

    def next(self, job: Job) -> float:
        """Seconds until the next ask, after ``job`` (not final) was read; ``TimeoutError``
        past the deadline."""
        now = (job.status, job.urls_done, job.urls_total)
        self.interval = self.poll if now != self.seen else min(self.interval * 1.5, self.max_poll)
        self.seen = now
        if self.deadline is None:
            return self.interval
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"job {self.job_id} is still {job.status}")
        return min(self.interval, left)


# --- schedules --------------------------------------------------------------------------------


def _schedule_path(schedule_id: str) -> str:
    return f"/v1/schedules/{schedule_id}"


def list_schedules(limit: int, offset: int) -> Call[SchedulePage]:
    params = {"limit": limit, "offset": offset}
    return Call("GET", "/v1/schedules", _model(SchedulePage), params)


def get_schedule(schedule_id: str) -> Call[Schedule]:
    return Call("GET", _schedule_path(schedule_id), _model(Schedule))


def create_schedule(body: Mapping[str, Any]) -> Call[Schedule]:
    return Call("POST", "/v1/schedules", _model(Schedule), json=dict(body))


def patch_schedule(schedule_id: str, changes: Mapping[str, Any]) -> Call[Schedule]:
    return Call("PATCH", _schedule_path(schedule_id), _model(Schedule), json=dict(changes))


def delete_schedule(schedule_id: str) -> Call[None]:
    return Call("DELETE", _schedule_path(schedule_id), _nothing)


def run_schedule(schedule_id: str) -> Call[SubmittedJob]:
    return Call("POST", _schedule_path(schedule_id) + "/run", _model(SubmittedJob))
