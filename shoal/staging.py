"""Staging a job's file input (an upload or an S3/GCS object) into ``jobs/<id>/input.ndjson``.

Inline jobs are staged when they are created; file inputs are staged by the flow, before it
plans, so that ``POST /v1/jobs`` answers fast whatever the file's size. Staging is idempotent: a
resumed run finds the staged file and does not read the source again.

Anything that makes the input unusable (no such object, access denied, not NDJSON/CSV, more URLs
than the job may hold) raises ``JobFailed`` with a message for the caller: the job ends
``failed`` with it. Other errors (a network hiccup) are left to the task's retries.
"""

from __future__ import annotations

import logging
from typing import IO, Any

from fsspec.core import url_to_fs

from shoal import inputs
from shoal.account_plans import plan_for
from shoal.contract import InputSource, JobSpec
from shoal.errors import InputError, JobFailed, TooLarge
from shoal.jobs import add_fields, input_url, missing_columns
from shoal.settings import Settings
from shoal.storage import Storage, get_storage
from shoal.store import JobRow, Store, get_store

log = logging.getLogger(__name__)

_READ_BLOCK = 8 * 1024 * 1024


def stage_input(row: JobRow, settings: Settings) -> None:
    """Stage the job's file input, if it has one and it is not staged yet; then the job row
    has ``urls_total``, ``spec.fields`` holds the fields the file's overrides add and
    ``spec.screenshots`` is set when a usable row asks for a screenshot (an upload's were
    known at the job's creation: ``jobs.validate``)."""
    spec = JobSpec.model_validate(row.spec)
    source = spec.source
    if source is None:
        return  # inline: staged at creation
    store = get_store(settings)
    storage = get_storage(settings)
    job_id = row.id
    dest = input_url(storage, job_id)
    if row.urls_total is not None and storage.exists(dest):
        return  # staged by an earlier run (or a retry's own input)
    if source.kind == "upload":
        _stage_upload(source, store, storage, dest)
        return
    account = store.get_account(row.account_id)
    plan = plan_for(account.plan if account is not None else None, settings)
    stats = _stage_object(job_id, source, settings, storage, dest, plan.max_urls_per_job)
    fields = add_fields(dict(spec.fields), stats.fields)
    missing = missing_columns(spec.output.format, fields)
    if missing:
        storage.rm(dest)
        raise JobFailed(f"{missing}: neither the defaults nor the input file give any")
    # before the first part is written, so every page and output file has the same columns
    shots = spec.screenshots or stats.screenshots
    new_spec = {**row.spec, "fields": fields, "screenshots": shots}
    store.update_job(job_id, urls_total=stats.lines, spec=new_spec)
    log.info(
        "job %s: staged %s: %d URLs (%d invalid)", job_id, source.uri, stats.lines, stats.errored
    )


def _stage_upload(source: InputSource, store: Store, storage: Storage, dest: str) -> None:
    """Copy the upload's staged file (server-side on an object store)."""
    upload = store.get_upload(source.upload_id or "")
    try:
        if upload is None:
            raise FileNotFoundError(source.upload_id)
        storage.copy(upload.url, dest)
    except FileNotFoundError as exc:
        raise JobFailed(f"the upload {source.upload_id} no longer exists") from exc


def _assume_role(role_arn: str, job_id: str, settings: Settings) -> dict[str, str]:
    """Temporary credentials of ``role_arn`` (STS AssumeRole with the server's own)."""
    import botocore.session
    from botocore.exceptions import BotoCoreError, ClientError

    session = botocore.session.get_session()
    endpoint = settings.sts_endpoint_url or settings.s3_endpoint_url
    region = settings.s3_region or session.get_config_variable("region") or "us-east-1"
    try:
        client = session.create_client("sts", region_name=region, endpoint_url=endpoint)
        creds = client.assume_role(RoleArn=role_arn, RoleSessionName=f"shoal-{job_id}"[:64])
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise JobFailed(
            f"could not assume role {role_arn}: {err.get('Code', 'error')}: "
            f"{err.get('Message', exc)}"
        ) from exc
    except BotoCoreError as exc:
        raise JobFailed(f"could not assume role {role_arn}: {exc}") from exc
    c = creds["Credentials"]
    return {"key": c["AccessKeyId"], "secret": c["SecretAccessKey"], "token": c["SessionToken"]}


def open_object(
    uri: str, settings: Settings, *, job_id: str = "", role_arn: str | None = None
) -> IO[bytes]:
    """Open ``uri`` (``s3://`` or ``gs://``) for streaming reads."""
    options: dict[str, Any] = dict(settings.storage_options(uri))
    if role_arn:
        options.update(_assume_role(role_arn, job_id, settings))
    if uri.startswith("s3://"):
        options["skip_instance_cache"] = True  # credentials differ between jobs
    fs, path = url_to_fs(uri, **options)
    return fs.open(path, "rb", block_size=_READ_BLOCK)  # type: ignore[no-any-return]


def _stage_object(
    job_id: str,
    source: InputSource,
    settings: Settings,
    storage: Storage,
    dest: str,
    max_urls: int,
) -> inputs.InputStats:
    uri = source.uri or ""
    fmt = inputs.name_format(uri) or "auto"
    try:
        with open_object(uri, settings, job_id=job_id, role_arn=source.role_arn) as src:
            return inputs.normalize_to(
                src,
                storage,
                dest,
                fmt=fmt,
                settings=settings,
                max_bytes=settings.max_upload_bytes,
                max_lines=max_urls,
                loc=uri,
            )
    except FileNotFoundError as exc:
        raise JobFailed(f"cannot read the input {uri}: no such bucket or object") from exc
    except PermissionError as exc:
        raise JobFailed(f"cannot read the input {uri}: access denied ({exc})") from exc
    except TooLarge as exc:
        raise JobFailed(f"the input {uri} is too large: {exc.detail}") from exc
    except InputError as exc:
        why = "; ".join(e.msg for e in exc.errors) or exc.detail
        raise JobFailed(f"the input {uri} is not a usable URL file: {why}") from exc
