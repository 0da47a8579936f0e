"""``shoal schedules``: list, get, run, pause, resume, and ``apply FILE.yaml``, which makes the
account's schedules match a file kept in git (see ``shoal.client._apply``).

``apply`` deletes the schedules the file does not name (``--prune``, the default: the file is
the whole truth, as the issue asks: "create, update, delete by name"); ``--no-prune`` only
creates and updates, for a file that holds some of an account's schedules. A file that names
no schedule at all deletes nothing unless ``--allow-empty``: an empty or wrong file must not
wipe an account. ``--dry-run`` prints the plan and changes nothing. A schedule is named on the
command line by its id (``sch_…``) or its name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from shoal.client._apply import Change, FileError, Plan, apply, plan, read_file
from shoal.client._cli import (
    ApiKey,
    AsJson,
    Url,
    connect,
    err,
    fields,
    out,
    print_json,
    report,
    table,
)
from shoal.client._cli_jobs import follow
from shoal.client._client import Client
from shoal.client._errors import ShoalError
from shoal.client._models import Schedule

schedules_app = typer.Typer(
    help="Schedules of a Shoal API (SHOAL_URL, SHOAL_API_KEY); `apply` keeps them in a file.",
    no_args_is_help=True,
)

Ref = Annotated[str, typer.Argument(metavar="ID_OR_NAME", help="sch_… or the schedule's name.")]


def resolve(client: Client, ref: str) -> str:
    """The id of the schedule ``ref`` names (an id is taken as it is)."""
    if ref.startswith("sch_"):
        return ref
    found = client.schedules.find(ref)
    if len(found) != 1:
        how = "no schedule is" if not found else f"{len(found)} schedules are"
        raise ShoalError(None, f"{how} called {ref!r}", "name it by its id (shoal schedules list)")
    return found[0].id


def when(s: Schedule) -> str:
    if s.cron:
        return f"{s.cron} ({s.timezone or 'UTC'})"
    return f"every {s.interval_s} s" if s.interval_s else "-"


@schedules_app.command("list")
def list_schedules(url: Url = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Every schedule of the account."""
    with connect(url, api_key) as client:
        every = list(client.schedules.all())
    if as_json:
        print_json(every)
        return
    table(
        ["ID", "NAME", "WHEN", "PAUSED", "NEXT RUN", "RUNS", "SKIPPED", "LAST JOB"],
        [
            [
                s.id,
                s.name,
                when(s),
                s.paused,
                s.next_runs[0] if s.next_runs and not s.paused else None,
                s.runs,
                s.skipped_runs,
                s.last_job_id,
            ]
            for s in every
        ],
    )


def _show(s: Schedule, as_json: bool) -> None:
    if as_json:
        print_json(s)
        return
    data = s.model_dump(mode="json")
    data["next_runs"] = ", ".join(data.get("next_runs") or []) or None
    fields([(k, v) for k, v in data.items()])


@schedules_app.command("get")
def get(ref: Ref, url: Url = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """One schedule: its body, next runs and counters."""
    with connect(url, api_key) as client:
        s = client.schedules.get(resolve(client, ref))
    _show(s, as_json)


@schedules_app.command("run")
def run(
    ref: Ref,
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Follow the run, then download its result.")
    ] = False,
    out_file: Annotated[Path | None, typer.Option("--out", "-o", help="Implies --wait.")] = None,
    url: Url = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Start a run now: an ordinary job (with --wait, followed as `shoal jobs submit --wait`
    follows one, its change report and quality checks said at the end)."""
    with connect(url, api_key) as client:
        job = client.schedules.run(resolve(client, ref))
        if wait or out_file:
            err.print(f"started {job.id}")
            follow(client, job.id, out_file, None, as_json)
            return
    report(job, f"{job.id} {job.status}", as_json)


@schedules_app.command("pause")
def pause(ref: Ref, url: Url = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Pause: no run starts until it is resumed (the Prefect UI shows it paused too)."""
    with connect(url, api_key) as client:
        s = client.schedules.pause(resolve(client, ref))
    report(s, f"{s.id} {s.name} paused", as_json)


@schedules_app.command("resume")
def resume(ref: Ref, url: Url = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Resume a paused schedule."""
    with connect(url, api_key) as client:
        s = client.schedules.resume(resolve(client, ref))
    report(s, f"{s.id} {s.name} resumed", as_json)


@schedules_app.command("apply")
def apply_file(
    file: Annotated[Path, typer.Argument(help="YAML: a list of schedule bodies with `name`.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan, change nothing.")
    ] = False,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune/--no-prune", help="Delete the account's schedules the file does not name."
        ),
    ] = True,
    allow_empty: Annotated[
        bool, typer.Option(help="Let a file naming no schedule delete them all.")
    ] = False,
    url: Url = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Make the account's schedules match FILE: create, update (PATCH of what differs) and
    delete by name."""
    try:
        wanted = read_file(file)
    except (OSError, FileError) as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    with connect(url, api_key) as client:
        try:
            todo = plan(wanted, list(client.schedules.all()), prune=prune)
        except FileError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(1) from None
        if not wanted and todo.of("delete") and not allow_empty:
            err.print(
                f"[bold red]error:[/] {escape(str(file))} names no schedule: applying it would "
                f"delete all {len(todo.of('delete'))}; pass --allow-empty if that is meant"
            )
            raise typer.Exit(1)
        if not as_json:
            _print_plan(todo)
        if not dry_run and not todo.empty:
            apply(client.schedules, todo)
    if as_json:
        print_json({"dry_run": dry_run, "changes": [c.as_json() for c in todo.changes]})
    elif dry_run:
        out.print(f"Plan: {todo.summary()} (dry run: nothing changed).")
    else:
        out.print(f"Applied: {todo.summary()}.")


_MARK = {"create": "[green]+", "update": "[yellow]~", "delete": "[red]-", "unchanged": "[dim]="}


def _print_plan(todo: Plan) -> None:
    for c in todo.changes:
        out.print(f"{_MARK[c.action]} {c.action:<9}[/] {escape(c.name)}{_detail(c)}")


def _detail(c: Change) -> str:
    ident = f" ({c.schedule_id})" if c.schedule_id else ""
    if c.action == "update":
        return f"{ident}: " + escape(", ".join(c.differs))
    if c.action == "create":
        return escape(_when_body(c.fields))
    return ident


def _when_body(body: dict[str, Any]) -> str:
    if body.get("cron"):
        return f" ({body['cron']}, {body.get('timezone', 'UTC')})"
    return f" (every {body['interval_s']} s)" if body.get("interval_s") else ""
