"""shoal.jobs: validation against limits, aliases, per-URL overrides, staging, public view."""

from __future__ import annotations

import sys
from datetime import timedelta

import orjson
import pytest
from pydantic import ValidationError

from shoal import downloads
from shoal.contract import JobCreate, JobSpec, ScrapeOptions
from shoal.errors import InputError, field_errors
from shoal.jobs import (
    eta_seconds,
    input_url,
    link_expiry,
    new_job_row,
    output_fields,
    stage_inline,
    to_public,
    valid_http_url,
    validate,
)
from shoal.settings import Settings
from shoal.storage import Storage
from shoal.store import AccountRow, Counters, JobRow, Store, utcnow


@pytest.fixture
def cfg() -> Settings:
    return Settings(signing_secret="s", public_url="https://shoal.test")


@pytest.fixture
def acct() -> AccountRow:
    return AccountRow(id="acct_T", name="t", plan={}, webhook_secret="whsec_x")


def _locs(exc: pytest.ExceptionInfo[InputError]) -> list[str]:
    return [e.loc for e in exc.value.errors]


# --- aliases ----------------------------------------------------------------------------


def _items(lines: list[bytes]) -> list[dict]:
    """The staged lines ``validate`` returns, as the objects they hold."""
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    return [orjson.loads(line) for line in lines]


def test_top_level_urls_alias(cfg, acct):
    spec, lines = validate(JobCreate(urls=["https://a.com/1", " https://a.com/2 "]), cfg, acct)
    items = _items(lines)
    assert [i["url"] for i in items] == ["https://a.com/1", "https://a.com/2"]
    assert all(i["o"] == {} and i["meta"] is None for i in items)
    assert spec.concurrency == 32 and spec.output.format == "ndjson"


def test_input_url_alias_is_one_url(cfg, acct):
    body = JobCreate.model_validate({"input": {"url": "https://a.com/only"}})
    _, lines = validate(body, cfg, acct)
    assert _items(lines) == [{"url": "https://a.com/only", "meta": None, "o": {}}]


def test_top_level_selectors_go_to_defaults(cfg, acct):
    body = JobCreate.model_validate(
        {"urls": ["https://a.com"], "selectors": {"title": "h1", "img": "img@src"}}
    )
    spec, _ = validate(body, cfg, acct)
    assert spec.defaults.selectors == {"title": "h1", "img": "img@src"}
    assert spec.fields == {"title": "string", "img": "string"}


def test_top_level_selectors_replace_default_selectors(cfg, acct):
    body = JobCreate.model_validate(
        {"urls": ["https://a.com"], "selectors": {"t": "h1"}, "defaults": {"selectors": {"x": "p"}}}
    )
    spec, _ = validate(body, cfg, acct)
    assert spec.defaults.selectors == {"t": "h1"}


def test_input_and_urls_together_rejected():
    with pytest.raises(ValueError, match="exactly one"):
        JobCreate.model_validate({"input": {"urls": ["https://a.com"]}, "urls": ["https://a.com"]})
    with pytest.raises(ValueError, match="exactly one"):
        JobCreate.model_validate({})


# --- per-URL overrides ------------------------------------------------------------------


def test_per_url_overrides_kept_with_meta(cfg, acct):
    body = JobCreate.model_validate(
        {
            "input": {
                "urls": [
                    "https://a.com/1",
                    {
                        "url": "https://a.com/2",
                        "meta": {"sku": "X-1", "n": [1, 2]},
                        "timeout_s": 5,
                        "selectors": {"sku": ".sku"},
                    },
                    {"url": "https://a.com/3", "meta": "plain"},
                ]
            },
            "defaults": {"extract": {"price": "number"}},
        }
    )
    spec, lines = validate(body, cfg, acct)
    items = _items(lines)
    assert items[0] == {"url": "https://a.com/1", "meta": None, "o": {}}
    assert items[1]["meta"] == {"sku": "X-1", "n": [1, 2]}
    assert items[1]["o"] == {"timeout_s": 5, "selectors": {"sku": ".sku"}}
    assert items[2] == {"url": "https://a.com/3", "meta": "plain", "o": {}}
    # defaults come first, an override adds the field it introduces
    assert list(spec.fields.items()) == [("price", "number"), ("sku", "string")]


def test_override_only_fields_allow_csv(cfg, acct):
    body = JobCreate.model_validate(
        {
            "urls": [{"url": "https://a.com", "extract": {"n": "integer"}}],
            "output": {"format": "csv"},
        }
    )
    spec, _ = validate(body, cfg, acct)
    assert spec.fields == {"n": "integer"}


def test_invalid_override_value_names_the_item(cfg, acct):
    no_browser = cfg.model_copy(update={"render_executable": "/nonexistent/chromium"})
    body = JobCreate.model_validate(
        {"urls": ["https://a.com", {"url": "https://b.com", "render": True}]}
    )
    with pytest.raises(InputError) as exc:
        validate(body, no_browser, acct)
    assert _locs(exc) == ["urls[1].render"]
    assert "SHOAL_RENDER_EXECUTABLE='/nonexistent/chromium'" in exc.value.errors[0].msg


def test_bad_url_in_object_names_url_subfield(cfg, acct):
    body = JobCreate.model_validate({"input": {"urls": [{"url": "ftp://x"}]}})
    with pytest.raises(InputError) as exc:
        validate(body, cfg, acct)
    assert _locs(exc) == ["input.urls[0].url"]


# --- output_fields --------------------------------------------------------------------


def test_output_fields_extract_types_and_selector_only_strings():
    opts = ScrapeOptions(
        extract={"price": "number", "tags": "list[string]"},
        selectors={"price": ".p", "name": "h1"},
    )
    assert output_fields([opts]) == {"price": "number", "tags": "list[string]", "name": "string"}


def test_output_fields_first_type_wins_and_overrides_add():
    fields = output_fields(
        [
            ScrapeOptions(extract={"a": "integer"}),
            {"extract": {"a": "string", "b": "boolean"}},
            {"selectors": {"c": "p"}},
        ]
    )
    assert fields == {"a": "integer", "b": "boolean", "c": "string"}


def test_output_fields_empty():
    assert output_fields([ScrapeOptions()]) == {}


# --- limits ---------------------------------------------------------------------------


def test_every_error_is_reported_at_once(cfg, acct):
    body = JobCreate.model_validate(
        {
            "input": {"urls": ["https://ok.com", "nope", "http://"]},
            "defaults": {"proxy_type": "datacenter"},
            "output": {"format": "parquet", "expires_in_s": 10**7},
        }
    )
    with pytest.raises(InputError) as exc:
        validate(body, cfg, acct)
    assert set(_locs(exc)) == {
        "input.urls[1]",
        "input.urls[2]",
        "defaults.proxy_type",
        "output.format",
        "output.expires_in_s",
    }


def test_inline_limit_from_settings(acct):
    cfg = Settings(max_inline_urls=3)
    ok = JobCreate(urls=[f"https://a.com/{i}" for i in range(3)])
    assert len(validate(ok, cfg, acct)[1]) == 3
    with pytest.raises(InputError) as exc:
        validate(JobCreate(urls=[f"https://a.com/{i}" for i in range(4)]), cfg, acct)
    assert "urls" in _locs(exc)


def test_plan_caps(cfg):
    acct = AccountRow(
        id="acct_S",
        name="s",
        plan={"concurrency_cap": 4, "max_urls_per_job": 2},
        webhook_secret="w",
    )
    body = JobCreate(urls=["https://a.com/1", "https://a.com/2", "https://a.com/3"], concurrency=5)
    with pytest.raises(InputError) as exc:
        validate(body, cfg, acct)
    assert set(_locs(exc)) == {"concurrency", "urls"}


def test_max_body_bytes_over_operator_max(cfg, acct):
    body = JobCreate.model_validate(
        {"urls": ["https://a.com"], "defaults": {"max_body_bytes": cfg.max_body_bytes + 1}}
    )
    with pytest.raises(InputError) as exc:
        validate(body, cfg, acct)
    assert _locs(exc) == ["defaults.max_body_bytes"]


def test_screenshot_needs_render(cfg, acct):
    body = JobCreate.model_validate(
        {"urls": ["https://a.com"], "defaults": {"formats": ["screenshot"]}}
    )
    with pytest.raises(InputError) as exc:
        validate(body, cfg, acct)
    assert "defaults.formats" in _locs(exc)


# --- rendering ------------------------------------------------------------------------------


@pytest.fixture
def browser_cfg(cfg) -> Settings:
    """Settings of a host where rendering can run (any executable stands for the browser:
    validation only asks whether there is one)."""
    return cfg.model_copy(update={"render_executable": sys.executable})


def test_render_with_its_options_is_accepted_where_a_browser_is(browser_cfg, acct):
    body = JobCreate.model_validate(
        {
            "urls": [
                "https://a.com",
                {"url": "https://b.com", "wait_for": "networkidle", "block_resources": []},
                {"url": "https://c.com", "formats": ["data", "screenshot"]},
            ],
            "defaults": {
                "render": True,
                "wait_for": {"selector": ".price"},
                "block_resources": ["image", "font"],
                "formats": ["data", {"screenshot": {"full_page": True}}],
            },
        }
    )
    spec, lines = validate(body, browser_cfg, acct)
    assert spec.defaults.wait_for == {"selector": ".price"}
    assert spec.defaults.block_resources == ["image", "font"]
    # normalized once, here: names, and the screenshot's mode as a field of its own
    assert (spec.defaults.formats, spec.defaults.screenshot) == (
        ["data", "screenshot"],
        "full_page",
    )
    assert spec.screenshots  # CSV/Parquet get a screenshot_url column
    over = [i["o"] for i in _items(lines)]
    assert over[1] == {"wait_for": "networkidle", "block_resources": []}
    # a URL giving formats gets its mode with them (a shallow merge replaces both)
    assert over[2] == {"formats": ["data", "screenshot"], "screenshot": "viewport"}
    # the stored spec reads back (the flow validates it again)
    again = JobSpec.model_validate(spec.model_dump(mode="json"))
    assert again.defaults == spec.defaults


def test_a_spec_stored_in_the_request_form_reads_in_the_run_form(cfg, acct):
    """Job rows stored before the run form (the object form inside ``formats``, no
    ``screenshot``) read as new ones: resumed runs and retries of old jobs see the same."""
    spec, _ = validate(JobCreate(urls=["https://a.com"]), cfg, acct)
    old = spec.model_dump(mode="json")
    del old["defaults"]["screenshot"]
    for formats, names, mode in [
        (["data", {"screenshot": {"full_page": True}}], ["data", "screenshot"], "full_page"),
        ([{"screenshot": {}}, "html"], ["screenshot", "html"], "viewport"),
        (["data", "screenshot"], ["data", "screenshot"], "viewport"),
        (["data"], ["data"], None),
    ]:
        old["defaults"]["formats"] = formats
        got = JobSpec.model_validate(old).defaults
        assert (got.formats, got.screenshot) == (names, mode)


def test_lines_staged_in_the_request_form_run_in_the_run_form():
    """A chunk reads lines staged before the run form (an old upload's, a resumed or
    retried job's) into it, once; lines in the run form stay as they are."""
    from shoal.scrape import _run_form

    items = [
        {"url": "https://a.com/0", "i": 0, "o": {"formats": [{"screenshot": {"full_page": True}}]}},
        {"url": "https://a.com/1", "i": 1, "o": {"formats": ["data", "screenshot"]}},
        {"url": "https://a.com/2", "i": 2, "o": {"formats": ["html"], "screenshot": None}},
        {"url": "https://a.com/3", "i": 3, "o": {"timeout_s": 5}},
        {"url": "https://a.com/4", "i": 4},
    ]
    got = [it.get("o") for it in _run_form(items)]
    assert got == [
        {"formats": ["screenshot"], "screenshot": "full_page"},
        {"formats": ["data", "screenshot"], "screenshot": "viewport"},
        {"formats": ["html"], "screenshot": None},
        {"timeout_s": 5},
        None,
    ]


def test_render_without_a_browser_is_422_naming_the_missing_piece(cfg, acct):
    no_browser = cfg.model_copy(update={"render_executable": "/nonexistent/chromium"})
    body = JobCreate.model_validate({"urls": ["https://a.com"], "defaults": {"render": True}})
    with pytest.raises(InputError) as exc:
        validate(body, no_browser, acct)
    assert _locs(exc) == ["defaults.render"]
    assert "is not an executable" in exc.value.errors[0].msg


def test_a_url_screenshot_follows_the_job_render(browser_cfg, acct):
    ok = {
        "urls": [{"url": "https://a.com", "formats": ["screenshot"]}],
        "defaults": {"render": True},
    }
    validate(JobCreate.model_validate(ok), browser_cfg, acct)
    for body, loc in [
        (
            # the screenshot is the job's, the URL turns rendering off
            {
                "urls": [{"url": "https://a.com", "render": False}],
                "defaults": {"render": True, "formats": ["screenshot"]},
            },
            "urls[0].render",
        ),
        ({"urls": [{"url": "https://a.com", "formats": ["screenshot"]}]}, "urls[0].formats"),
        (
            {
                "urls": [{"url": "https://a.com", "formats": ["screenshot"], "render": False}],
                "defaults": {"render": True},
            },
            "urls[0].formats",
        ),
    ]:
        with pytest.raises(InputError) as exc:
            validate(JobCreate.model_validate(body), browser_cfg, acct)
        assert _locs(exc) == [loc]


@pytest.mark.parametrize(
    ("defaults", "loc"),
    [
        ({"wait_for": "soon"}, "defaults.wait_for"),
        ({"wait_for": {"selector": ""}}, "defaults.wait_for"),
        ({"wait_for": {"ms": 60_001}}, "defaults.wait_for"),
        ({"wait_for": {"ms": 5, "selector": "p"}}, "defaults.wait_for"),
        ({"wait_for": 5}, "defaults.wait_for"),
        ({"block_resources": ["pictures"]}, "defaults.block_resources[0]"),
        ({"block_resources": "image"}, "defaults.block_resources"),
        (
            {"formats": [{"screenshot": {"fullpage": True}}]},
            "defaults.formats[0].screenshot.fullpage",
        ),
        ({"formats": ["photo"]}, "defaults.formats[0]"),
    ],
)
def test_bad_render_options_name_the_field(defaults, loc):
    with pytest.raises(ValidationError) as exc:
        JobCreate.model_validate({"urls": ["https://a.com"], "defaults": defaults})
    assert loc in [e.loc for e in field_errors(exc.value.errors())]


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://example.com", True),
        ("HTTP://Example.com/a?b=1", True),
        ("ftp://example.com", False),
        ("example.com", False),
        ("http://", False),
        ("", False),
        ("   ", False),
        ("http://[::1", False),
        ("javascript:alert(1)", False),
    ],
)
def test_valid_http_url(url, ok):
    assert (valid_http_url(url) is None) is ok


def test_input_url_alias_error_loc(cfg, acct):
    body = JobCreate.model_validate({"input": {"url": "ftp://x"}})
    with pytest.raises(InputError) as exc:
        validate(body, cfg, acct)
    assert _locs(exc) == ["input.url"]


# --- staging, rows, public view -----------------------------------------------------


def test_stage_inline_one_line_per_item_in_order(tmp_path, cfg, acct):
    storage = Storage(str(tmp_path))
    body = JobCreate(urls=[f"https://a.com/{i}" for i in range(5)])
    _, staged = validate(body, cfg, acct)
    stage_inline(storage, "job_1", staged)
    with storage.open(input_url(storage, "job_1")) as fh:
        raw = fh.read()
    assert raw.endswith(b"\n")
    lines = raw.splitlines()
    assert [orjson.loads(line) for line in lines] == _items(staged)
    assert [orjson.loads(line)["url"] for line in lines] == [f"https://a.com/{i}" for i in range(5)]


def test_new_job_row(cfg, acct):
    body = JobCreate(urls=["https://a.com"], name="n", priority="high", concurrency=7)
    spec, items = validate(body, cfg, acct)
    row = new_job_row(body, spec, acct, urls_total=len(items))
    assert row.id.startswith("job_") and len(row.id) == 16
    assert (row.status, row.priority, row.concurrency, row.urls_total) == ("queued", "high", 7, 1)
    assert row.spec["concurrency"] == 7 and row.account_id == acct.id


def test_link_expiry(cfg):
    from shoal.contract import JobSpec, OutputSpec

    spec = JobSpec(defaults=ScrapeOptions(), concurrency=1, output=OutputSpec())
    assert link_expiry(spec, cfg) == timedelta(seconds=86_400)
    spec = JobSpec(defaults=ScrapeOptions(), concurrency=1, output=OutputSpec(expires_in_s=60))
    assert link_expiry(spec, cfg) == timedelta(seconds=60)


def _row(**kw) -> JobRow:
    values = dict(
        id="job_X",
        account_id="acct_T",
        name=None,
        status="running",
        priority="normal",
        concurrency=1,
        spec={},
        urls_total=100,
        urls_done=0,
        urls_errored=0,
        credits_used=0,
        created_at=utcnow() - timedelta(minutes=5),
    )
    values.update(kw)
    return JobRow(**values)


def test_eta_seconds():
    assert eta_seconds(_row(status="completed"), 0) == 0
    assert eta_seconds(_row(status="failed"), 0) == 0
    assert eta_seconds(_row(started_at=None), 10) is None
    assert eta_seconds(_row(urls_total=None, started_at=utcnow()), 10) is None
    assert eta_seconds(_row(started_at=utcnow()), 0) is None
    eta = eta_seconds(_row(started_at=utcnow() - timedelta(seconds=100)), 50)
    assert eta is not None and 95 <= eta <= 105


@pytest.fixture
def tstore(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path}/j.db")


def test_to_public_running_uses_live_counters(tstore, cfg):
    row = tstore.insert_job(_row(started_at=utcnow() - timedelta(seconds=10)))
    tstore.record_chunk(row.id, 0, Counters(20, 3, 25), finished=False, exact=False)
    pub = to_public(row, tstore, cfg)
    assert (pub.urls_done, pub.urls_errored, pub.credits_used) == (20, 3, 25)
    assert pub.progress.percentage == 20.0
    assert pub.eta_s is not None and pub.eta_s > 0
    assert pub.download_url is None and pub.result_available is False


def test_to_public_final_uses_row_counters_and_signs_links(tstore, cfg):
    exp = utcnow() + timedelta(hours=1)
    row = tstore.insert_job(
        _row(
            status="completed",
            completed_at=utcnow(),
            urls_done=100,
            credits_used=100,
            outputs=[{"name": "result.ndjson", "url": "/x", "rows": 100, "size_bytes": 9}],
            output_expires_at=exp,
        )
    )
    tstore.record_chunk(row.id, 0, Counters(1, 1, 1), finished=True, exact=True)  # ignored
    pub = to_public(row, tstore, cfg)
    assert (pub.urls_done, pub.urls_errored, pub.eta_s) == (100, 0, 0)
    assert pub.progress.percentage == 100.0
    assert pub.result_available is True
    assert pub.download_url.startswith("https://shoal.test/v1/downloads/job_X/result.ndjson?")
    assert pub.download_url == downloads.sign(cfg, "job_X", "result.ndjson", exp)


def test_to_public_failed_has_no_result(tstore, cfg):
    row = tstore.insert_job(
        _row(
            status="failed",
            completed_at=utcnow(),
            error="boom",
            outputs=[{"name": "r", "url": "/x", "rows": 0, "size_bytes": 0}],
            output_expires_at=utcnow() + timedelta(hours=1),
        )
    )
    pub = to_public(row, tstore, cfg)
    assert pub.result_available is False and pub.download_url is None and pub.error == "boom"


def test_to_public_zero_urls_is_100_percent(tstore, cfg):
    row = tstore.insert_job(_row(urls_total=0, status="queued"))
    assert to_public(row, tstore, cfg).progress.percentage == 100.0
    row = tstore.insert_job(_row(id="job_Y", urls_total=None, status="queued"))
    assert to_public(row, tstore, cfg).progress.percentage is None
