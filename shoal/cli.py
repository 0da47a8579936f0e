"""The ``shoal`` command: ``shoal up`` runs the embedded stack; ``shoal api``, ``shoal worker``,
``shoal services`` and ``shoal pool setup`` run its roles apart; ``shoal keys`` and ``shoal
accounts`` manage who may call the API, ``shoal db`` the job store's schema (``shoal/admin.py``).
``shoal jobs`` and ``shoal schedules`` call a running API as any client does (``shoal/client/``,
reading ``SHOAL_URL`` and ``SHOAL_API_KEY``).

``shoal up`` supervises four children (``shoal/supervisor.py``): the Prefect server (SQLite), the
embedded worker (``python -m deployments.serve``), the services (``python -m
deployments.services``: resume, webhooks) and the API (uvicorn). A child that dies is restarted;
``<data-dir>/pids.json`` holds the process ids of ``shoal up`` and its live children. All state
lives under one data folder; a second ``shoal up`` on the same folder finds its jobs again, and
the services resume any job the last run left behind.

The roles apart import nothing of ``api/``, ``flows/`` or ``deployments/``: each becomes (exec)
its process, started by module name, as ``shoal up`` starts it. ``shoal up``, ``shoal api`` and
``shoal services`` upgrade the job store's schema first, once, before any process starts.

Secrets at rest: every command sets the umask to 077 before it does anything, so whatever its
process and the processes it starts write (the SQLite store and the ``-wal``/``-shm`` files
SQLite makes itself, results, logs, Prefect's database) is the owner's only. The umask is the
one sure way: those files are opened by SQLite, DuckDB, Polars, fsspec, Prefect and uvicorn, not
by code of ours, and a umask is inherited across ``fork`` and kept across ``exec``, so one call
covers the whole tree ``shoal up`` supervises and each role's exec'd process. A data folder an
older Shoal left readable by others is tightened to 0700 on start, with a warning.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, NoReturn

import httpx
import typer

from shoal.admin import (
    DataDir,
    accounts_app,
    db_app,
    keys_app,
    private_dir,
    upgrade_or_exit,
    uses_data_dir,
)
from shoal.client.cli import jobs_app, schedules_app
from shoal.settings import Settings
from shoal.store import get_store
from shoal.supervisor import Stopped, Supervisor

app = typer.Typer(help="Shoal: bulk web scraping on Prefect.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(accounts_app, name="accounts")
app.add_typer(db_app, name="db")
app.add_typer(jobs_app, name="jobs")
app.add_typer(schedules_app, name="schedules")

#: files and folders any shoal process makes: owner only (module docstring)
UMASK = 0o077


@app.callback()
def _owner_only() -> None:
    os.umask(UMASK)


def _secret(data_dir: Path) -> str:
    path = data_dir / "signing-secret"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _local_key(data_dir: Path, settings: Settings) -> str:
    """The local account's key: made on first start, kept (0600) in the data folder."""
    path = data_dir / "local-api-key"
    store = get_store(settings)
    if path.exists():
        key = path.read_text().strip()
        if store.account_for_key(key) is not None:
            return key
    row, _ = store.get_or_create_account("local")
    key = store.create_key(row.id)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


PY = sys.executable
EMBEDDED_WORKER = [PY, "-m", "deployments.serve"]
SERVICES = [PY, "-m", "deployments.services"]

#: what a role started on its own needs to share with the others (``shoal up`` sets them all)
_SHARED = {
    "PREFECT_API_URL": "the Prefect server's API, e.g. http://prefect:4200/api",
    "SHOAL_DATABASE_URL": (
        "the job store every role shares, e.g. postgresql+psycopg://shoal@db/shoal "
        "(without it a role makes its own SQLite store in ./.shoal)"
    ),
    "SHOAL_RESULTS_URL": "where inputs and results live for every role, e.g. s3://bucket/shoal",
    "SHOAL_SIGNING_SECRET": "the key of download links, the same in every role",
    "SHOAL_PUBLIC_URL": "the API's base URL as clients reach it (in download links)",
    "SHOAL_CODE_DIR": "the checkout of Shoal on this machine (flow runs start in it)",
}

#: what every role needs
_ROLE = [n for n in _SHARED if n != "SHOAL_CODE_DIR"]


def _api_argv(host: str, port: int) -> list[str]:
    factory = ["--factory", "api.app:create_app", "--no-access-log"]
    return [PY, "-m", "uvicorn", *factory, "--host", host, "--port", str(port)]


def _http_ok(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=2).status_code == 200
    return False


class _Health:
    """``GET /v1/health`` until it answers ``200``; says each new reason it is not ready yet."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.said = ""

    def __call__(self) -> bool:
        try:
            r = httpx.get(self.url, timeout=5)
        except httpx.HTTPError:
            return False  # the API is not listening yet
        if r.status_code == 200:
            return True
        with contextlib.suppress(ValueError):
            reason = str(r.json().get("detail", r.status_code)).removeprefix("not ready: ")
            if reason != self.said:
                typer.echo(f"not ready yet: {reason}")
                self.said = reason
        return False


class _GaveUp(Exception):
    """A child kept dying before the stack was ever ready."""


class _Starting:
    """``ready()`` while the stack starts, giving up once a child died ``MAX`` times: before the
    first ready answer a crash loop is a mistake to report (a port in use, a bad setting), not a
    blip to ride out."""

    MAX = 5

    def __init__(self, supervisor: Supervisor, ready: Callable[[], bool]) -> None:
        self.supervisor = supervisor
        self.ready = ready

    def __call__(self) -> bool:
        for child in self.supervisor.children.values():
            if child.restarts >= self.MAX:
                raise _GaveUp(f"{child.name} exited {child.restarts} times; see {child.log}")
        return self.ready()


def _write_pids(path: Path) -> Callable[[dict[str, int]], None]:
    def write(pids: dict[str, int]) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"up": os.getpid(), **pids}))
        tmp.replace(path)  # readers never see half a file

    return write


@app.command()
def up(
    host: Annotated[str, typer.Option(help="API host.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port.")] = 8000,
    prefect_port: Annotated[int, typer.Option(help="Prefect server port.")] = 4200,
    data_dir: DataDir = Path(".shoal"),
) -> None:
    """Run the whole stack in the foreground, supervised; Ctrl-C stops all.

    Prefect server (SQLite), the embedded worker, the services and the API; a process that dies
    is restarted. The banner comes once ``GET /v1/health`` answers ``200``."""
    data_dir = data_dir.resolve()
    private_dir(data_dir)
    lock = open(data_dir / ".lock", "w")  # noqa: SIM115 - held for the life of the stack
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        typer.echo(f"another `shoal up` is using {data_dir}", err=True)
        raise typer.Exit(1) from None
    logs = data_dir / "logs"
    prefect_home = data_dir / "prefect"
    prefect_home.mkdir(exist_ok=True)
    api_url = f"http://{host}:{port}"
    prefect_api = f"http://127.0.0.1:{prefect_port}/api"
    env = {
        **os.environ,
        "SHOAL_DATA_DIR": str(data_dir),
        "SHOAL_SIGNING_SECRET": _secret(data_dir),
        "SHOAL_PUBLIC_URL": os.environ.get("SHOAL_PUBLIC_URL", api_url),
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_URL": prefect_api,
        "PREFECT_API_DATABASE_CONNECTION_URL": (
            f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}"
        ),
        "PREFECT_LOCAL_STORAGE_PATH": str(prefect_home / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": prefect_api,
        "PYTHONUNBUFFERED": "1",
    }
    settings = Settings(data_dir=data_dir)
    upgrade_or_exit(settings)  # once, here, before any child uses the store
    key = _local_key(data_dir, settings)
    prefect_cmd = [PY, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
    supervisor = Supervisor(
        env=env, logs=logs, echo=typer.echo, on_change=_write_pids(data_dir / "pids.json")
    )
    supervisor.install_signals()
    prefect_up = _Starting(supervisor, lambda: _http_ok(f"{prefect_api}/health"))
    with supervisor:
        try:
            supervisor.start("prefect", [*prefect_cmd, "--port", str(prefect_port)])
            supervisor.wait(prefect_up)
            # stopped in the reverse order: API, worker, services, then Prefect
            supervisor.start("services", SERVICES)
            supervisor.start("worker", EMBEDDED_WORKER)
            supervisor.start("api", _api_argv(host, port))
            supervisor.wait(_Starting(supervisor, _Health(f"{api_url}/v1/health")))
            typer.echo(_banner(api_url, prefect_port, data_dir, key, _rendering(settings)))
            supervisor.run()
        except Stopped:
            pass
        except _GaveUp as exc:
            typer.echo(f"shoal up failed: {exc}", err=True)
            raise typer.Exit(1) from None
        finally:
            typer.echo("stopping...")


# --- roles apart: each against an existing Prefect server, store and results location --------


def _require(role: str, names: Iterable[str]) -> None:
    """Exit 2 naming every setting ``names`` lists that the environment lacks."""
    missing = [n for n in names if not os.environ.get(n, "").strip()]
    if missing:
        lines = "\n".join(f"  {n}: {_SHARED[n]}" for n in missing)
        typer.echo(f"shoal {role}: missing settings (environment variables):\n{lines}", err=True)
        raise typer.Exit(2)


def _exec(argv: list[str]) -> NoReturn:
    """Become ``argv``: signals and the exit code are the role's own."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


@app.command("api")
def api_role(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Run the API (uvicorn) against an existing Prefect server, store and results location.

    Upgrades the store's schema first."""
    _require("api", _ROLE)
    _start_role()
    _exec(_api_argv(host, port))


def _start_role() -> None:
    settings = Settings()
    if uses_data_dir(settings):
        private_dir(settings.data_dir)
    upgrade_or_exit(settings)


def _checkout() -> Path | None:
    """The checkout this Shoal runs from (an editable install), if it has the flows."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "flows" / "scrape_job.py").is_file() else None


@app.command("worker")
def worker_role(
    pool: Annotated[
        str, typer.Option(envvar="SHOAL_WORK_POOL", help="The Prefect work pool to serve.")
    ] = "shoal",
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="Flow runs at once (default SHOAL_WORKER_MAX_JOBS)."),
    ] = None,
) -> None:
    """Run a Prefect process worker on a work pool (``shoal pool setup`` creates it).

    Its flow runs inherit its environment, so it needs what the API has (exit 2 names what is
    missing). ``SHOAL_CODE_DIR`` (the checkout the pool deployments' pull step enters) defaults
    to the checkout this command runs from; flow runs send heartbeats every
    ``SHOAL_HEARTBEAT_S`` so a dead machine's runs are found."""
    checkout = _checkout()
    if checkout is not None:
        os.environ.setdefault("SHOAL_CODE_DIR", str(checkout))
    _require("worker", [*_ROLE, "SHOAL_CODE_DIR"])
    settings = Settings()
    os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(settings.heartbeat_s))
    jobs_at_once = str(limit or settings.worker_max_jobs)
    _exec(
        [PY, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]
        + ["--limit", jobs_at_once]
    )


@app.command("services")
def services_role() -> None:
    """Run the services: resume of jobs whose runs died, webhook delivery.

    Any number of copies, on any machine. Upgrades the store's schema first."""
    _require("services", _ROLE)
    _start_role()
    _exec(SERVICES)


pool_app = typer.Typer(help="The Prefect work pool of workers started with `shoal worker`.")
app.add_typer(pool_app, name="pool")


@pool_app.command("setup")
def pool_setup() -> None:
    """Create the work pool, its queues and deployments (``python -m deployments.pool``)."""
    _require("pool setup", ["PREFECT_API_URL"])
    _exec([PY, "-m", "deployments.pool"])


def _rendering(settings: Settings) -> str:
    """The banner's word on ``render: true``: the browser it drives, or what is missing."""
    from shoal.render import RenderUnavailable, find_browser, missing_piece

    missing = missing_piece(settings)
    if missing is not None:
        return f"off: {missing}"
    try:
        return f"on ({find_browser(settings)})"
    except RenderUnavailable:  # SHOAL_RENDERING=on: the workers' browsers, not this host's
        return "on (SHOAL_RENDERING=on: the workers' browsers)"


def _banner(api_url: str, prefect_port: int, data_dir: Path, key: str, rendering: str) -> str:
    body = '{"input": {"urls": ["https://example.com/"]}, "defaults": {"formats": ["metadata"]}}'
    return f"""
Shoal is up.
  API         {api_url}/v1
  API docs    {api_url}/docs   (OpenAPI: {api_url}/v1/openapi.json)
  Prefect UI  http://127.0.0.1:{prefect_port}
  Data        {data_dir}  (logs in {data_dir / "logs"})
  API key     {key}
  Rendering   {rendering}

Submit a job:
  curl -s -X POST {api_url}/v1/jobs -H 'Authorization: Bearer {key}' \\
       -H 'Content-Type: application/json' -d '{body}'
Then poll it (and follow its download_url once result_available is true):
  curl -s {api_url}/v1/jobs/<id> -H 'Authorization: Bearer {key}'

Ctrl-C stops everything.
"""


if __name__ == "__main__":
    app()
