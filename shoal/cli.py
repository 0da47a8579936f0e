"""The ``shoal`` command: ``shoal up`` starts the embedded stack; ``shoal keys create`` makes keys.

``shoal up`` writes the process ids of itself and its children to ``<data-dir>/pids.json``.

``shoal up`` runs three child processes, each in its own process group so a stop reaches the
flow runs they started: the Prefect server (SQLite), the worker (``python -m deployments.serve``)
and the API (uvicorn). All state lives under one data folder; a second ``shoal up`` on the same
folder finds its jobs again, and the worker's reaper resumes any job the last run left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer

from shoal.plans import plan_for
from shoal.settings import Settings
from shoal.store import get_store

app = typer.Typer(help="Shoal: bulk web scraping on Prefect.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
accounts_app = typer.Typer(help="Accounts and their plans.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")

DataDir = Annotated[
    Path, typer.Option("--data-dir", envvar="SHOAL_DATA_DIR", help="Folder for all state.")
]


def _settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir)


@keys_app.command("create")
def keys_create(
    account: Annotated[str, typer.Option("--account", help="Account name (created if new).")],
    data_dir: DataDir = Path(".shoal"),
) -> None:
    """Create an account if new and an API key for it; the key alone is the last line."""
    store = get_store(_settings(data_dir.resolve()))
    row, created = store.get_or_create_account(account)
    key = store.create_key(row.id)
    typer.echo(f"{'created' if created else 'existing'} account {row.name} ({row.id})")
    typer.echo(key)


@accounts_app.command("plan")
def accounts_plan(
    account: Annotated[str, typer.Option("--account", help="Account name (created if new).")],
    max_urls_per_job: Annotated[int | None, typer.Option(min=1)] = None,
    max_concurrent_jobs: Annotated[int | None, typer.Option(min=1)] = None,
    concurrency_cap: Annotated[int | None, typer.Option(min=1)] = None,
    retention_days: Annotated[int | None, typer.Option(min=0)] = None,
    reset: Annotated[bool, typer.Option(help="Forget the account's own values first.")] = False,
    data_dir: DataDir = Path(".shoal"),
) -> None:
    """Set an account's own plan limits (others stay the operator's defaults); print the plan."""
    settings = _settings(data_dir.resolve())
    store = get_store(settings)
    row, _ = store.get_or_create_account(account)
    given = {
        "max_urls_per_job": max_urls_per_job,
        "max_concurrent_jobs": max_concurrent_jobs,
        "concurrency_cap": concurrency_cap,
        "retention_days": retention_days,
    }
    own = {} if reset else dict(row.plan or {})
    own.update({k: v for k, v in given.items() if v is not None})
    store.set_plan(row.id, own)
    for name, value in plan_for(own, settings).as_dict().items():
        mark = "" if name in own else "  (default)"
        typer.echo(f"{name} = {value}{mark}")


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


class _Stopped(Exception):
    """A stop was asked (SIGINT/SIGTERM) while the stack was starting."""


# Signals only set this event: an exception raised from a signal handler can land inside
# ``Popen.poll()`` and leak its wait lock, after which ``Popen.wait()`` blocks forever.
_stop_asked = threading.Event()


def _wait_http(url: str, procs: dict[str, subprocess.Popen[bytes]], deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if _stop_asked.is_set():
            raise _Stopped
        for p in procs.values():
            if p.poll() is not None:
                raise RuntimeError(f"{p.args!r} exited with {p.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not answer within {deadline_s:.0f} s")


def _stop(procs: dict[str, subprocess.Popen[bytes]], grace_s: float = 15) -> None:
    """Stop the children last-started first, each before the next: the worker's shutdown still
    talks to the Prefect server, so the server goes last. SIGKILL after ``grace_s`` each; says
    how each one ended."""
    for name, p in reversed(procs.items()):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(grace_s)
            typer.echo(f"{name} stopped (exit {p.returncode})")
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            typer.echo(f"{name} killed: it did not stop within {grace_s:.0f} s", err=True)


@app.command()
def up(
    host: Annotated[str, typer.Option(help="API host.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port.")] = 8000,
    prefect_port: Annotated[int, typer.Option(help="Prefect server port.")] = 4200,
    data_dir: DataDir = Path(".shoal"),
) -> None:
    """Start Prefect server (SQLite), a worker and the API in the foreground; Ctrl-C stops all."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = open(data_dir / ".lock", "w")  # noqa: SIM115 - held for the life of the stack
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        typer.echo(f"another `shoal up` is using {data_dir}", err=True)
        raise typer.Exit(1) from None
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
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
    key = _local_key(data_dir, settings)
    py = sys.executable
    specs = [
        (
            "prefect",
            [
                py,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(prefect_port),
            ],
        ),
        ("worker", [py, "-m", "deployments.serve"]),
        (
            "api",
            [
                py,
                "-m",
                "uvicorn",
                "--factory",
                "api.app:create_app",
                "--host",
                host,
                "--port",
                str(port),
                "--no-access-log",
            ],
        ),
    ]
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def _on_signal(signum: int, _frame: object) -> None:
        _stop_asked.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        for name, cmd in specs:
            out = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
            procs[name] = subprocess.Popen(
                cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
            pids = {"up": os.getpid(), **{n: q.pid for n, q in procs.items()}}
            (data_dir / "pids.json").write_text(json.dumps(pids))
            if name == "prefect":
                _wait_http(f"{prefect_api}/health", procs, 120)
        _wait_http(f"{api_url}/v1/health", procs, 60)
        _wait_http(f"{prefect_api}/deployments/name/scrape-job/normal", procs, 90)
        typer.echo(_banner(api_url, prefect_port, data_dir, key))
        while not _stop_asked.wait(0.5):
            dead = next((n for n, p in procs.items() if p.poll() is not None), None)
            if dead is not None:
                code = procs[dead].returncode
                typer.echo(f"{dead} exited with {code}; see {logs}", err=True)
                raise typer.Exit(1)
        typer.echo("stopping...")
    except _Stopped:
        typer.echo("stopping...")
    except RuntimeError as exc:
        typer.echo(f"shoal up failed: {exc}; logs in {logs}", err=True)
        raise typer.Exit(1) from None
    finally:
        _stop(procs)


def _banner(api_url: str, prefect_port: int, data_dir: Path, key: str) -> str:
    body = '{"input": {"urls": ["https://example.com/"]}, "defaults": {"formats": ["metadata"]}}'
    return f"""
Shoal is up.
  API         {api_url}/v1
  API docs    {api_url}/docs   (OpenAPI: {api_url}/v1/openapi.json)
  Prefect UI  http://127.0.0.1:{prefect_port}
  Data        {data_dir}  (logs in {data_dir / "logs"})
  API key     {key}

Submit a job:
  curl -s -X POST {api_url}/v1/jobs -H 'Authorization: Bearer {key}' \\
       -H 'Content-Type: application/json' -d '{body}'
Then poll it (and follow its download_url once result_available is true):
  curl -s {api_url}/v1/jobs/<id> -H 'Authorization: Bearer {key}'

Ctrl-C stops everything.
"""


if __name__ == "__main__":
    app()
