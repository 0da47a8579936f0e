"""``GET /v1/downloads/...``: signed, expiring links to output files (no API key).

The same links serve a job's change report and its screenshots (``screenshot_url``), under the
same rules: the signature, the link's expiry, the job's output expiry and retention.

A local output file is sent by the API. An output on object storage (``s3://``) is answered
with ``307`` to a presigned URL of the store, living ``SHOAL_PRESIGN_TTL_S`` at most and never
past the link's own expiry, so the bytes do not pass through the API; the link itself (and so
the 30-day cap and ``410`` after expiry or removal) stays Shoal's.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse

from api.deps import SettingsDep, StorageDep, StoreDep
from shoal import changes, downloads, screenshots
from shoal.contract import JobSpec
from shoal.errors import Gone, NotFound
from shoal.store import aware, utcnow

router = APIRouter(prefix="/v1/downloads", tags=["downloads"])

_TYPES = {
    ".parquet": "application/vnd.apache.parquet",
    ".csv": "text/csv",
    ".ndjson": "application/x-ndjson",
    ".gz": "application/gzip",
    ".png": "image/png",
}


@router.get(
    "/{job_id}/{filename}",
    summary="Download an output file through a signed link",
    response_class=FileResponse,
    response_model=None,
    responses={
        200: {"description": "The file (local storage, or `SHOAL_PRESIGN_TTL_S=0`)."},
        307: {"description": "Object storage: `Location` is a presigned URL of the file."},
        404: {"description": "Bad signature, or no such file."},
        410: {"description": "The link expired, or the output was removed."},
    },
)
def download(
    job_id: str,
    filename: str,
    store: StoreDep,
    storage: StorageDep,
    settings: SettingsDep,
    expires: Annotated[int, Query()],
    sig: Annotated[str, Query(min_length=16, max_length=128)],
) -> FileResponse | RedirectResponse | StreamingResponse:
    downloads.verify(settings, job_id, filename, expires, sig)
    row = store.get_job(job_id)
    out = next((o for o in (row.outputs or []) if o["name"] == filename), None) if row else None
    if row is not None and out is None:  # the change report's file (shoal.changes)
        url = changes.changes_file(
            storage, row.id, JobSpec.model_validate(row.spec), row.changes, filename
        )
        out = {"url": url} if url is not None else None
    if row is not None and out is None:  # a rendered page's PNG (shoal.screenshots)
        url = screenshots.stored_url(storage, row.id, filename)
        out = {"url": url} if url is not None else None
    if row is None or out is None:
        raise NotFound("no such download")
    expires_at = aware(row.output_expires_at)
    if expires_at is not None and expires_at <= utcnow():
        raise Gone("this job's output has expired")
    if not storage.exists(out["url"]):
        raise Gone("this job's output has been removed")
    media = next(
        (t for ext, t in _TYPES.items() if filename.endswith(ext)), "application/octet-stream"
    )
    local = storage.local_path(out["url"])
    if local is not None:
        return FileResponse(local, media_type=media, filename=filename)
    # the presigned URL must not outlive the link, nor the output's retention
    ttl = min(settings.presign_ttl_s, expires - int(time.time()))
    if expires_at is not None:
        ttl = min(ttl, int((expires_at - utcnow()).total_seconds()))
    if settings.presign_ttl_s > 0 and ttl > 0:
        target = storage.presign(out["url"], ttl, filename=filename, media_type=media)
        if target is not None:
            return RedirectResponse(target, status_code=307, headers={"Cache-Control": "no-store"})

    def _stream():  # type: ignore[no-untyped-def]
        with storage.open(out["url"], "rb") as fh:
            while block := fh.read(1 << 20):
                yield block

    return StreamingResponse(
        _stream(),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
