"""``shoal keys``, ``shoal accounts`` and ``shoal db``: the operator's commands on the job store
(who may call the API, and the store's schema). Attached to the ``shoal`` command by
``shoal.cli``, whose umask they run under."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Annotated

import typer

from shoal.account_plans import plan_for
from shoal.settings import Settings, redact_url
from shoal.storage import get_storage
from shoal.store import (
    SCHEMA_HEAD,
    AccountRow,
    Store,
    StoreOutdated,
    aware,
    get_store,
    store_revision,
    upgrade_store,
)

keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
accounts_app = typer.Typer(help="Accounts and their plans.", no_args_is_help=True)
db_app = typer.Typer(help="The job store's schema (migrations).", no_args_is_help=True)

DataDir = Annotated[
    Path, typer.Option("--data-dir", envvar="SHOAL_DATA_DIR", help="Folder for all state.")
]


def settings_for(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir)


def private_dir(path: Path) -> None:
    """Make the data folder owner-only (0700), tightening one an older Shoal left open: it
    holds the job store (webhook secrets), results, logs and the signing secret."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(0o700)
        # stderr: the terminal of `shoal up`, the log of a role under a service manager
        typer.echo(
            f"warning: {path} was readable by others (mode {mode:o}); made it owner-only (700)",
            err=True,
        )


def uses_data_dir(settings: Settings) -> bool:
    return settings.database_url is None or settings.results_url is None


def upgrade_or_exit(settings: Settings) -> None:
    """Bring the job store to this code's schema before any process uses it (exit 1 when it
    cannot: a store newer than this Shoal, or not Shoal's)."""
    try:
        done = upgrade_store(settings)
    except StoreOutdated as exc:
        typer.echo(f"job store: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"job store {redact_url(settings.db_url)}: {done.describe()}")


@keys_app.command("create")
def keys_create(
    account: Annotated[str, typer.Option("--account", help="Account name (created if new).")],
    data_dir: DataDir = Path(".shoal"),
) -> None:
    """Create an account if new and an API key for it; the key alone is the last line."""
    store = _store(data_dir)
    row, created = store.get_or_create_account(account)
    key = store.create_key(row.id)
    typer.echo(f"{'created' if created else 'existing'} account {row.name} ({row.id})")
    typer.echo(key)


def _store(data_dir: Path) -> Store:
    settings = settings_for(data_dir.resolve())
    if uses_data_dir(settings):
        private_dir(settings.data_dir)
    return get_store(settings)


def _account(store: Store, name: str) -> AccountRow:
    row = store.account_by_name(name)
    if row is None:
        typer.echo(f"no account {name!r}", err=True)
        raise typer.Exit(1)
    return row


@keys_app.command("list")
def keys_list(
    account: Annotated[str, typer.Option("--account", help="Account name.")],
    data_dir: DataDir = Path(".shoal"),
) -> None:
    """The account's keys: id, prefix and creation time (the key itself is never stored)."""
    store = _store(data_dir)
    for key in store.list_keys(_account(store, account).id):
        typer.echo(f"{key.id}  {key.prefix}...  {aware(key.created_at):%Y-%m-%d %H:%M:%S}Z")


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[
        str, typer.Argument(help="The key, its id, or its prefix as `keys list` shows it.")
    ],
    data_dir: DataDir = Path(".shoal"),
) -> None:
    """Revoke a key: the API refuses it (401) from the next request on (keys are looked up on
    every request, never cached)."""
    store = _store(data_dir)
    found = store.find_keys(key)
    if not found:
        typer.echo("no key matches", err=True)
        raise typer.Exit(1)
    if len(found) > 1:
        ids = ", ".join(k.id for k in found)
        typer.echo(f"{len(found)} keys have that prefix ({ids}): give the key id", err=True)
        raise typer.Exit(1)
    row = found[0]
    store.revoke_key(row.id)
    owner = store.get_account(row.account_id)
    typer.echo(f"revoked {row.id} ({row.prefix}...) of {owner.name if owner else row.account_id}")


@accounts_app.command("remove")
def accounts_remove(
    name: Annotated[str, typer.Argument(help="Account name.")],
    cancel_jobs: Annotated[
        bool, typer.Option(help="Cancel its queued and running jobs instead of refusing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    data_dir: DataDir = Path(".shoal"),
) -> None:
    """Remove an account: its keys, jobs, uploads, webhook records and secret, and its files.

    Refused while it has queued or running jobs, unless ``--cancel-jobs`` (they end
    ``cancelled``; a run in flight stops at its next chunk, finding its job gone). The
    results and uploads are removed now, not left to retention: retention finds files through
    job rows, and with the rows gone nothing could serve or ever remove them."""
    settings = settings_for(data_dir.resolve())
    store = _store(data_dir)
    row = _account(store, name)
    active = store.count_active_jobs(row.id)
    if active and not cancel_jobs:
        typer.echo(
            f"account {name} has {active} jobs queued or running: wait for them to end, or "
            "pass --cancel-jobs",
            err=True,
        )
        raise typer.Exit(1)
    if not yes:
        typer.confirm(f"remove account {name} ({row.id}), its jobs and their results?", abort=True)
    for key in store.list_keys(row.id):  # first: no new job can come in meanwhile
        store.revoke_key(key.id)
    cancelled = store.cancel_active_jobs(row.id)
    storage = get_storage(settings)
    jobs = store.account_jobs(row.id)
    for job in jobs:
        storage.rm(storage.url("jobs", job.id), recursive=True)
    for upload in store.account_uploads(row.id):
        storage.rm(storage.url("uploads", upload.id), recursive=True)
    removed = store.remove_account(row.id)
    typer.echo(
        f"removed account {name} ({row.id}): {len(jobs)} jobs ({len(cancelled)} cancelled), "
        f"{removed['uploads']} uploads, {removed['webhook_events']} webhook events, "
        "their files and the webhook secret"
    )


@db_app.command("upgrade")
def dbupgrade_or_exit(data_dir: DataDir = Path(".shoal")) -> None:
    """Bring the job store to this Shoal's schema (``shoal up``, ``api`` and ``services`` do
    it on start); safe to run while Shoal runs, and from several machines at once."""
    settings = settings_for(data_dir.resolve())
    if uses_data_dir(settings):
        private_dir(settings.data_dir)
    upgrade_or_exit(settings)


@db_app.command("current")
def db_current(data_dir: DataDir = Path(".shoal")) -> None:
    """Print the store's schema revision and this Shoal's; exit 1 unless they are the same."""
    revision = store_revision(settings_for(data_dir.resolve()))
    typer.echo(f"store: {revision or 'none (no store, or made before migrations)'}")
    typer.echo(f"code:  {SCHEMA_HEAD}")
    if revision != SCHEMA_HEAD:
        raise typer.Exit(1)


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
    settings = settings_for(data_dir.resolve())
    store = _store(data_dir)
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
