"""The one ``Settings`` of Shoal: every knob is a ``SHOAL_*`` environment variable.

Tests override with environment variables and ``get_settings.cache_clear()``.
Secrets (``SHOAL_SIGNING_SECRET``) have no default: ``shoal up`` generates one per data folder
and passes it to the processes it starts.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shoal.headers import header_problem


class Settings(BaseSettings):
    """Operator configuration. The README's configuration table lists every field."""

    model_config = SettingsConfigDict(env_prefix="SHOAL_", extra="ignore")

    # where things live
    data_dir: Path = Field(Path(".shoal"), description="All local state: job store, results.")
    database_url: str | None = Field(None, description="Job store; default SQLite in data_dir.")
    results_url: str | None = Field(
        None,
        description="Where inputs, parts and outputs go (fsspec URL); default data_dir/results.",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="S3 API endpoint for s3:// results and inputs (MinIO, moto...); default AWS.",
    )
    s3_region: str | None = Field(None, description="S3 region; default from the AWS config.")
    sts_endpoint_url: str | None = Field(
        None, description="STS endpoint for `input.role_arn`; default the S3 endpoint, else AWS."
    )
    presign_ttl_s: int = Field(
        3600,
        ge=0,
        description="Life of the S3 presigned URL a download link redirects to (capped by the "
        "link's own expiry); 0: the API streams remote files itself.",
    )
    public_url: str = Field(
        "http://127.0.0.1:8000", description="Base URL of the API, used in download links."
    )
    signing_secret: SecretStr | None = Field(
        None, description="HMAC key for download links; required by the API and the worker."
    )

    # limits
    max_inline_urls: int = 1_000
    max_urls_per_job: int = 1_000_000
    max_concurrency: int = 256
    max_per_host: int = Field(
        64, description="Requests in flight to one host, across all jobs and workers."
    )
    host_lease_s: float = Field(
        15.0,
        ge=0,
        description="Life of a lease on a host's slots in the job store: a dead worker's share "
        "of max_per_host comes back after this; 0: max_per_host holds per job only.",
    )
    max_body_bytes: int = 50 * 1024 * 1024
    default_body_bytes: int = 10 * 1024 * 1024
    job_lifetime_s: int = 24 * 3600
    default_link_expiry_s: int = 86_400
    max_link_expiry_s: int = 2_592_000
    max_part_bytes: int = 50 * 1024**3
    max_upload_bytes: int = Field(
        1024**3, ge=1, description="Largest URL file (upload or S3 input), also once unzipped."
    )
    max_upload_ratio: int = Field(
        100,
        ge=1,
        description="A gzip URL file may decompress to at most this many times its size (past "
        "its first 16 MiB); beyond it: 413.",
    )
    max_upload_lines: int = Field(
        2_000_000,
        ge=1,
        description="Lines of a URL file, blank ones included (records: max_urls_per_job); "
        "beyond it: 413.",
    )
    max_json_body_bytes: int = Field(
        96 * 1024**2,
        ge=1,
        description="Largest JSON request body (413 beyond); 96 MiB holds 1,000,000 inline URLs "
        "of 90 characters.",
    )
    max_concurrent_jobs: int = Field(
        10, ge=1, description="Queued + running jobs per account (plan default; over it: 429)."
    )
    retention_days: int = Field(
        30, ge=0, description="Days a job's results are kept after it ends (plan default)."
    )
    upload_retention_days: int = Field(
        7, ge=0, description="Days an upload is kept for new jobs (jobs copy it when they start)."
    )
    maintenance_interval_s: int = Field(
        3600, ge=1, description="How often the maintenance flow removes expired results."
    )

    # fetching
    allow_private_networks: bool = Field(
        False, description="Allow fetching loopback/private addresses (tests, local demos)."
    )
    user_agent: str = "ShoalBot/0.1 (+https://github.com/shoal)"
    default_headers: dict[str, str] = Field(
        default_factory=dict,
        description='Headers sent with every request, as JSON ({"Accept-Language": "de"}).',
    )
    fetch_retries: int = Field(2, description="Extra attempts on connect errors and 5xx.")

    @field_validator("default_headers")
    @classmethod
    def _headers_sendable(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [f"{name!r} ({why})" for name, v in value.items() if (why := header_problem(name, v))]
        if bad:
            raise ValueError(f"headers Shoal may not send: {'; '.join(bad)}")
        return value

    @field_validator("user_agent")
    @classmethod
    def _user_agent_sendable(cls, value: str) -> str:
        if header_problem("User-Agent", value):
            raise ValueError("the user agent must not contain control characters (CR, LF, NUL)")
        return value

    max_redirects: int = 10
    allow_hosts: str = Field(
        "", description="Comma-separated hosts, .domain suffixes or CIDRs the SSRF guard allows."
    )
    connect_timeout_s: float = Field(10.0, description="Connecting (TCP + TLS) to one host.")
    read_timeout_s: float = Field(30.0, description="Longest silence while reading a response.")
    max_crawl_delay_s: float = Field(10.0, description="Cap on a robots.txt Crawl-delay.")

    proxies_datacenter: str = Field(
        "", description="Comma-separated proxy URLs of the `datacenter` pool (empty: none)."
    )
    proxies_residential: str = Field(
        "", description="Comma-separated proxy URLs of the `residential` pool (empty: none)."
    )
    parse_workers: int = Field(
        -1, description="Processes parsing pages beside the fetch loop; -1: one per core (0 on 1)."
    )

    # credits (published in the docs)
    credits_plain: int = 1
    credits_render: int = 5
    credits_residential: int = 10

    # job planning
    chunk_min_urls: int = Field(250, description="Smallest chunk (URLs per scrape task run).")
    chunk_max_urls: int = Field(5_000, description="Largest chunk.")
    max_chunks_per_job: int = Field(1_000, description="Chunks are sized to stay under this.")
    chunk_timeout_s: int = Field(3_600, description="A chunk task run is killed past this.")
    chunk_retries: int = 2
    max_resumes: int = Field(3, description="Times a crashed job is resumed before it fails.")
    resume_poll_s: float = Field(
        10.0, gt=0, description="How often the resume service compares jobs with their runs."
    )
    heartbeat_s: int = Field(
        30, ge=30, description="Flow-run heartbeat interval (Prefect accepts 30 s at least)."
    )
    zombie_after_s: int = Field(
        60, ge=45, description="A run silent this long after a heartbeat is set Crashed."
    )
    progress_interval_s: float = Field(1.0, description="How often live counters are written.")
    persist_rows: int = Field(
        500, ge=1, description="A running chunk writes its finished rows every this many rows..."
    )
    persist_interval_s: float = Field(
        2.0, gt=0, description="...or this often, so a kill loses little more than in flight."
    )
    chunk_processes: int = Field(
        -1,
        description="Processes running a job's chunks; -1: one per core; 0 or 1: in the flow.",
    )

    # rendering (shoal/render)
    rendering: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Whether the API accepts render: true. auto: where this host has a "
        "browser (the embedded stack, whose worker shares the host); on: without looking "
        "(an API on a host of its own; a worker without a browser answers render_failed rows "
        "naming what it lacks); off: never (422).",
    )
    render_executable: str | None = Field(
        None,
        description="The Chromium to render with; unset: chromium-headless-shell, then "
        "chromium, on PATH (Debian's packages; `make setup` installs the first as root).",
    )
    render_max_pages: int = Field(
        8, ge=1, description="Pages open at once per worker process, over all its jobs."
    )
    render_browsers: int = Field(1, ge=1, description="Browsers per worker process.")
    render_recycle_pages: int = Field(
        500, ge=1, description="A browser is replaced after rendering this many pages."
    )
    render_recycle_mb: int = Field(
        2048, ge=64, description="A browser whose processes' PSS grows past this is replaced."
    )
    render_js_heap_mb: int = Field(
        512, ge=16, description="V8 heap cap of one page: a page over it crashes (render_failed)."
    )

    # Prefect
    deployment_prefix: str = Field(
        "scrape-job",
        description="The flow part of the deployment names jobs start (deployment_names); the "
        "worker and prefect.yaml register `scrape-job`: only tests change it.",
    )
    worker_poll_s: float = Field(0.5, description="How often the worker asks for new runs.")
    worker_max_jobs: int = Field(4, description="Flow runs (jobs) one worker runs at once.")
    work_pool: str | None = Field(
        None,
        description="Unset: jobs start the embedded worker's deployments (`shoal up`); set: "
        "the deployments of prefect.yaml on this Prefect work pool, run by pool workers.",
    )
    queue_limit_high: int | None = Field(
        None, ge=0, description="Flow runs of the pool's `high` queue at once; unset: no limit."
    )
    queue_limit_normal: int | None = Field(
        None, ge=0, description="Flow runs of the pool's `normal` queue at once; unset: no limit."
    )
    queue_limit_low: int | None = Field(
        None, ge=0, description="Flow runs of the pool's `low` queue at once; unset: no limit."
    )
    pool_concurrency_limit: int | None = Field(
        None, ge=0, description="Flow runs of the whole work pool at once; unset: no limit."
    )

    # API
    idempotency_ttl_s: int = Field(
        86_400, ge=1, description="How long an Idempotency-Key of POST /v1/jobs is remembered."
    )

    rate_limit_per_s: float = Field(
        20.0,
        ge=0,
        description="Requests per second per account (per client address without a valid "
        "key), refilled continuously; over it: 429 with Retry-After. 0: no rate limit.",
    )
    rate_limit_burst: int = Field(
        100, ge=1, description="Requests an idle account may send at once before the rate applies."
    )
    prefect_calls: int = Field(
        4,
        ge=1,
        description="Calls starting flow runs the API makes to Prefect at once (one account: "
        "half of them, at least 1); the others wait their turn.",
    )

    # webhooks
    webhook_timeout_s: float = Field(
        10.0, gt=0, description="A delivery with no answer within this is a failed attempt."
    )
    webhook_backoff_s: float = Field(
        10.0, gt=0, description="Wait before the 2nd attempt; doubles after each failed one."
    )
    webhook_backoff_max_s: float = Field(3_600.0, gt=0, description="Longest wait between tries.")
    webhook_retry_for_s: float = Field(
        86_400.0, ge=0, description="No new attempt later than this after the job ended."
    )
    webhook_poll_s: float = Field(1.0, gt=0, description="How often the worker looks for due ones.")
    webhook_concurrency: int = Field(32, ge=1, description="Deliveries in flight in one worker.")

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'shoal.db').resolve()}"

    @property
    def storage_url(self) -> str:
        return self.results_url or str((self.data_dir / "results").resolve())

    def storage_options(self, url: str) -> dict[str, object]:
        """fsspec options for ``url``: the S3 endpoint and region for ``s3://``; credentials
        come from the usual AWS sources (environment, config files, instance role)."""
        if not url.startswith(("s3://", "s3a://")):
            return {}
        client: dict[str, object] = {}
        if self.s3_endpoint_url:
            client["endpoint_url"] = self.s3_endpoint_url
        if self.s3_region:
            client["region_name"] = self.s3_region
        return {"client_kwargs": client} if client else {}

    def proxy_pools(self) -> dict[str, list[str]]:
        """Configured proxy pools by `proxy_type`; a pool with no proxies is absent."""
        pools = {"datacenter": self.proxies_datacenter, "residential": self.proxies_residential}
        return {
            name: [p.strip() for p in raw.split(",") if p.strip()]
            for name, raw in pools.items()
            if raw.strip()
        }

    def secret(self) -> bytes:
        """The signing secret as bytes; refuses to run without one."""
        if self.signing_secret is None:
            raise RuntimeError("SHOAL_SIGNING_SECRET is not set (shoal up sets it for you)")
        return self.signing_secret.get_secret_value().encode()


#: what a worker needs to see the jobs the API made (a process worker passes its own
#: environment to the flow runs it starts)
STORE_HINT = (
    "a worker needs the API's job store and results: set SHOAL_DATABASE_URL and "
    "SHOAL_RESULTS_URL (and SHOAL_SIGNING_SECRET) in its environment as the API has them"
)


def redact_url(url: str) -> str:
    """``url`` without its password, for messages (``postgresql://shoal@db:5432/shoal``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def missing_job_message(settings: Settings, job_id: str) -> str:
    """Why a flow run of ``job_id`` found no job: the store it looked in and what to set."""
    where = redact_url(settings.db_url)
    default = "" if settings.database_url else " (SHOAL_DATABASE_URL unset: SQLite in the data dir)"
    return f"no job {job_id} in the job store {where}{default}; {STORE_HINT}"


#: job priorities, highest first; each has its deployment (and, on a work pool, its queue)
PRIORITIES = ("high", "normal", "low")
#: the work pool ``python -m deployments.pool`` sets up when ``SHOAL_WORK_POOL`` is unset; the
#: one prefect.yaml names
DEFAULT_WORK_POOL = "shoal"


def deployment_names(settings: Settings, *, embedded: bool | None = None) -> dict[str, str]:
    """The ``scrape-job`` deployments jobs start, by priority: ``{"high": "scrape-job/high", ...}``.

    Without ``SHOAL_WORK_POOL`` (or with ``embedded=True``) the embedded worker's set
    (``scrape-job/embedded-<priority>``, served by ``python -m deployments.serve``); with it the
    pool deployments of ``prefect.yaml`` (``scrape-job/<priority>``). The two sets never share a
    name, so an embedded stack and pool workers can use one Prefect server. The API starts jobs
    on these names, and its health check looks for them."""
    if embedded is None:
        embedded = settings.work_pool is None
    stem = "embedded-" if embedded else ""
    return {p: f"{settings.deployment_prefix}/{stem}{p}" for p in PRIORITIES}


#: the embedded worker's maintenance deployment (prefect.yaml's is ``maintenance/scheduled``)
EMBEDDED_MAINTENANCE = "maintenance/embedded"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
