"""Reads and writes of schedules and of the jobs their runs are.

A run of a schedule is started in one transaction (``start_schedule_run``) with the schedule's
row locked: whether this flow run already made its job (a retried or crashed start makes no
second job), whether the previous run has ended (else the run is skipped and counted), and the
next ``run_number`` (the schedule's ``runs`` raised in the transaction that inserts the job).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shoal.contract import FINAL_STATUSES
from shoal.errors import Conflict

from ._db import session_scope
from ._tables import JobRow, ScheduleRow, utcnow

#: statuses a run can be compared with
COMPARABLE = ("completed", "partial")


@dataclass(frozen=True)
class RunStart:
    """What ``start_schedule_run`` did: ``job`` is the run's job (``created`` when this call
    inserted it; else the job this flow run made before); ``running`` is the unfinished earlier
    run that made this one skip (then ``job`` is None); both None: the schedule is gone."""

    job: JobRow | None = None
    created: bool = False
    running: JobRow | None = None


#: fills a run's job row before it is inserted: (row, run_number, previous_job_id)
FillRun = Callable[[JobRow, int, str | None], None]


def _previous_run(s: Session, schedule_id: str, run_number: int | None) -> JobRow | None:
    where = [
        JobRow.schedule_id == schedule_id,
        JobRow.status.in_(COMPARABLE),
        JobRow.results_removed_at.is_(None),
    ]
    if run_number is not None:
        where.append(JobRow.run_number < run_number)
    return s.scalar(select(JobRow).where(*where).order_by(JobRow.run_number.desc()).limit(1))


class ScheduleRecords:
    """The schedule part of ``Store`` (a mixin: ``self.url`` is the store's database URL)."""

    url: str

    def insert_schedule(self, row: ScheduleRow) -> ScheduleRow:
        """Insert a new schedule; ``Conflict`` when the account has one of that name."""
        try:
            with session_scope(self.url) as s:
                s.add(row)
        except IntegrityError as exc:
            raise Conflict(f"the account already has a schedule named {row.name!r}") from exc
        return row

    def get_schedule(self, schedule_id: str, account_id: str | None = None) -> ScheduleRow | None:
        """The schedule, or None when unknown (or another account's, given ``account_id``)."""
        with session_scope(self.url) as s:
            row = s.get(ScheduleRow, schedule_id)
        if row is None or (account_id is not None and row.account_id != account_id):
            return None
        return row

    def list_schedules(
        self, account_id: str, limit: int, offset: int
    ) -> tuple[list[ScheduleRow], int]:
        """The account's schedules, newest first, and how many it has."""
        where = ScheduleRow.account_id == account_id
        with session_scope(self.url) as s:
            total = s.scalar(select(func.count()).select_from(ScheduleRow).where(where)) or 0
            rows = s.scalars(
                select(ScheduleRow)
                .where(where)
                .order_by(ScheduleRow.created_at.desc(), ScheduleRow.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
        return list(rows), total

    def all_schedules(self) -> list[ScheduleRow]:
        """Every schedule of every account (the reconcile with Prefect reads them all)."""
        with session_scope(self.url) as s:
            return list(s.scalars(select(ScheduleRow).order_by(ScheduleRow.id)).all())

    def update_schedule(self, schedule_id: str, **values: Any) -> ScheduleRow | None:
        """Write ``values`` (and ``updated_at``); the row after, or None when it is gone.
        ``Conflict`` when a new ``name`` is another schedule's of the account."""
        try:
            with session_scope(self.url) as s:
                s.execute(
                    update(ScheduleRow)
                    .where(ScheduleRow.id == schedule_id)
                    .values(updated_at=utcnow(), **values)
                )
                return s.get(ScheduleRow, schedule_id)
        except IntegrityError as exc:
            raise Conflict(
                f"the account already has a schedule named {values.get('name')!r}"
            ) from exc

    def delete_schedule(self, schedule_id: str) -> bool:
        """Remove the schedule row (its jobs stay, with their ``schedule_id``)."""
        with session_scope(self.url) as s:
            res = s.execute(delete(ScheduleRow).where(ScheduleRow.id == schedule_id))
            return bool(res.rowcount)  # type: ignore[attr-defined]

    def previous_run(self, schedule_id: str, run_number: int | None = None) -> JobRow | None:
        """The latest run of the schedule before ``run_number`` (any, given None) that ended
        ``completed`` or ``partial`` and whose results are still kept: what a run compares
        with, and whose rows a conditional fetch's 304 carries forward."""
        with session_scope(self.url) as s:
            return _previous_run(s, schedule_id, run_number)

    def unfinished_run(self, schedule_id: str) -> JobRow | None:
        """A run of the schedule that has not ended, if any (the oldest)."""
        with session_scope(self.url) as s:
            return _unfinished(s, schedule_id)

    def schedule_job_of(self, schedule_id: str, flow_run_id: str) -> JobRow | None:
        """The job flow run ``flow_run_id`` made for the schedule, if it made one."""
        with session_scope(self.url) as s:
            return s.scalar(
                select(JobRow).where(
                    JobRow.schedule_id == schedule_id, JobRow.flow_run_id == flow_run_id
                )
            )

    def uploads_of_schedules(self) -> set[str]:
        """Upload ids that schedules' job templates use (retention keeps them)."""
        with session_scope(self.url) as s:
            templates = s.scalars(select(ScheduleRow.job)).all()
        found = set()
        for job in templates:
            upload_id = ((job or {}).get("input") or {}).get("upload_id")
            if upload_id:
                found.add(upload_id)
        return found

    def count_skipped_run(self, schedule_id: str, flow_run_id: str) -> None:
        """Count flow run ``flow_run_id`` of the schedule as skipped (once, however often it
        starts)."""
        with session_scope(self.url) as s:
            _count_skip(s, schedule_id, flow_run_id)

    def start_schedule_run(
        self,
        schedule_id: str,
        row: JobRow,
        fill: FillRun,
        *,
        flow_run_id: str | None = None,
        max_active: int | None = None,
    ) -> RunStart:
        """Insert ``row`` as the schedule's next run, once (see the module docstring).

        With ``flow_run_id`` (a run Prefect's scheduler started), a job that flow run made
        before is returned instead, and an unfinished earlier run makes this one skip: counted
        in ``skipped_runs`` once per flow run. Without it (run now), an unfinished earlier run
        is returned in ``running`` and nothing is counted. ``fill`` completes the row with
        its run number and the previous comparable run's id, before the insert.
        ``max_active`` as in ``Store.insert_job`` (``LimitExceeded``)."""
        from ._repo import _check_active

        with session_scope(self.url) as s:
            # a no-op write: this schedule's starts queue up behind one another
            res = s.execute(
                update(ScheduleRow).where(ScheduleRow.id == schedule_id).values(id=ScheduleRow.id)
            )
            if not res.rowcount:  # type: ignore[attr-defined]
                return RunStart()
            if flow_run_id is not None:
                made = s.scalar(
                    select(JobRow).where(
                        JobRow.schedule_id == schedule_id, JobRow.flow_run_id == flow_run_id
                    )
                )
                if made is not None:
                    return RunStart(job=made)
            running = _unfinished(s, schedule_id)
            if running is not None:
                if flow_run_id is not None:
                    _count_skip(s, schedule_id, flow_run_id)
                return RunStart(running=running)
            schedule = s.get(ScheduleRow, schedule_id)
            assert schedule is not None
            if max_active is not None:
                _check_active(s, row.account_id, max_active)
            number = (schedule.runs or 0) + 1
            previous = _previous_run(s, schedule_id, number)
            row.schedule_id = schedule_id
            row.run_number = number
            row.flow_run_id = flow_run_id
            fill(row, number, previous.id if previous is not None else None)
            schedule.runs = number
            schedule.last_job_id = row.id
            schedule.updated_at = utcnow()
            s.add(row)
            s.flush()
        return RunStart(job=row, created=True)


def _count_skip(s: Session, schedule_id: str, flow_run_id: str) -> None:
    s.execute(
        update(ScheduleRow)
        .where(
            ScheduleRow.id == schedule_id,
            func.coalesce(ScheduleRow.last_skipped_flow_run, "") != flow_run_id,
        )
        .values(skipped_runs=ScheduleRow.skipped_runs + 1, last_skipped_flow_run=flow_run_id)
    )


def _unfinished(s: Session, schedule_id: str) -> JobRow | None:
    return s.scalar(
        select(JobRow)
        .where(JobRow.schedule_id == schedule_id, JobRow.status.not_in(FINAL_STATUSES))
        .order_by(JobRow.run_number)
        .limit(1)
    )
