"""Pydantic models of the REST contract: the one source of truth for field names.

Requests (``JobCreate``, ``UrlItem``...) forbid unknown fields so a typo is a ``422``.
Limits that the operator configures (inline URL count, concurrency cap...) are checked in
``shoal.jobs``, not here, because they come from ``Settings``.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shoal.headers import CONTROL, TOKEN
from shoal.render._models import RESOURCE_TYPES, Screenshot, WaitFor

FieldType = Literal["string", "number", "integer", "boolean", "url", "list[string]"]
Format = Literal["data", "html", "markdown", "text", "links", "metadata", "screenshot"]
ProxyType = Literal["none", "datacenter", "residential"]
Priority = Literal["low", "normal", "high"]
OutputFormat = Literal["ndjson", "csv", "parquet"]
JobStatus = Literal["queued", "running", "completed", "partial", "cancelled", "failed"]
FINAL_STATUSES: frozenset[str] = frozenset({"completed", "partial", "cancelled", "failed"})
RESULT_STATUSES: frozenset[str] = frozenset({"completed", "partial", "cancelled"})
WebhookEventType = Literal["job.completed", "job.cancelled", "job.failed", "job.quality_failed"]
#: ``job.quality_failed`` is sent besides ``job.completed`` when a quality gate failed
WEBHOOK_EVENTS: tuple[WebhookEventType, ...] = (
    "job.completed",
    "job.cancelled",
    "job.failed",
    "job.quality_failed",
)
WebhookEventState = Literal["pending", "delivered", "gave_up"]


# --- the checks every way a URL or an option arrives shares (inline, upload and S3 rows) ---

#: A longer URL is refused. RFC 9110 (4.1) asks only that URIs of 8,000 octets work, and common
#: servers refuse longer request lines (nginx's default 8 KB header buffer, Apache's
#: ``LimitRequestLine`` 8,190), so a longer URL would fail at the site anyway, while each costs
#: memory in the request and storage in every row that echoes it.
MAX_URL_LENGTH = 8192
#: DNS limits (RFC 1035 2.3.4): a name of at most 253 characters (the final dot aside) and
#: labels of at most 63. A longer host cannot resolve.
MAX_HOST_LENGTH = 253
MAX_LABEL_LENGTH = 63
#: The largest ``offset`` of a list or a results page: far past any count, and inside the
#: 64-bit integers SQLite and PostgreSQL compare it with (a larger one was a 500).
MAX_OFFSET = 2**53 - 1
#: Every id Shoal issues (``job_3F2D1A77B0E1``, ``upl_…``) matches this; another value is an
#: unknown id without asking the store (PostgreSQL refuses text holding NUL).
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ID = re.compile(ID_PATTERN)

# URLs this matches are certainly usable (scheme http(s), a plain ASCII host): the common case
# skips urlsplit, which matters for a million-line upload
_PLAIN_URL = re.compile(
    r"https?://([A-Za-z0-9.\-_~%!$&'()*+,;=]+)(?::([0-9]{1,5}))?(?:[/?#]|\Z)", re.I
)
#: control characters, refused inside a URL (surrounding whitespace is stripped first): no
#: site expects them, and they are how a request line or header is split
_URL_CTL = re.compile(r"[\x00-\x1f\x7f]")


def currency_field(field: str) -> str:
    """The name of the currency companion (ISO 4217) of ``number`` field ``field`` in ``data``
    and in CSV/Parquet columns. Here, not in ``shoal.extract``: the output builder names columns
    with it, and the API must not load the HTML parser."""
    return f"{field}_currency"


def is_id(value: str) -> bool:
    """Whether ``value`` has the shape of an id Shoal issues (else it is unknown: ``404``)."""
    return _ID.match(value) is not None


def _ascii_label(label: str) -> str:
    if label.isascii():
        return label
    try:
        return "xn--" + label.encode("punycode").decode("ascii")
    except UnicodeError:  # judged at fetch time (``invalid_url``); its length still counts
        return label


def host_problem(host: str) -> str | None:
    """None when ``host`` fits DNS's length limits (in its ASCII form), else why not."""
    name = host[:-1] if host.endswith(".") else host
    if not name.isascii():  # measured in its ASCII form (IDNA: ``xn--`` and punycode)
        name = ".".join(_ascii_label(label) for label in name.split("."))
    if len(name) > MAX_HOST_LENGTH:
        return f"host name longer than {MAX_HOST_LENGTH} characters"
    if any(len(label) > MAX_LABEL_LENGTH for label in name.split(".")):
        return f"host name label longer than {MAX_LABEL_LENGTH} characters"
    return None


def http_url_problem(url: Any) -> str | None:
    """None when ``url`` is a usable http(s) URL, else why not: the one check of a URL,
    for inline URLs, upload and S3 rows (``shoal.jobs.stage_record``) and webhooks alike."""
    if not isinstance(url, str) or not url.strip():
        return "not a URL"
    if len(url) > MAX_URL_LENGTH:
        return f"longer than {MAX_URL_LENGTH} characters"
    plain = _PLAIN_URL.match(url)
    if plain and not url[-1:].isspace() and not _URL_CTL.search(url):
        if plain.group(2) and int(plain.group(2)) > 65535:
            return "not a valid port (0-65535)"
        return host_problem(plain.group(1))
    url = url.strip()
    if _URL_CTL.search(url):
        return "URL has control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError as exc:
        return "not a valid port (0-65535)" if "port" in str(exc).lower() else "not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "not an http(s) URL"
    if not parts.hostname:
        return "URL has no host"
    return host_problem(parts.hostname)


def selector_problem(spec: str) -> str | None:
    """None when ``spec`` is a selector extraction can run (CSS, ``xpath:``, ``@attr``), else
    why not. Checked with extraction's own parsers, loaded only when a selector is given."""
    from shoal.extract._select import selector_problem as problem

    return problem(spec)


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise PydanticCustomError("nul", "may not hold NUL characters")
    return text


_HEADERS_DOC: dict[str, Any] = {
    "description": "Extra request headers: names are RFC 9110 tokens, values without control "
    "characters; hop-by-hop and framing headers (`Host`, `Content-Length`, "
    "`Transfer-Encoding`, `Connection`, `Keep-Alive`, `Upgrade`, `TE`, `Trailer`, `Proxy-*`) "
    "are refused.",
    "propertyNames": {"pattern": f"^{TOKEN}$"},
    "additionalProperties": {"type": "string", "pattern": f"^[^{CONTROL}]*$"},
}
#: an output field's name: a column of CSV and Parquet, so not empty and without control
#: characters (DuckDB and Arrow refuse those: the output failed to build)
FieldName = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
]


def _field_names_doc(schema: dict[str, Any]) -> None:
    """Say the name rule as ``propertyNames`` (pydantic writes ``patternProperties``, which
    leaves other names unconstrained in JSON Schema: a document looser than the check)."""
    for member in [schema, *schema.get("anyOf", [])]:
        pattern_props = member.pop("patternProperties", None)
        if pattern_props:
            (pattern, values), *_ = pattern_props.items()
            member.setdefault("propertyNames", {})["pattern"] = pattern
            member["additionalProperties"] = values


_SELECTORS_DOC = "field -> CSS selector (`xpath:` prefix for XPath; `@attr` suffix), checked "
_SELECTORS_DOC += "with the parsers extraction uses."


#: how the served document describes a URL to fetch; the check is ``http_url_problem``
#: (``shoal.jobs`` applies it, so that a file's rows meet the same rule)
UrlText = Annotated[
    str,
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_URL_LENGTH,
            "pattern": r"^\s*[Hh][Tt][Tt][Pp][Ss]?://[^\x00-\x1f\x7f]*?\s*$",
            "description": f"An http(s) URL: at most {MAX_URL_LENGTH} characters, a host of "
            f"at most {MAX_HOST_LENGTH} (labels {MAX_LABEL_LENGTH}).",
        }
    ),
]
#: ``maxItems`` is the operator's ``SHOAL_MAX_INLINE_URLS`` in the served document
_INLINE_DOC: dict[str, Any] = {"minItems": 1, "maxItems": 1000}


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScreenshotOptions(_Request):
    full_page: bool = Field(False, description="The whole page, not only the viewport.")


class ScreenshotFormat(_Request):
    """The object form of the ``screenshot`` format: ``{"screenshot": {"full_page": true}}``."""

    screenshot: ScreenshotOptions


#: an entry of ``formats``: a name, or the screenshot's object form
FormatItem = Format | ScreenshotFormat


def format_names(formats: list[Any] | None) -> list[str]:
    """The names of ``formats`` (as a model or as its JSON dump), each once, in order: the
    object form of the screenshot reads as ``screenshot``."""
    names: list[str] = []
    for f in formats or ():
        name = f if isinstance(f, str) else "screenshot"
        if name not in names:
            names.append(name)
    return names


def screenshot_of(formats: list[Any] | None) -> Screenshot | None:
    """``viewport`` or ``full_page`` when ``formats`` asks for a screenshot, else None."""
    for f in formats or ():
        if f == "screenshot":
            return "viewport"
        if isinstance(f, ScreenshotFormat):
            return "full_page" if f.screenshot.full_page else "viewport"
        if isinstance(f, dict) and "screenshot" in f:
            return "full_page" if (f["screenshot"] or {}).get("full_page") else "viewport"
    return None


#: why a URL asking for a screenshot without rendering is refused: inline (422 at
#: ``formats``), in a file's row (an ``invalid_url`` row) and when a job runs a file's row
#: that left ``render`` to the job's defaults (``shoal.scrape``) alike
SCREENSHOT_NEEDS_RENDER = "the screenshot format needs render: true"


def run_overrides(over: dict[str, Any]) -> dict[str, Any]:
    """Options (a URL's overrides, or all of them) as a job runs them: ``formats`` as names and
    ``screenshot`` the mode its object form asked for (``viewport``, ``full_page`` or None).
    A URL that gives ``formats`` gets ``screenshot`` with it, so a shallow merge over the
    job's defaults replaces both. Options without ``formats``, or already in this form, come
    back as they are."""
    if "formats" not in over or "screenshot" in over:
        return over
    formats = over["formats"]
    return {**over, "formats": format_names(formats), "screenshot": screenshot_of(formats)}


def _wait_for(value: Any) -> Any:
    """``wait_for`` as given, checked with the renderer's own parser (``WaitFor.parse``)."""
    try:
        WaitFor.parse(value)
    except (ValueError, TypeError) as exc:
        raise PydanticCustomError("wait_for", "{why}", {"why": str(exc)}) from None
    return value


WaitForField = Annotated[
    str | dict[str, Any],
    AfterValidator(_wait_for),
    WithJsonSchema(
        {
            "description": 'When a rendered page is read: `"load"` (default), `"networkidle"`, '
            '`{"selector": ".price"}` (present in the DOM) or `{"ms": 500}` (0-60000) after load.',
            "anyOf": [
                {"type": "string", "enum": ["load", "networkidle"]},
                {
                    "type": "object",
                    "properties": {"selector": {"type": "string", "minLength": 1}},
                    "required": ["selector"],
                    "additionalProperties": False,
                },
                {
                    "type": "object",
                    "properties": {"ms": {"type": "integer", "minimum": 0, "maximum": 60000}},
                    "required": ["ms"],
                    "additionalProperties": False,
                },
            ],
        }
    ),
]
#: what ``block_resources`` may name: the renderer's ``RESOURCE_TYPES``
ResourceType = Literal[
    "document", "stylesheet", "image", "media", "font", "script", "texttrack", "xhr", "fetch",
    "eventsource", "websocket", "manifest", "other",
]  # fmt: skip
assert set(ResourceType.__args__) == RESOURCE_TYPES  # type: ignore[attr-defined]
_BLOCK_DOC = 'Resource types a rendered page does not load; default `["image", "media", "font"]`.'


class ScrapeOptions(_Request):
    """What to do with one URL. Used for ``defaults`` and, as a subset, per-URL overrides."""

    render: bool = False
    wait_for: WaitForField | None = None
    block_resources: list[ResourceType] | None = Field(None, description=_BLOCK_DOC)
    proxy_type: ProxyType = "none"
    extract: dict[FieldName, FieldType] | None = Field(
        None,
        description="field -> type; values from selectors, else structured data.",
        json_schema_extra=_field_names_doc,
    )
    selectors: dict[FieldName, str] | None = Field(
        None, description=_SELECTORS_DOC, json_schema_extra=_field_names_doc
    )
    formats: list[FormatItem] = Field(default_factory=lambda: list[FormatItem](["data"]))
    timeout_s: float = Field(30, ge=1, le=120)
    headers: dict[str, str] = Field(default_factory=dict, json_schema_extra=_HEADERS_DOC)
    respect_robots: bool = True
    max_body_bytes: int | None = Field(None, ge=1, description="Default 10 MB, operator max.")
    max_per_host: int | None = Field(None, ge=1, le=256)


OVERRIDABLE: frozenset[str] = frozenset(ScrapeOptions.model_fields)


class RunOptions(ScrapeOptions):
    """``ScrapeOptions`` as a job runs them (``JobSpec.defaults``, and each staged URL's
    overrides through ``run_overrides``): ``formats`` are names and ``screenshot`` is the one
    mode the screenshot format asked for, decided once when the job is validated, so the
    per-URL path reads a field instead of the request's object form.

    Specs stored before this form (the object form inside ``formats``, no ``screenshot``) read
    into it: the validator normalizes what it is given, so old job rows, retries copying an
    old spec and resumed runs all see the same fields."""

    formats: list[Format] = Field(  # type: ignore[assignment]
        default_factory=lambda: list[Format](["data"])
    )
    screenshot: Screenshot | None = None

    @model_validator(mode="before")
    @classmethod
    def _run_form(cls, value: Any) -> Any:
        if isinstance(value, ScrapeOptions) and not isinstance(value, RunOptions):
            value = value.model_dump()
        if isinstance(value, dict):
            return run_overrides(value)
        return value


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity (RFC 8259 6); Python's parser accepts them, and the output
    would have echoed ``null``: the caller's ``meta`` must come back as sent, or be refused."""
    todo = [value]
    while todo:
        v = todo.pop()
        if isinstance(v, float) and not math.isfinite(v):
            raise PydanticCustomError("finite", "JSON has no NaN or Infinity")
        if isinstance(v, dict):
            todo.extend(v.values())
        elif isinstance(v, list):
            todo.extend(v)
    return value


#: the caller's own value, echoed in every output row as sent
Meta = Annotated[Any, AfterValidator(_finite)]


class UrlItem(_Request):
    """One URL with the caller's ``meta`` and any subset of the defaults (shallow override)."""

    url: UrlText
    meta: Meta = None
    render: bool | None = None
    wait_for: WaitForField | None = None
    block_resources: list[ResourceType] | None = Field(None, description=_BLOCK_DOC)
    proxy_type: ProxyType | None = None
    extract: dict[FieldName, FieldType] | None = Field(None, json_schema_extra=_field_names_doc)
    selectors: dict[FieldName, str] | None = Field(
        None, description=_SELECTORS_DOC, json_schema_extra=_field_names_doc
    )
    formats: list[FormatItem] | None = None
    timeout_s: float | None = Field(None, ge=1, le=120)
    headers: dict[str, str] | None = Field(None, json_schema_extra=_HEADERS_DOC)
    respect_robots: bool | None = None
    max_body_bytes: int | None = Field(None, ge=1)
    max_per_host: int | None = Field(None, ge=1, le=256)

    def overrides(self) -> dict[str, Any]:
        """The per-URL overrides that were given (``url`` and ``meta`` excluded)."""
        return self.model_dump(exclude_unset=True, exclude={"url", "meta"})


class InlineInput(_Request):
    urls: list[UrlText | UrlItem] = Field(
        description="1 to 1,000 URLs or URL objects.", json_schema_extra=_INLINE_DOC
    )


class SingleUrlInput(_Request):
    url: UrlText


class UploadInput(_Request):
    upload_id: str = Field(pattern=ID_PATTERN, description="An upload's id (`POST /v1/uploads`).")


class S3Input(_Request):
    s3_uri: str = Field(
        description="`s3://bucket/key` (or `gs://`) of an NDJSON or CSV file.",
        json_schema_extra={"pattern": r"^(?:s3|gs)://[^/]+/[\s\S]*[^/]$"},
    )
    role_arn: str | None = Field(
        None,
        description="IAM role to assume to read it (STS); `s3://` only.",
        json_schema_extra={"pattern": "^arn:"},
    )


def _input_form(value: Any) -> str | None:
    # pick the member by its key, so errors speak of that form only; the tags are class names
    # api/errors.py drops from error locations
    if isinstance(value, BaseModel):
        return type(value).__name__
    if not isinstance(value, dict):
        return None
    for key, tag in (
        ("urls", "InlineInput"),
        ("upload_id", "UploadInput"),
        ("s3_uri", "S3Input"),
        ("url", "SingleUrlInput"),
    ):
        if key in value:
            return tag
    return None


InputField = Annotated[
    Annotated[InlineInput, Tag("InlineInput")]
    | Annotated[SingleUrlInput, Tag("SingleUrlInput")]
    | Annotated[UploadInput, Tag("UploadInput")]
    | Annotated[S3Input, Tag("S3Input")],
    Discriminator(
        _input_form,
        custom_error_type="input_form",
        custom_error_message="give one of `urls`, `url`, `upload_id` or `s3_uri`",
    ),
]


class OutputSpec(_Request):
    format: OutputFormat = "ndjson"
    gzip: bool = False
    expires_in_s: int | None = Field(
        None, ge=1, description="Life of the download link; default 86,400, max 2,592,000."
    )


class WebhookCreate(_Request):
    """The object form of ``webhook``: where to POST, and which events (default: all)."""

    url: str = Field(max_length=2048, description="http(s) URL that receives the events.")
    events: list[WebhookEventType] = Field(
        default_factory=lambda: list(WEBHOOK_EVENTS),
        min_length=1,
        description="Events to send; `job.completed` covers `completed` and `partial`.",
    )


Rate = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class CompareSpec(_Request):
    """How a run is compared with an earlier one (a schedule's previous run, or
    ``previous_job_id``): rows matched by ``key``, ``fields`` compared (default: every
    extracted field)."""

    key: FieldName = Field("url", description="`url` (the input URL) or an extracted field.")
    fields: list[FieldName] | None = Field(
        None, min_length=1, description="Extracted fields to compare; default: all of them."
    )
    previous_job_id: str | None = Field(
        None,
        pattern=ID_PATTERN,
        description="The job to compare with (on `POST /v1/jobs`); a schedule's run uses the "
        "schedule's previous `completed` or `partial` run.",
    )


class QualitySpec(_Request):
    """Checks made when a run ends; a failed one turns `completed` into `partial`."""

    min_rows: int | None = Field(None, ge=0, le=2**53 - 1, description="Fewest result rows.")
    max_error_rate: Rate | None = Field(None, description="Largest share of errored rows.")
    max_null_rate: dict[FieldName, Rate] = Field(
        default_factory=dict, description="Per extracted field: largest share of null values."
    )
    max_changed_rate: Rate | None = Field(
        None, description="Largest share of compared keys that changed (needs a comparison)."
    )


def _webhook_form(value: Any) -> str:
    # the tags are names api/errors.py drops from error locations: `webhook.url`, not
    # `webhook.WebhookCreate.url`
    return "str" if isinstance(value, str) else "dict"


WebhookField = Annotated[
    Annotated[str, Tag("str"), Field(max_length=2048)] | Annotated[WebhookCreate, Tag("dict")],
    Discriminator(_webhook_form),
]


class JobCreate(_Request):
    """Body of ``POST /v1/jobs``. Aliases: top-level ``urls``/``selectors``, ``input.url``."""

    model_config = ConfigDict(
        extra="forbid",
        # ``_one_input`` as the document says it
        json_schema_extra={
            "oneOf": [
                {"required": ["input"], "properties": {"input": {"type": "object"}}},
                {"required": ["urls"], "properties": {"urls": {"type": "array"}}},
            ]
        },
    )

    name: Annotated[str, AfterValidator(_no_nul)] | None = Field(
        None, max_length=200, json_schema_extra={"pattern": "^[^\\x00]*$"}
    )
    input: InputField | None = None
    urls: list[UrlText | UrlItem] | None = Field(
        None, description="Alias of input.urls.", json_schema_extra=_INLINE_DOC
    )
    selectors: dict[FieldName, str] | None = Field(
        None, description="Alias of defaults.selectors.", json_schema_extra=_field_names_doc
    )
    defaults: ScrapeOptions = Field(default_factory=ScrapeOptions)
    concurrency: Annotated[int, Field(ge=1, le=256)] = 32
    priority: Priority = "normal"
    output: OutputSpec = Field(default_factory=OutputSpec)
    webhook: WebhookField | None = Field(
        None, description='A URL, or `{"url": "...", "events": ["job.completed", ...]}`.'
    )
    compare: CompareSpec | None = Field(None, description="Compare with an earlier job.")
    quality: QualitySpec | None = Field(None, description="Checks made when the job ends.")

    @model_validator(mode="after")
    def _one_input(self) -> JobCreate:
        given = (self.input is not None) + (self.urls is not None)
        if given != 1:
            raise ValueError("give exactly one of `input` or top-level `urls`")
        return self

    def items(self) -> list[str | UrlItem]:
        """The inline URL entries, whichever alias carried them."""
        if self.urls is not None:
            return self.urls
        if isinstance(self.input, SingleUrlInput):
            return [self.input.url]
        if isinstance(self.input, UploadInput | S3Input):
            return []  # a file: read by the job (see ``source``)
        assert isinstance(self.input, InlineInput)
        return self.input.urls

    def source(self) -> InputSource | None:
        """Where a file input comes from; ``None`` for inline URLs."""
        if isinstance(self.input, UploadInput):
            return InputSource(kind="upload", upload_id=self.input.upload_id)
        if isinstance(self.input, S3Input):
            return InputSource(kind="s3", uri=self.input.s3_uri, role_arn=self.input.role_arn)
        return None

    def effective_defaults(self) -> ScrapeOptions:
        if self.selectors is None:
            return self.defaults
        return self.defaults.model_copy(update={"selectors": self.selectors})


Cron = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    WithJsonSchema(
        {
            "type": "string",
            "description": "Five cron fields: minute hour day-of-month month day-of-week.",
            "examples": ["0 2 * * *"],
        }
    ),
]
#: the shortest interval of a schedule
MIN_INTERVAL_S = 60
ScheduleName = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
]


class ScheduleCreate(_Request):
    """Body of ``POST /v1/schedules``: a job template run on a cron or an interval.

    Exactly one of ``cron`` (with ``timezone``, default UTC) or ``interval_s``. The cron, the
    timezone and the job are checked by ``shoal.schedules`` (``422`` naming the field)."""

    name: ScheduleName = Field(description="Unique in the account (`schedules apply` keys on it).")
    cron: Cron | None = None
    timezone: str | None = Field(
        None, max_length=64, description="IANA name (`Europe/Berlin`) of the cron; default UTC."
    )
    interval_s: int | None = Field(None, ge=MIN_INTERVAL_S, le=366 * 86400)
    job: JobCreate = Field(description="A `POST /v1/jobs` body; `s3_uri` is read at each run.")
    compare: CompareSpec | None = Field(
        None, description="How each run is compared with the previous one (default: by URL)."
    )
    conditional: bool = Field(
        False, description="Ask with the previous run's ETag/Last-Modified; a 304 costs nothing."
    )
    quality: QualitySpec | None = None
    paused: bool = False


class SchedulePatch(_Request):
    """Body of ``PATCH /v1/schedules/{id}``: any top-level field of ``ScheduleCreate``.
    Giving ``cron`` drops ``interval_s`` and the other way round."""

    name: ScheduleName | None = None
    cron: Cron | None = None
    timezone: str | None = Field(None, max_length=64)
    interval_s: int | None = Field(None, ge=MIN_INTERVAL_S, le=366 * 86400)
    job: JobCreate | None = None
    compare: CompareSpec | None = None
    conditional: bool | None = None
    quality: QualitySpec | None = None
    paused: bool | None = None


class SchedulePublic(BaseModel):
    """A schedule as the API shows it."""

    id: str
    name: str
    cron: str | None
    timezone: str | None
    interval_s: int | None
    job: dict[str, Any] = Field(description="The job template as given.")
    compare: CompareSpec | None
    conditional: bool
    quality: QualitySpec | None
    paused: bool = Field(description="As Prefect's schedule says (a pause in its UI shows here).")
    created_at: datetime
    next_runs: list[datetime] = Field(description="The next 5 times (UTC); empty when paused.")
    last_job_id: str | None
    runs: int = Field(description="How many runs started.")
    skipped_runs: int = Field(description="Runs skipped because the previous one was going.")


class ScheduleList(BaseModel):
    schedules: list[SchedulePublic]
    total: int
    limit: int
    offset: int


class WebhookSpec(BaseModel):
    """A job's webhook, normalized (both request forms become this)."""

    url: str
    events: list[WebhookEventType]


class InputSource(BaseModel):
    """A job's file input, staged by the flow: an upload or an object store URI."""

    kind: Literal["upload", "s3"]
    upload_id: str | None = None
    uri: str | None = None
    role_arn: str | None = None


class JobSpec(BaseModel):
    """The validated job as the flow sees it (stored with the job row)."""

    defaults: RunOptions
    concurrency: int
    output: OutputSpec
    fields: dict[str, FieldType] = Field(
        default_factory=dict, description="Typed output columns from extract/selectors."
    )
    webhook: WebhookSpec | None = None
    source: InputSource | None = Field(
        None, description="The file input the flow stages; absent: inline, staged at creation."
    )
    compare: CompareSpec | None = None
    quality: QualitySpec | None = None
    #: set on a schedule's runs: ask with the previous run's validators (``conditional: true``)
    conditional: bool = False
    #: the defaults, an inline URL or a usable row of the input file ask for the screenshot
    #: format: CSV and Parquet outputs and results then have a ``screenshot_url`` column (NDJSON
    #: rows carry the key where they have one). Set once, before any part is written: at
    #: creation from the defaults, inline URLs and an upload's rows (``uploads.screenshots``,
    #: recorded as the upload reads them), by staging from an S3 file's rows. Absent in
    #: specs stored before files counted: false, the old columns.
    screenshots: bool = False


class Progress(BaseModel):
    percentage: float | None


class DownloadPart(BaseModel):
    url: str
    rows: int
    size_bytes: int


class JobPublic(BaseModel):
    """A job as the API shows it (`GET /v1/jobs/{id}`, list items, webhook `data`)."""

    id: str
    name: str | None
    status: JobStatus
    urls_total: int | None
    urls_done: int
    urls_errored: int
    progress: Progress
    credits_used: int
    eta_s: int | None
    priority: Priority
    concurrency: int
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    cancel_requested_at: datetime | None
    result_available: bool
    download_url: str | None
    download_url_expires_at: datetime | None
    download_parts: list[DownloadPart] | None
    parent_job_id: str | None
    flow_run_id: str | None
    error: str | None
    schedule_id: str | None = Field(None, description="The schedule this job is a run of.")
    run_number: int | None = Field(None, description="Its number among the schedule's runs.")
    changes: dict[str, Any] | None = Field(
        None,
        description="The change report against the previous run (`previous_job_id`, `added`, "
        "`removed`, `changed`, `unchanged`, `duplicate_keys`, `fields`, `download_url`); null "
        "when nothing was compared.",
    )
    quality: dict[str, Any] | None = Field(
        None,
        description='The quality gates\' result: `{"passed": bool, "failed": [{"check", '
        '"limit", "value"}]}`; null without gates.',
    )


class JobCreated(BaseModel):
    id: str
    name: str | None
    status: JobStatus
    urls_total: int | None
    eta_s: int | None
    created_at: datetime


class JobRetried(JobCreated):
    """Answer of ``POST /v1/jobs/{id}/retry``: the new job and the job it retries."""

    parent_job_id: str


class JobList(BaseModel):
    jobs: list[JobPublic]
    total: int
    limit: int
    offset: int


class ResultError(BaseModel):
    code: str
    message: str


class PageResult(BaseModel):
    """One output row (an NDJSON line; CSV/Parquet flatten it)."""

    url: str
    input_index: int
    status: Literal["ok", "error"]
    http_status: int | None = None
    final_url: str | None = None
    fetched_at: datetime | None = None
    elapsed_ms: int | None = None
    attempts: int = 0
    credits: int = 0
    content_hash: str | None = None
    meta: Any = None
    data: dict[str, Any] | None = None
    error: ResultError | None = None
    html: str | None = None
    markdown: str | None = None
    text: str | None = None
    links: list[str] | None = None
    metadata: dict[str, Any] | None = None
    screenshot_url: str | None = Field(
        None,
        description="Signed link to the page's PNG (the `screenshot` format, with `render`); "
        "it expires when the job's `download_url` does (rows read while the job runs: "
        "`output.expires_in_s` from the read).",
    )
    not_modified: bool | None = None
    change: Literal["added", "changed", "unchanged"] | None = None


class ResultPage(BaseModel):
    results: list[PageResult]
    total: int
    limit: int
    offset: int


class WebhookPayload(BaseModel):
    """The body Shoal POSTs to a job's webhook when the job ends."""

    id: str = Field(description="`evt_…`: the same in every attempt (deduplicate on it).")
    type: WebhookEventType
    created_at: datetime
    data: JobPublic = Field(description="The job as `GET /v1/jobs/{id}` showed it at its end.")


class WebhookEventPublic(BaseModel):
    """One event of a job (Shoal sends one, when the job ends) and where its delivery stands."""

    id: str
    type: WebhookEventType
    state: WebhookEventState = Field(
        description="`pending` (more attempts to come), `delivered` or `gave_up`."
    )
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime


class WebhookDelivery(BaseModel):
    """One attempt to deliver an event: what was sent where, and what came back."""

    id: str
    event_id: str
    event_type: WebhookEventType
    attempt: int = Field(description="1 for the first attempt of the event.")
    url: str
    requested_at: datetime
    status_code: int | None = Field(description="The receiver's HTTP status; null: no answer.")
    delivered: bool = Field(description="The receiver answered 2xx.")
    error: str | None = Field(
        description="Why it failed: `http_status: ...`, `timeout: ...`, `connect: ...`, "
        "`dns: ...`, `tls: ...`, `blocked: ...`; null when delivered."
    )
    duration_ms: int
    next_retry_at: datetime | None = Field(
        description="When the next attempt is due; null when delivered or given up."
    )


class WebhookLog(BaseModel):
    """``GET /v1/jobs/{id}/webhooks``: the job's webhook, its events and every attempt,
    oldest first."""

    job_id: str
    webhook: WebhookSpec | None
    events: list[WebhookEventPublic]
    deliveries: list[WebhookDelivery]


class UploadLineError(BaseModel):
    line: int = Field(description="1-based line of the file (a CSV header is line 1).")
    msg: str


class UploadPublic(BaseModel):
    """An uploaded URL file (``POST /v1/uploads``), ready to be a job's ``input.upload_id``."""

    id: str
    format: Literal["ndjson", "csv"]
    size_bytes: int = Field(description="Bytes received (compressed, when gzip).")
    lines: int = Field(description="Records: non-blank lines (CSV: rows after the header).")
    urls_valid: int
    errors: list[UploadLineError] = Field(description="The first 100 invalid lines.")
    created_at: datetime


class Health(BaseModel):
    """`GET /v1/health` answers this (`200`) only when a job posted now would be accepted and
    started; otherwise `503` with a `Problem` naming what is not ready."""

    status: Literal["ok"]
    version: str


class ProblemField(BaseModel):
    loc: str = Field(description="The field, as a path: `input.urls[3]`, `defaults.render`.")
    msg: str


class Problem(BaseModel):
    """Every error answer (RFC 9457 problem details, `application/problem+json`)."""

    type: str = Field(description="A URI naming the kind of problem.")
    title: str
    status: int
    detail: str
    errors: list[ProblemField] | None = Field(
        None, description="Each invalid field (`400` and `422`); absent otherwise."
    )
