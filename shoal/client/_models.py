"""What the client returns: the contract's response models, read tolerantly.

The shapes come from ``shoal.contract`` (the one source of truth for field names), but a client
is often older than the server it calls: fields the server adds (a job's ``changes`` or
``quality``, a schedule's next fields) are kept as extra attributes instead of being dropped or
refused, so ``job.model_dump()`` shows everything the server said.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from shoal.contract import (
    FINAL_STATUSES,
    RESULT_STATUSES,
    JobCreated,
    JobPublic,
    PageResult,
    ScheduleList,
    SchedulePublic,
    UploadPublic,
)

_TOLERANT = ConfigDict(extra="allow")


class Job(JobPublic):
    """A job as ``GET /v1/jobs/{id}`` shows it."""

    model_config = _TOLERANT

    @property
    def final(self) -> bool:
        """The job has ended (``completed``, ``partial``, ``cancelled`` or ``failed``)."""
        return self.status in FINAL_STATUSES

    @property
    def has_result(self) -> bool:
        return self.result_available and self.status in RESULT_STATUSES


class SubmittedJob(JobCreated):
    """The answer of ``POST /v1/jobs`` (and of a retry or a schedule's run now)."""

    model_config = _TOLERANT


class Result(PageResult):
    """One result row."""

    model_config = _TOLERANT


class Upload(UploadPublic):
    """An uploaded URL file."""

    model_config = _TOLERANT


class Schedule(SchedulePublic):
    """A schedule as ``GET /v1/schedules/{id}`` shows it."""

    model_config = _TOLERANT


class JobPage(BaseModel):
    jobs: list[Job]
    total: int
    limit: int
    offset: int


class SchedulePage(ScheduleList):
    schedules: list[Schedule]  # type: ignore[assignment]
