"""Screenshots of rendered pages: stored beside the job's output, reached by signed links.

A page's PNG is written to ``jobs/<id>/screenshots/<input_index>.png`` (the local folder or the
object store, like every file of the job) as soon as its page is rendered, so retention, which
removes ``jobs/<id>/``, removes it with the rest. Its row keeps the download name
``screenshot-<input_index>.png`` (part column ``screenshot_url``), not a link: the link is
signed when rows leave Shoal (the output files, results pages and streams; ``links``), so it
follows the output's expiry rules exactly:

- once the job has ended, every ``screenshot_url`` expires when its ``download_url`` does
  (``download_url_expires_at``: ``output.expires_in_s`` from the end), whether read in the
  output file, a results page or a stream, and whenever it was read;
- rows of a running job (results read while it runs) carry links valid for
  ``output.expires_in_s`` from when they were read: the output's link, counted from a later
  end, always outlives them; read the rows again after the end for links as long as it.

Like a download, a link answers ``410`` once the job's output has expired or was removed.
Parts written before this kept a signed link in the column; they are signed anew the same way
(the name comes from ``input_index``), so an old job's rows follow the same rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta

from shoal import downloads
from shoal.contract import JobSpec
from shoal.settings import Settings
from shoal.storage import Storage
from shoal.store import JobRow, aware, utcnow

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


def save(storage: Storage, job_id: str, index: int, png: bytes) -> str:
    """Store the PNG of input ``index`` (atomically: a retried chunk replaces it whole); the
    download name its row keeps (signed when the row is served: ``links``)."""
    storage.write_bytes_atomic(_url(storage, job_id, index), png)
    return file_name(index)


def carry(storage: Storage, from_job: str, from_index: int, job_id: str, index: int) -> str:
    """Copy the screenshot of ``from_job``'s input ``from_index`` to this job's input ``index``
    (a row a ``304`` carried forward: ``shoal.conditional``); its download name. Raises
    ``FileNotFoundError`` when the previous one is gone (retention)."""
    storage.copy(_url(storage, from_job, from_index), _url(storage, job_id, index))
    return file_name(index)


def links(settings: Settings, job_id: str, expires_at: datetime) -> Callable[[int], str]:
    """``input_index`` -> the signed link of its screenshot, valid until ``expires_at``."""
    return lambda index: downloads.sign(settings, job_id, file_name(index), expires_at)


def expiry(row: JobRow, spec: JobSpec, settings: Settings) -> datetime:
    """When the screenshot links of the job's rows read now expire: with the output's link
    once the job has ended, else ``output.expires_in_s`` from now (module docstring)."""
    ended = aware(row.output_expires_at)
    if ended is not None:
        return ended
    life = timedelta(seconds=spec.output.expires_in_s or settings.default_link_expiry_s)
    return utcnow() + life


def links_of(row: JobRow, spec: JobSpec, settings: Settings) -> Callable[[int], str]:
    """``links`` for the job's rows read now (``expiry``)."""
    return links(settings, row.id, expiry(row, spec, settings))
