"""``Client``: jobs, uploads, results and downloads of a Shoal API, typed.

    from shoal.client import Client

    with Client() as shoal:  # SHOAL_URL, SHOAL_API_KEY
        job = shoal.submit(file="urls.csv", extract={"name": "string", "price": "number"})
        done = shoal.wait(job.id, on_progress=lambda j: print(j.urls_done, j.urls_total))
        for row in shoal.results(done.id):
            print(row.url, row.data)
        shoal.download(done.id, "catalog.ndjson")

Every error answer raises :class:`ShoalError` (status, title, detail, field errors).
"""

from __future__ import annotations

import builtins
import functools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import httpx

from shoal.client import _calls as calls
from shoal.client import _files as files
from shoal.client._errors import ShoalError
from shoal.client._http import Http
from shoal.client._models import Job, JobPage, Result, SubmittedJob, Upload
from shoal.client._schedules import Schedules

Progress = Callable[[Job], None]


class Client:
    """A Shoal API: ``url`` (else ``SHOAL_URL``, else ``http://127.0.0.1:8000``) and
    ``api_key`` (else ``SHOAL_API_KEY``).

    ``retries`` bounds how often one request is repeated after a ``429``/``503`` or a
    connection that failed (see ``shoal.client._http``). ``schedules`` holds the schedule
    calls. Use it as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = Http(url, api_key, timeout=timeout, retries=retries, transport=transport)
        self.url = self._http.base
        self.schedules = Schedules(self._http)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- jobs ------------------------------------------------------------------------------

    def submit(
        self,
        urls: Iterable[str | Mapping[str, Any]] | None = None,
        *,
        file: str | os.PathLike[str] | None = None,
        upload_id: str | None = None,
        s3_uri: str | None = None,
        role_arn: str | None = None,
        extract: Mapping[str, str] | None = None,
        selectors: Mapping[str, str] | None = None,
        format: str | None = None,
        gzip: bool | None = None,
        name: str | None = None,
        defaults: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> SubmittedJob:
        """Start a job over exactly one input: inline ``urls`` (up to the inline limit), a
        ``file`` (uploaded first, see :meth:`upload`), an ``upload_id`` or an ``s3_uri``.

        ``extract``, ``selectors`` and ``defaults`` become the job's ``defaults``; ``format``
        and ``gzip`` its ``output``; other keyword arguments are top-level fields of the body
        (``concurrency``, ``priority``, ``webhook``, ``compare``, ``quality``...). An
        ``Idempotency-Key`` is sent (a new one unless given), so a retried request never
        makes a second job."""
        calls.one_input(urls, file, upload_id, s3_uri)
        if file is not None:
            upload_id = self.upload(file).id
        body = calls.job_body(
            urls=urls,
            upload_id=upload_id,
            s3_uri=s3_uri,
            role_arn=role_arn,
            extract=extract,
            selectors=selectors,
            format=format,
            gzip=gzip,
            name=name,
            defaults=defaults,
            fields=fields,
        )
        return self.submit_body(body, idempotency_key=idempotency_key)

    def submit_body(
        self, body: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> SubmittedJob:
        """``POST /v1/jobs`` with ``body`` as written (CONTRACT.md, "Create a job")."""
        return self._http.run(calls.create_job(body, idempotency_key))

    def get(self, job_id: str) -> Job:
        return self._http.run(calls.get_job(job_id))

    def list(
        self,
        status: str | Iterable[str] | None = None,
        *,
        limit: int = 20,
        offset: int = 0,
        schedule_id: str | None = None,
    ) -> JobPage:
        """One page of the account's jobs, newest first; ``status`` filters (one or several)."""
        return self._http.run(calls.list_jobs(status, limit, offset, schedule_id))

    def cancel(self, job_id: str) -> Job:
        """Ask a graceful cancel (``409`` when the job has already ended)."""
        return self._http.run(calls.cancel_job(job_id))

    def retry(self, job_id: str) -> SubmittedJob:
        """A new job over the URLs that errored (``409`` when none did)."""
        return self._http.run(calls.retry_job(job_id))

    def wait(
        self,
        job_id: str,
        *,
        on_progress: Progress | None = None,
        timeout: float | None = None,
        poll: float = 0.5,
        max_poll: float = 5.0,
    ) -> Job:
        """Poll the job until it is final; ``on_progress(job)`` sees every answer.

        The interval starts at ``poll`` and grows by half each time the counters did not move
        (up to ``max_poll``), back to ``poll`` when they did: a long quiet job costs few
        requests, a moving one shows its progress. Past ``timeout`` seconds: ``TimeoutError``
        (the job goes on)."""
        pacing = calls.Poll(job_id, timeout, poll, max_poll)
        while True:
            job = self.get(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.final:
                return job
            self._http.sleep(pacing.next(job))

    # --- results ---------------------------------------------------------------------------

    def results(self, job_id: str, *, page_size: int = 1000, offset: int = 0) -> Iterator[Result]:
        """Every result row so far, in input order, fetched a page at a time
        (``GET /v1/jobs/{id}/results``). While the job runs, the rows finished so far."""
        at: int | None = offset
        while at is not None:
            page = self._http.run(calls.results_page(job_id, page_size, at))
            yield from page.results()
            at = page.next

    def download(self, job: str | Job, dest: str | os.PathLike[str]) -> builtins.list[Path]:
        """Stream the job's result file to ``dest`` (written whole, then renamed into place);
        the paths written. An output split into parts (``download_parts``) gives ``dest`` for
        the first part and ``<stem>.part<N><suffix>`` beside it for the others.

        The signed link needs no key; it may redirect (to S3)."""
        if isinstance(job, str):
            job = self.get(job)
        targets = calls.download_targets(job, Path(dest))
        for url, path in targets:
            _stream_to(url, path, self._http.client.timeout)
        return [path for _, path in targets]

    # --- uploads ---------------------------------------------------------------------------

    def upload(
        self, file: str | os.PathLike[str] | IO[bytes], *, media_type: str | None = None
    ) -> Upload:
        """``POST /v1/uploads`` with a URL file, streamed (never read whole): NDJSON (``.ndjson``,
        ``.jsonl``, ``.txt`` with a URL per line) or CSV (``.csv``, a ``url`` column); a ``.gz``
        name is sent as gzip. Other names let the server tell by the content."""
        if not isinstance(file, str | os.PathLike):
            body = _once(file)
            headers = calls.upload_headers(getattr(file, "name", None), media_type)
        else:
            path = Path(file)
            headers = calls.upload_headers(path.name, media_type, path.stat().st_size)
            body = functools.partial(files.file_blocks, path)
        r = self._http.request("POST", "/v1/uploads", headers=headers, body=body)
        return Upload.model_validate(r.json())

    def get_upload(self, upload_id: str) -> Upload:
        return self._http.run(calls.get_upload(upload_id))


def _once(stream: IO[bytes]) -> Callable[[], Iterator[bytes]]:
    """A body from an open stream: it can be sent once (a retry would find it read)."""
    used = False

    def body() -> Iterator[bytes]:
        nonlocal used
        if used:
            raise ShoalError(None, "cannot resend a stream", "pass a path to retry an upload")
        used = True
        yield from files.blocks(stream)

    return body


def _stream_to(url: str, path: Path, timeout: httpx.Timeout) -> None:
    with (
        httpx.Client(timeout=timeout, follow_redirects=True) as plain,
        plain.stream("GET", url) as r,
    ):
        if not r.is_success:
            r.read()
            raise ShoalError.from_response(r)
        with files.replacing(path) as f:
            for block in r.iter_bytes(files.BLOCK):
                f.write(block)
