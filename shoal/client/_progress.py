"""The live progress bar of ``shoal jobs submit --wait``: URLs done of total, errored, rate and
ETA, drawn with rich on stderr (stdout stays for ``--json``).

The ETA is the server's ``eta_s`` (from the job's measured throughput across all its chunks);
rich's own estimate from the bar's samples stands in while the server has none. The rate is
rich's (URLs done per second over the last 30 s of polls) while the job runs, and the whole
run's once it has ended.
"""

from __future__ import annotations

from datetime import timedelta

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from shoal.client._models import Job


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.fields.get("rate") or task.finished_speed or task.speed
        return Text("- URLs/s" if speed is None else f"{speed:,.0f} URLs/s", style="cyan")


class _Eta(ProgressColumn):
    def render(self, task: Task) -> Text:
        eta = task.fields.get("eta_s")
        if eta is None:
            eta = task.time_remaining
        if task.finished:
            eta = 0
        return Text("ETA -:--:--" if eta is None else f"ETA {timedelta(seconds=int(eta))}")


class _Errored(ProgressColumn):
    def render(self, task: Task) -> Text:
        n = task.fields.get("errored", 0)
        return Text(f"{n:,} errored", style="red" if n else "dim")


class JobBar:
    """A context manager; call it with each polled :class:`Job` (``Client.wait``'s
    ``on_progress``)."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("URLs"),
            _Errored(),
            _Rate(),
            _Eta(),
            TimeElapsedColumn(),
            console=console,
            refresh_per_second=4,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> JobBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, job: Job) -> None:
        label = f"{job.id} {job.status:<9}"  # the bar keeps its place as the status changes
        if self.task is None:
            self.task = self.progress.add_task(label, total=job.urls_total, errored=0)
        self.progress.update(
            self.task,
            description=label,
            total=job.urls_total,
            completed=job.urls_done,
            errored=job.urls_errored,
            eta_s=job.eta_s,
            rate=_overall_rate(job),
        )


def _overall_rate(job: Job) -> float | None:
    """URLs a second over the whole run, once it has ended (a short job ends between two
    polls, before rich has samples to tell a rate from)."""
    if not job.final or job.started_at is None or job.completed_at is None:
        return None
    took = (job.completed_at - job.started_at).total_seconds()
    return job.urls_done / took if took > 0 else None
