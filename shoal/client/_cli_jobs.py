"""``shoal jobs``: submit (and wait with a progress bar, then download), list, get, cancel,
retry, download and results, on :class:`shoal.client.Client`.

Exit codes: 0 when the command did what it was asked (``submit --wait``: the job ended
``completed`` or ``partial``, its errored URLs are in its output); 1 for an error answer, or
when the job waited for ended ``failed`` or ``cancelled``; 2 for a usage error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

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
from shoal.client._client import Client
from shoal.client._models import Job
from shoal.client._progress import JobBar

jobs_app = typer.Typer(help="Jobs of a Shoal API (SHOAL_URL, SHOAL_API_KEY).", no_args_is_help=True)

_REMOTE = ("s3://", "gs://")
_OK = frozenset({"completed", "partial"})


def parse_extract(specs: list[str]) -> dict[str, str]:
    """``name:string,price:number`` (repeatable) as an ``extract`` map; no type is string."""
    schema: dict[str, str] = {}
    for spec in specs:
        for item in filter(None, (s.strip() for s in spec.split(","))):
            name, _, kind = item.partition(":")
            if not name.strip():
                raise typer.BadParameter(f"{item!r}: give field:type", param_hint="--extract")
            schema[name.strip()] = kind.strip() or "string"
    return schema


def parse_selectors(specs: list[str]) -> dict[str, str]:
    """``field=css`` each (the selector may hold ``=`` itself: ``a[rel=next]@href``)."""
    selectors: dict[str, str] = {}
    for spec in specs:
        name, eq, css = spec.partition("=")
        if not eq or not name.strip() or not css.strip():
            raise typer.BadParameter(f"{spec!r}: give field=selector", param_hint="--selector")
        selectors[name.strip()] = css.strip()
    return selectors


def _input(sources: list[str], role_arn: str | None) -> dict[str, Any]:
    """The ``submit`` keyword naming the input: URLs inline, one file, or one object URI."""
    urls = [s for s in sources if s.lower().startswith(("http://", "https://"))]
    remote = [s for s in sources if s.lower().startswith(_REMOTE)]
    files = [s for s in sources if s not in urls and s not in remote]
    if urls and not remote and not files:
        return {"urls": urls}
    if len(remote) == 1 and len(sources) == 1:
        return {"s3_uri": remote[0], "role_arn": role_arn}
    if len(files) == 1 and len(sources) == 1:
        path = Path(files[0])
        if not path.is_file():
            raise typer.BadParameter(f"{files[0]}: no such file", param_hint="SOURCE")
        return {"file": path}
    raise typer.BadParameter(
        "give http(s) URLs, or one URL file, or one s3:// or gs:// URI", param_hint="SOURCE"
    )


@jobs_app.command("submit")
def submit(
    sources: Annotated[
        list[str],
        typer.Argument(
            metavar="SOURCE...",
            help="A URL file (.csv with a url column; .ndjson/.jsonl/.txt, one URL a line; "
            ".gz ok), uploaded first; or http(s) URLs; or one s3:// or gs:// URI.",
        ),
    ],
    extract: Annotated[
        list[str],
        typer.Option("--extract", "-e", help="Typed fields: name:string,price:number."),
    ] = [],  # noqa: B006 - typer reads the default, never mutates it
    selector: Annotated[
        list[str],
        typer.Option("--selector", "-s", help="field=CSS selector (or xpath:...); repeat."),
    ] = [],  # noqa: B006
    fmt: Annotated[
        str | None, typer.Option("--format", "-f", help="ndjson (default), csv or parquet.")
    ] = None,
    gzip: Annotated[bool, typer.Option("--gzip", help="gzip the ndjson/csv output.")] = False,
    name: Annotated[str | None, typer.Option(help="The job's name.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Requests in flight (1-256).")] = None,
    priority: Annotated[str | None, typer.Option(help="low, normal or high.")] = None,
    role_arn: Annotated[str | None, typer.Option(help="IAM role to read an s3:// input.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Show progress until it ends, then download.")
    ] = False,
    out_file: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where to save the result (implies --wait)."),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="With --wait: give up waiting after this many seconds.")
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Repeat a submit safely: the same key, the same job.")
    ] = None,
    url: Url = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Submit a job; with --wait, follow it with a progress bar and download its result."""
    given = _input(sources, role_arn)
    top: dict[str, Any] = {}
    if concurrency is not None:
        top["concurrency"] = concurrency
    if priority is not None:
        top["priority"] = priority
    with connect(url, api_key) as client:
        job = client.submit(
            **given,
            extract=parse_extract(extract) or None,
            selectors=parse_selectors(selector) or None,
            format=fmt,
            gzip=gzip or None,
            name=name,
            idempotency_key=idempotency_key,
            **top,
        )
        if not (wait or out_file):
            report(job, f"{job.id} {job.status} ({_total(job.urls_total)} URLs)", as_json)
            return
        err.print(f"submitted {job.id}")
        follow(client, job.id, out_file, timeout, as_json)


def follow(
    client: Client, job_id: str, target: Path | None, timeout: float | None, as_json: bool
) -> None:
    """Wait with the bar, download what the job made (to ``target``, default ``<job id>.<its
    format>``), say how it ended; exit 1 unless it ended ``completed`` or ``partial``."""
    with JobBar(err) as bar:
        try:
            done = client.wait(job_id, on_progress=bar, timeout=timeout, max_poll=2.0)
        except TimeoutError as exc:
            err.print(f"{exc}; it goes on (shoal jobs get {job_id})")
            raise typer.Exit(1) from None
    saved = []
    if done.has_result:
        saved = client.download(done, target or Path(f"{done.id}{_suffix_of(done)}"))
    if as_json:
        print_json({**done.model_dump(mode="json"), "saved": [str(p) for p in saved]})
    else:
        err.print(_summary(done))
        for path in saved:
            err.print(f"saved {path} ({path.stat().st_size:,} bytes)")
    if done.status not in _OK:
        raise typer.Exit(1)


def _summary(job: Job) -> str:
    """How the job ended, with its change report and failed quality checks when it has them."""
    took = ""
    if job.started_at and job.completed_at:
        took = f" in {(job.completed_at - job.started_at).total_seconds():.1f} s"
    line = (
        f"{job.id} {job.status}: {job.urls_done:,} URLs, {job.urls_errored:,} errored, "
        f"{job.credits_used:,} credits{took}"
    )
    lines = [line + (f" ({job.error})" if job.error else "")]
    changes = job.changes
    if changes:
        counts = ", ".join(
            f"{changes.get(k, 0):,} {k}" for k in ("added", "removed", "changed", "unchanged")
        )
        fields = ", ".join(f"{f} {n:,}" for f, n in (changes.get("fields") or {}).items())
        lines.append(
            f"changes since {changes.get('previous_job_id')}: {counts}"
            + (f" (fields: {fields})" if fields else "")
        )
    quality = job.quality
    if quality and not quality.get("passed", True):
        failed = "; ".join(
            f"{f.get('check')} {f.get('value')} (limit {f.get('limit')})"
            for f in quality.get("failed") or []
        )
        lines.append(f"quality checks failed: {failed}")
    return "\n".join(lines)


def _total(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


@jobs_app.command("list")
def list_jobs(
    status: Annotated[
        str | None, typer.Option(help="Only these statuses (comma-separated).")
    ] = None,
    schedule_id: Annotated[str | None, typer.Option(help="Only the runs of a schedule.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    url: Url = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """The account's jobs, newest first."""
    with connect(url, api_key) as client:
        page = client.list(status, limit=limit, offset=offset, schedule_id=schedule_id)
    if as_json:
        print_json(page)
        return
    table(
        ["ID", "NAME", "STATUS", "DONE", "TOTAL", "ERRORED", "CREATED"],
        [
            [j.id, j.name, j.status, j.urls_done, j.urls_total, j.urls_errored, j.created_at]
            for j in page.jobs
        ],
    )
    shown = f"{page.offset + 1}-{page.offset + len(page.jobs)}" if page.jobs else "none"
    err.print(f"{shown} of {page.total}")


@jobs_app.command("get")
def get(job_id: str, url: Url = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """A job's status and counters."""
    with connect(url, api_key) as client:
        job = client.get(job_id)
    _show(job, as_json)


def _show(job: Job, as_json: bool) -> None:
    if as_json:
        print_json(job)
        return
    data = job.model_dump()
    fields([(k, v) for k, v in data.items() if k != "progress"])


@jobs_app.command("cancel")
def cancel(job_id: str, url: Url = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Cancel gracefully: requests in flight finish, the partial output is kept."""
    with connect(url, api_key) as client:
        job = client.cancel(job_id)
    report(job, f"{job.id} cancel requested ({job.urls_done:,} URLs done)", as_json)


@jobs_app.command("retry")
def retry(
    job_id: str,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Follow it, then download.")] = False,
    out_file: Annotated[Path | None, typer.Option("--out", "-o", help="Implies --wait.")] = None,
    url: Url = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """A new job over the URLs of JOB_ID that errored."""
    with connect(url, api_key) as client:
        job = client.retry(job_id)
        if wait or out_file:
            err.print(f"submitted {job.id} (retry of {job_id})")
            follow(client, job.id, out_file, None, as_json)
        else:
            line = f"{job.id} {job.status} ({_total(job.urls_total)} URLs, retry of {job_id})"
            report(job, line, as_json)


@jobs_app.command("download")
def download(
    job_id: str,
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="Default: <job id>.<format>.")
    ] = None,
    url: Url = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Save a finished job's result file (through its signed link)."""
    with connect(url, api_key) as client:
        job = client.get(job_id)
        target = out_file or Path(f"{job.id}{_suffix_of(job)}")
        saved = client.download(job, target)
    if as_json:
        print_json({"id": job.id, "saved": [str(p) for p in saved]})
    else:
        for path in saved:
            out.print(f"saved {path} ({path.stat().st_size:,} bytes)")


def _suffix_of(job: Job) -> str:
    """The result's extension, read from its link's file name (``.../job_x.csv.gz?...``)."""
    name = (job.download_url or "").split("?")[0].rsplit("/", 1)[-1]
    return name[name.find(".") :] if "." in name else ".out"


@jobs_app.command("results")
def results(
    job_id: str,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many rows.")] = None,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """The job's result rows so far as NDJSON, in input order (paged through the API)."""
    with connect(url, api_key) as client:
        for n, row in enumerate(client.results(job_id)):
            if limit is not None and n >= limit:
                break
            typer.echo(json.dumps(row.model_dump(mode="json"), ensure_ascii=False))
