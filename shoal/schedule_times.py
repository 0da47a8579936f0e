"""When a schedule runs: its cron read on its zone's wall clock, or its interval counted from
its creation. The times Prefect's scheduler makes its runs at (``tests/unit/test_schedules.py``
compares them with Prefect's ``CronSchedule``), so ``next_runs`` announces what will happen."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from shoal.store import ScheduleRow, aware, utcnow

#: how many upcoming times ``next_runs`` lists
NEXT_RUNS = 5


def cron_problem(cron: str) -> str | None:
    """None when ``cron`` is five cron fields Shoal and Prefect both read, else why not."""
    if len(cron.split()) != 5:
        return "give five fields: minute hour day-of-month month day-of-week"
    try:
        CronSim(cron, datetime(2000, 1, 1))
    except CronSimError as exc:
        return f"not a valid cron expression: {exc}"
    return None


def zone(name: str) -> ZoneInfo | None:
    """The IANA timezone of that name, or None when there is none."""
    if not name or name != name.strip() or name.startswith("/") or ".." in name:
        return None  # ZoneInfo reads files by name: nothing path-like
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _cron_times(cron: str, tz: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """The cron's times after ``after``, in UTC: the cron is read on the zone's wall clock, so
    ``0 2 * * *`` stays 02:00 local across DST changes. A wall time the spring change skips
    runs at the same instant its zone's pre-change offset gives (02:30 -> 03:30 summer time);
    one the autumn change repeats runs once, at its first occurrence. Prefect's scheduler reads
    cron schedules the same way (``CronSchedule``: wall times localized with ``fold=0``)."""
    local = after.astimezone(tz).replace(tzinfo=None)
    seen: set[datetime] = set()
    # one hour back: a wall time the autumn change repeats may still be ahead in UTC
    for wall in CronSim(cron, local - timedelta(hours=1)):
        at = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if at > after and at not in seen:
            seen.add(at)
            yield at


def next_runs(row: ScheduleRow, now: datetime | None = None, n: int = NEXT_RUNS) -> list[datetime]:
    """The next ``n`` run times of the schedule after ``now``, in UTC (none when paused).

    An interval schedule runs at ``created_at + k * interval_s`` (Prefect's anchor date)."""
    now = now or utcnow()
    if row.paused:
        return []
    if row.cron:
        tz = zone(row.timezone or "UTC") or ZoneInfo("UTC")
        found: list[datetime] = []
        for at in _cron_times(row.cron, tz, now):
            found.append(at)
            if len(found) == n:
                break
        return found
    anchor = anchor_of(row)
    step = timedelta(seconds=row.interval_s or 60)
    k = max(0, int((now - anchor) / step) + 1)
    return [anchor + step * (k + i) for i in range(n)]


def anchor_of(row: ScheduleRow) -> datetime:
    """The instant an interval schedule counts from (its creation, to the second)."""
    created = aware(row.created_at) or utcnow()
    return created.replace(microsecond=0)
