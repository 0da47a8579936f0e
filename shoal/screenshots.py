"""Screenshots of rendered pages: stored beside the job's output, reached by signed links.

A page's PNG is written to ``jobs/<id>/screenshots/<input_index>.png`` (the local folder or the
object store, like every file of the job) as soon as its page is rendered, so retention, which
removes ``jobs/<id>/``, removes it with the rest. The row's ``screenshot_url`` is a download link
signed as the output's are (``shoal.downloads``), for the name ``screenshot-<input_index>.png``:
valid for the job's ``output.expires_in_s`` (default ``SHOAL_DEFAULT_LINK_EXPIRY_S``, at most
30 days) counted from when the page was rendered. The output's link counts from when the job
ended, so a screenshot's link never outlives it; like a download, it answers ``410`` once the
job's output has expired or was removed.
"""

from __future__ import annotations

import re
from datetime import timedelta

from shoal import downloads
from shoal.settings import Settings
from shoal.storage import Storage
from shoal.store import utcnow

_NAME = re.compile(r"screenshot-(\d{1,12})\.png")


def file_name(index: int) -> str:
    """The download name of the screenshot of input ``index``."""
    return f"screenshot-{index}.png"


def _url(storage: Storage, job_id: str, index: int) -> str:
    return storage.url("jobs", job_id, "screenshots", f"{index}.png")


def stored_url(storage: Storage, job_id: str, filename: str) -> str | None:
    """Where the screenshot a download name stands for is stored; None for another name."""
    m = _NAME.fullmatch(filename)
    return _url(storage, job_id, int(m.group(1))) if m else None


def save(
    storage: Storage,
    settings: Settings,
    job_id: str,
    index: int,
    png: bytes,
    expires_in_s: int | None,
) -> str:
    """Store the PNG of input ``index`` (atomically: a retried chunk replaces it whole); its
    signed link."""
    storage.write_bytes_atomic(_url(storage, job_id, index), png)
    life = timedelta(seconds=expires_in_s or settings.default_link_expiry_s)
    return downloads.sign(settings, job_id, file_name(index), utcnow() + life)
