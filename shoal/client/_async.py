"""``AsyncClient``: :class:`~shoal.client.Client` for asyncio code (an async Prefect flow
calling Shoal, a FastAPI app), on ``httpx.AsyncClient``. The same calls, awaited; the requests
and how answers are read are shared (``_calls``), and so is the retry policy (``_http``).

    async with AsyncClient() as shoal:
        job = await shoal.submit(["https://…"], extract={"price": "number"})
        done = await shoal.wait(job.id)
        async for row in shoal.results(done.id):
            ...
"""

from __future__ import annotations

import builtins
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

from shoal.client import _calls as calls
from shoal.client import _files as files
from shoal.client._errors import ShoalError
from shoal.client._http import AsyncHttp
from shoal.client._models import Job, JobPage, Result, SubmittedJob, Upload
from shoal.client._schedules import AsyncSchedules

AsyncProgress = Callable[[Job], Awaitable[None] | None]


class AsyncClient:
    """The asyncio twin of ``Client`` (same arguments, same answers, awaited)."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = AsyncHttp(url, api_key, timeout=timeout, retries=retries, transport=transport)
        self.url = self._http.base
        self.schedules = AsyncSchedules(self._http)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.close()

    async def submit(
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
        """See ``Client.submit``."""
        calls.one_input(urls, file, upload_id, s3_uri)
        if file is not None:
            upload_id = (await self.upload(file)).id
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
        return await self.submit_body(body, idempotency_key=idempotency_key)

    async def submit_body(
        self, body: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> SubmittedJob:
        return await self._http.run(calls.create_job(body, idempotency_key))

    async def get(self, job_id: str) -> Job:
        return await self._http.run(calls.get_job(job_id))

    async def list(
        self,
        status: str | Iterable[str] | None = None,
        *,
        limit: int = 20,
        offset: int = 0,
        schedule_id: str | None = None,
    ) -> JobPage:
        return await self._http.run(calls.list_jobs(status, limit, offset, schedule_id))

    async def cancel(self, job_id: str) -> Job:
        return await self._http.run(calls.cancel_job(job_id))

    async def retry(self, job_id: str) -> SubmittedJob:
        return await self._http.run(calls.retry_job(job_id))

    async def wait(
        self,
        job_id: str,
        *,
        on_progress: AsyncProgress | None = None,
        timeout: float | None = None,
        poll: float = 0.5,
        max_poll: float = 5.0,
    ) -> Job:
        """See ``Client.wait``; ``on_progress`` may be a coroutine function."""
        pacing = calls.Poll(job_id, timeout, poll, max_poll)
        while True:
            job = await self.get(job_id)
            if on_progress is not None:
                maybe = on_progress(job)
                if maybe is not None:
                    await maybe
            if job.final:
                return job
            await self._http.sleep(pacing.next(job))

    async def results(
        self, job_id: str, *, page_size: int = 1000, offset: int = 0
    ) -> AsyncIterator[Result]:
        at: int | None = offset
        while at is not None:
            page = await self._http.run(calls.results_page(job_id, page_size, at))
            for row in page.results():
                yield row
            at = page.next

    async def download(self, job: str | Job, dest: str | os.PathLike[str]) -> builtins.list[Path]:
        """See ``Client.download``."""
        if isinstance(job, str):
            job = await self.get(job)
        targets = calls.download_targets(job, Path(dest))
        async with httpx.AsyncClient(
            timeout=self._http.client.timeout, follow_redirects=True
        ) as plain:
            for url, path in targets:
                await _stream_to(plain, url, path)
        return [path for _, path in targets]

    async def upload(
        self, file: str | os.PathLike[str], *, media_type: str | None = None
    ) -> Upload:
        """See ``Client.upload`` (a path here: it is read again for a retry)."""
        path = Path(file)
        headers = calls.upload_headers(path.name, media_type, path.stat().st_size)

        async def body() -> AsyncIterator[bytes]:
            for block in files.file_blocks(path):
                yield block

        r = await self._http.request("POST", "/v1/uploads", headers=headers, body=body)
        return Upload.model_validate(r.json())

    async def get_upload(self, upload_id: str) -> Upload:
        return await self._http.run(calls.get_upload(upload_id))


async def _stream_to(plain: httpx.AsyncClient, url: str, path: Path) -> None:
    async with plain.stream("GET", url) as r:
        if not r.is_success:
            await r.aread()
            raise ShoalError.from_response(r)
        with files.replacing(path) as f:
            async for block in r.aiter_bytes(files.BLOCK):
                f.write(block)
