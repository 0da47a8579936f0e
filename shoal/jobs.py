"""Creating jobs from the contract and showing them back: validation against the operator's
limits, the staged input file, and the public view of a job row."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson

from shoal import downloads
from shoal.account_plans import plan_for
from shoal.contract import (
    RESULT_STATUSES,
    SCREENSHOT_NEEDS_RENDER,
    WEBHOOK_EVENTS,
    CompareSpec,
    DownloadPart,
    FieldType,
    InputSource,
    JobCreate,
    JobPublic,
    JobSpec,
    Progress,
    QualitySpec,
    RunOptions,
    ScrapeOptions,
    SingleUrlInput,
    UrlItem,
    WebhookCreate,
    WebhookSpec,
    http_url_problem,
    run_overrides,
    selector_problem,
)
from shoal.errors import FieldError, Gone, InputError
from shoal.fetch import AddressPolicy, BlockedAddress
from shoal.headers import header_problem
from shoal.render import missing_piece
from shoal.settings import Settings
from shoal.storage import Storage
from shoal.store import AccountRow, Counters, JobRow, Store, UploadRow, aware, new_id, utcnow

#: a job another can be compared with ended with these (``compare.previous_job_id``)
COMPARABLE_STATUSES = frozenset({"completed", "partial"})
#: the one check of a URL (inline, upload and S3 rows, webhooks): ``shoal.contract``'s
valid_http_url = http_url_problem


def _check_options(
    opts: dict[str, Any],
    loc: str,
    settings: Settings,
    errors: list[FieldError],
    inherited: Mapping[str, Any] | None = None,
) -> None:
    """Check options (in ``run_overrides``' form) against the operator's configuration.
    ``inherited``: the job's defaults a URL's options fall back on (None: a file's row, read
    before any job is known; what the row itself says is checked, and the rest when the job
    runs it)."""
    proxy = opts.get("proxy_type")
    if proxy not in (None, "none") and proxy not in settings.proxy_pools():
        errors.append(
            FieldError(
                f"{loc}.proxy_type", f"proxy pool {proxy!r} is not configured by the operator"
            )
        )
    if opts.get("render"):
        # SHOAL_RENDERING decides (auto: this host's browser stands for the workers'); a
        # worker without a browser answers its rendered URLs with render_failed rows naming it
        missing = missing_piece(settings)
        if missing is not None:
            errors.append(FieldError(f"{loc}.render", f"rendering is not available: {missing}"))
    if why := _screenshot_problem(opts, inherited):
        errors.append(FieldError(f"{loc}.{why[0]}", why[1]))
    for name, value in (opts.get("headers") or {}).items():
        if why_h := header_problem(name, value):
            errors.append(FieldError(f"{loc}.headers.{name}", why_h))
    for name, spec in (opts.get("selectors") or {}).items():
        if why_s := selector_problem(spec):
            errors.append(FieldError(f"{loc}.selectors.{name}", why_s))
    mbb = opts.get("max_body_bytes")
    if mbb is not None and mbb > settings.max_body_bytes:
        errors.append(
            FieldError(f"{loc}.max_body_bytes", f"at most {settings.max_body_bytes} bytes")
        )


def _screenshot_problem(
    opts: Mapping[str, Any], inherited: Mapping[str, Any] | None
) -> tuple[str, str] | None:
    """(field, why) when the options ask for a screenshot of a page they do not render."""
    if inherited is None:  # a file's row: only what it says itself
        shot, render = opts.get("screenshot"), opts.get("render")
    else:
        shot = opts["screenshot"] if "formats" in opts else inherited.get("screenshot")
        render = opts.get("render", inherited.get("render"))
    if shot is None or render is not False:
        return None
    if "formats" in opts:
        return "formats", SCREENSHOT_NEEDS_RENDER
    return "render", "the job's formats ask for a screenshot, which needs render: true"


def stage_record(
    url: str,
    meta: Any,
    over: dict[str, Any],
    settings: Settings,
    errors: list[FieldError],
    *,
    loc: str = "",
    url_loc: str | None = None,
    inherited: Mapping[str, Any] | None = None,
) -> bytes | None:
    """One URL record (inline or from a file) as its staged input line, or ``None`` with why
    added to ``errors``: the URL (at ``url_loc``, default ``<loc>.url``), the overrides against
    the operator's configuration (``<loc>.<option>``), a ``meta`` that JSON cannot store
    (``<loc>.meta``). The one set of per-record rules for inline URLs and URL files.
    ``inherited``: the job's defaults (None where no job is known yet: an upload). The
    overrides are staged as a job runs them (``run_overrides``: format names and the
    screenshot's mode)."""
    before = len(errors)
    why = valid_http_url(url)
    if why:
        errors.append(FieldError(url_loc if url_loc is not None else f"{loc}.url", why))
    if over:
        over = run_overrides(over)
        _check_options(over, loc, settings, errors, inherited)
    if len(errors) > before:
        return None
    try:  # meta is the caller's JSON: it must be storable as it came
        return orjson.dumps({"url": url.strip(), "meta": meta, "o": over}) + b"\n"
    except orjson.JSONEncodeError as exc:
        errors.append(FieldError(f"{loc}.meta", f"not storable as JSON: {exc}"))
        return None


def add_fields(into: dict[str, FieldType], more: Mapping[str, FieldType]) -> dict[str, FieldType]:
    """Add the fields of ``more`` that ``into`` lacks (a field's first type wins); ``into``."""
    for name, ftype in more.items():
        into.setdefault(name, ftype)
    return into


def missing_columns(fmt: str, fields: Mapping[str, str]) -> str | None:
    """Why ``fmt`` cannot be written with these typed ``fields`` (CSV and Parquet have one
    column per field, so they need at least one), or None."""
    if fmt in ("csv", "parquet") and not fields:
        return f"{fmt} needs an extract schema or selectors"
    return None


def output_fields(options: Sequence[ScrapeOptions | dict[str, Any]]) -> dict[str, FieldType]:
    """Typed output columns: extract fields with their types, selector-only fields as strings.
    The defaults come first; per-URL overrides add fields they introduce."""
    fields: dict[str, FieldType] = {}
    for opt in options:
        d = opt.model_dump() if isinstance(opt, ScrapeOptions) else opt
        for name, ftype in (d.get("extract") or {}).items():
            fields.setdefault(name, ftype)
        for name in d.get("selectors") or {}:
            fields.setdefault(name, "string")
    return fields


def validate(
    body: JobCreate,
    settings: Settings,
    account: AccountRow,
    upload: UploadRow | None = None,
    previous: JobRow | None = None,
    *,
    loc: str = "",
) -> tuple[JobSpec, list[bytes]]:
    """Check a create request against the limits; return the spec and the staged input lines
    (``stage_record``; none for a file input). ``upload`` is the account's upload
    ``input.upload_id`` names (``None`` when it has none of that id); ``previous`` the
    account's job ``compare.previous_job_id`` names (``None`` when it has none of that id).
    ``loc`` prefixes every error location (``job.`` for a schedule's job template).

    Raises ``InputError`` naming every offending field."""
    try:
        return _validate(body, settings, account, upload, previous, [])
    except InputError as exc:
        if not loc:
            raise
        raise InputError(
            exc.detail, errors=[FieldError(f"{loc}{e.loc}", e.msg) for e in exc.errors]
        ) from None


def _validate(
    body: JobCreate,
    settings: Settings,
    account: AccountRow,
    upload: UploadRow | None,
    previous: JobRow | None,
    errors: list[FieldError],
) -> tuple[JobSpec, list[bytes]]:
    entries = body.items()
    source = body.source()
    single = isinstance(body.input, SingleUrlInput)
    url_loc = "urls" if body.urls is not None else ("input.url" if single else "input.urls")
    if not entries and source is None:
        errors.append(FieldError(url_loc, "at least one URL is required"))
    if len(entries) > settings.max_inline_urls:
        errors.append(
            FieldError(url_loc, f"at most {settings.max_inline_urls} inline URLs (use an upload)")
        )
    plan = plan_for(account.plan, settings)
    cap = plan.concurrency_cap
    if body.concurrency > cap:
        errors.append(FieldError("concurrency", f"at most {cap} for this account"))
    per_job = plan.max_urls_per_job
    if len(entries) > per_job:
        errors.append(FieldError(url_loc, f"at most {per_job} URLs per job"))
    file_fields, file_shots = (
        _check_source(source, upload, per_job, errors) if source else ({}, False)
    )
    expires = body.output.expires_in_s
    if expires is not None and expires > settings.max_link_expiry_s:
        errors.append(
            FieldError("output.expires_in_s", f"at most {settings.max_link_expiry_s} seconds")
        )
    defaults = RunOptions.model_validate(body.effective_defaults())
    job_opts = defaults.model_dump()
    _check_options(job_opts, "defaults", settings, errors, job_opts)

    lines: list[bytes] = []
    overrides_seen: list[dict[str, Any]] = [job_opts]
    if len(entries) <= settings.max_inline_urls:
        for i, entry in enumerate(entries):
            item = entry if isinstance(entry, UrlItem) else UrlItem(url=entry)
            loc = url_loc if single else f"{url_loc}[{i}]"
            over = run_overrides(item.overrides())
            if over:
                overrides_seen.append(over)
            line = stage_record(
                item.url,
                item.meta,
                over,
                settings,
                errors,
                loc=loc,
                url_loc=loc if isinstance(entry, str) else None,
                inherited=job_opts,
            )
            if line is not None:
                lines.append(line)

    fields = add_fields(output_fields(overrides_seen), file_fields)
    # an S3 file's per-URL fields are known once the job has read it (staging checks then)
    later = source is not None and source.kind == "s3"
    missing = None if later else missing_columns(body.output.format, fields)
    if missing:
        errors.append(FieldError("output.format", f"{missing} in defaults"))
    webhook = _webhook_spec(body.webhook, settings, errors)
    check_report_fields(body.compare, body.quality, fields, errors)
    if body.compare is not None and body.compare.previous_job_id is not None:
        _check_previous(body.compare.previous_job_id, previous, errors)
    if errors:
        raise InputError("the job request is invalid", errors=errors)
    spec = JobSpec(
        defaults=defaults,
        concurrency=body.concurrency,
        output=body.output,
        fields=fields,
        webhook=webhook,
        source=source,
        compare=body.compare,
        quality=body.quality,
        # an upload's rows are known now; an S3 file's once staging has read it (staging.py)
        screenshots=file_shots or any(o.get("screenshot") for o in overrides_seen),
    )
    return spec, lines


def check_report_fields(
    compare: CompareSpec | None,
    quality: QualitySpec | None,
    fields: Mapping[str, str],
    errors: list[FieldError],
    loc: str = "",
) -> None:
    """``compare.key`` (other than ``url``), ``compare.fields`` and ``quality.max_null_rate``
    must name extracted fields (the job's typed output columns)."""
    known = ", ".join(fields) or "none"
    if compare is not None:
        if compare.key != "url" and compare.key not in fields:
            errors.append(
                FieldError(
                    f"{loc}compare.key",
                    f"{compare.key!r} is not an extracted field (the job has: {known}); "
                    "give `url` or one of them",
                )
            )
        for i, name in enumerate(compare.fields or []):
            if name not in fields:
                errors.append(
                    FieldError(
                        f"{loc}compare.fields[{i}]",
                        f"{name!r} is not an extracted field (the job has: {known})",
                    )
                )
    if quality is not None:
        for name in quality.max_null_rate:
            if name not in fields:
                errors.append(
                    FieldError(
                        f"{loc}quality.max_null_rate.{name}",
                        f"{name!r} is not an extracted field (the job has: {known})",
                    )
                )


def _check_previous(job_id: str, previous: JobRow | None, errors: list[FieldError]) -> None:
    """The job to compare with must be the caller's own, ended with results still kept."""
    loc = "compare.previous_job_id"
    if previous is None:
        errors.append(FieldError(loc, f"no job {job_id}"))
    elif previous.status not in COMPARABLE_STATUSES:
        errors.append(
            FieldError(
                loc,
                f"job {job_id} is {previous.status}; compare with a job that "
                "ended completed or partial",
            )
        )
    elif previous.results_removed_at is not None:
        errors.append(FieldError(loc, f"the results of job {job_id} were removed (retention)"))


def _check_source(
    source: InputSource, upload: UploadRow | None, per_job: int, errors: list[FieldError]
) -> tuple[dict[str, FieldType], bool]:
    """Check a file input; return the output fields an upload's per-URL overrides add and
    whether one of its rows asks for a screenshot (an S3 file: unknown yet, ``{}, False``)."""
    if source.kind == "upload":
        if upload is None:
            errors.append(FieldError("input.upload_id", f"no upload {source.upload_id}"))
            return {}, False
        if upload.lines > per_job:
            errors.append(
                FieldError(
                    "input.upload_id",
                    f"the upload has {upload.lines} URLs; at most {per_job} per job",
                )
            )
        return dict(upload.fields or {}), bool(upload.screenshots)  # type: ignore[arg-type]
    scheme, _, rest = (source.uri or "").partition("://")
    bucket, _, key = rest.partition("/")
    if scheme not in ("s3", "gs") or not bucket or not key or key.endswith("/"):
        errors.append(FieldError("input.s3_uri", "give s3://bucket/key (or gs://) of one file"))
    elif scheme == "gs" and importlib.util.find_spec("gcsfs") is None:
        errors.append(FieldError("input.s3_uri", "gs:// needs gcsfs, not installed here"))
    arn = source.role_arn
    if arn is not None and (scheme != "s3" or not arn.startswith("arn:")):
        errors.append(
            FieldError("input.role_arn", "an IAM role ARN (arn:...:role/...) for an s3:// input")
        )
    return {}, False


def _webhook_spec(
    given: str | WebhookCreate | None, settings: Settings, errors: list[FieldError]
) -> WebhookSpec | None:
    """The job's webhook in one form; an unusable URL is an error at ``webhook`` (string form)
    or ``webhook.url``. Names are resolved (and checked by the SSRF guard) at delivery."""
    if given is None:
        return None
    url, loc = (given, "webhook") if isinstance(given, str) else (given.url, "webhook.url")
    why = valid_http_url(url)
    if why is None:
        policy = AddressPolicy.from_settings(settings)
        try:
            policy.check_literal(urlsplit(url.strip()).hostname or "")
        except BlockedAddress as exc:
            why = f"not a public address ({exc.address}); the operator does not allow it"
            if exc.address is None:  # a numeric host that is no IPv4 address (1.2.3.4.5)
                why = str(exc)
    if why:
        errors.append(FieldError(loc, why))
        return None
    events = list(WEBHOOK_EVENTS) if isinstance(given, str) else given.events
    # one of each, in the contract's order
    return WebhookSpec(url=url.strip(), events=[e for e in WEBHOOK_EVENTS if e in events])


def input_url(storage: Storage, job_id: str) -> str:
    return storage.url("jobs", job_id, "input.ndjson")


def stage_inline(storage: Storage, job_id: str, lines: list[bytes]) -> None:
    """Write the normalized input (``stage_record``'s lines, in input order)."""
    storage.write_bytes_atomic(input_url(storage, job_id), b"".join(lines))


def new_job_row(
    body: JobCreate, spec: JobSpec, account: AccountRow, urls_total: int | None
) -> JobRow:
    """A ``queued`` job row for a create request."""
    return job_row(account.id, body.name, body.priority, spec.model_dump(mode="json"), urls_total)


def job_row(
    account_id: str,
    name: str | None,
    priority: str,
    spec: dict[str, Any],
    urls_total: int | None,
    parent_job_id: str | None = None,
) -> JobRow:
    """A new ``queued`` job row (``spec`` is a ``JobSpec`` as JSON)."""
    return JobRow(
        id=new_id("job"),
        account_id=account_id,
        name=name,
        status="queued",
        priority=priority,
        concurrency=spec["concurrency"],
        spec=spec,
        urls_total=urls_total,
        parent_job_id=parent_job_id,
        created_at=utcnow(),
    )


def eta_seconds(row: JobRow, done: int) -> int | None:
    """Remaining time from the job's measured throughput; 0 when final, None when unknown."""
    if row.status in RESULT_STATUSES or row.status == "failed":
        return 0
    started = aware(row.started_at)
    if row.urls_total is None or started is None or done <= 0:
        return None
    elapsed = (utcnow() - started).total_seconds()
    rate = done / max(elapsed, 1e-3)
    return max(0, round((row.urls_total - done) / rate))


def to_public(row: JobRow, store: Store, settings: Settings) -> JobPublic:
    """The job as the API shows it; live counters come from the chunk rows while it runs."""
    final = row.completed_at is not None
    c = (
        Counters(row.urls_done, row.urls_errored, row.credits_used)
        if final
        else store.counters(row.id)
    )
    pct = None
    if row.urls_total:
        pct = round(100.0 * c.done / row.urls_total, 1)
    elif row.urls_total == 0 or row.status in RESULT_STATUSES:
        pct = 100.0
    expires_at = aware(row.output_expires_at)
    available = (
        bool(row.outputs) and row.status in RESULT_STATUSES and row.results_removed_at is None
    )
    expired = expires_at is not None and expires_at <= utcnow()
    url = expires = parts = None
    if available and expires_at is not None and not expired:
        links = [
            DownloadPart(
                url=downloads.sign(settings, row.id, o["name"], expires_at),
                rows=o["rows"],
                size_bytes=o["size_bytes"],
            )
            for o in row.outputs or []
        ]
        url, expires = links[0].url, expires_at
        parts = links if len(links) > 1 else None
    return JobPublic(
        id=row.id,
        name=row.name,
        status=row.status,  # type: ignore[arg-type]
        urls_total=row.urls_total,
        urls_done=c.done,
        urls_errored=c.errored,
        progress=Progress(percentage=pct),
        credits_used=c.credits,
        eta_s=eta_seconds(row, c.done),
        priority=row.priority,  # type: ignore[arg-type]
        concurrency=row.concurrency,
        created_at=aware(row.created_at),  # type: ignore[arg-type]
        started_at=aware(row.started_at),
        completed_at=aware(row.completed_at),
        cancel_requested_at=aware(row.cancel_requested_at),
        result_available=available and not expired,
        download_url=url,
        download_url_expires_at=expires,
        download_parts=parts,
        parent_job_id=row.parent_job_id,
        flow_run_id=row.flow_run_id,
        error=row.error,
        schedule_id=row.schedule_id,
        run_number=row.run_number,
        # the changes file's link lives and dies with the output's (same expiry, retention)
        changes=(
            {**row.changes, "download_url": row.changes.get("download_url") if url else None}
            if row.changes
            else row.changes
        ),
        quality=row.quality,
    )


def ensure_results_kept(row: JobRow) -> None:
    """Raise ``Gone`` when retention removed the job's files."""
    removed = aware(row.results_removed_at)
    if removed is not None:
        raise Gone(
            f"the results of job {row.id} were removed on {removed.isoformat()} "
            "(the account's retention period ended)"
        )


def link_expiry(spec: JobSpec, settings: Settings) -> timedelta:
    return timedelta(seconds=spec.output.expires_in_s or settings.default_link_expiry_s)
