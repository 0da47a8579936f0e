"""``GET /v1/downloads/...``: signed, expiring links to output files (no API key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, StreamingResponse

from api.deps import SettingsDep, StorageDep, StoreDep
from shoal import downloads
from shoal.errors import Gone, NotFound
from shoal.store import aware, utcnow

router = APIRouter(prefix="/v1/downloads", tags=["downloads"])

_TYPES = {
    ".parquet": "application/vnd.apache.parquet",
    ".csv": "text/csv",
    ".ndjson": "application/x-ndjson",
    ".gz": "application/gzip",
}


@router.get(
    "/{job_id}/{filename}",
    summary="Download an output file through a signed link",
    response_class=FileResponse,
    response_model=None,
)
def download(
    job_id: str,
    filename: str,
    store: StoreDep,
    storage: StorageDep,
    settings: SettingsDep,
    expires: Annotated[int, Query()],
    sig: Annotated[str, Query(min_length=16, max_length=128)],
) -> FileResponse | StreamingResponse:
    downloads.verify(settings, job_id, filename, expires, sig)
    row = store.get_job(job_id)
    out = next((o for o in (row.outputs or []) if o["name"] == filename), None) if row else None
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

    def _stream():  # type: ignore[no-untyped-def]
        with storage.open(out["url"], "rb") as fh:
            while block := fh.read(1 << 20):
                yield block

    return StreamingResponse(
        _stream(),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
