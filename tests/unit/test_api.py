"""The HTTP layer: auth, problem details, validation locations, ownership, links."""

from __future__ import annotations

import copy
import json
import random
import sys
from datetime import timedelta
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from shoal import downloads
from shoal.contract import Problem
from shoal.storage import get_storage
from shoal.store import aware, utcnow

PROBLEM = "application/problem+json"


def assert_problem(r: httpx.Response, status: int, loc: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    Problem.model_validate(body)  # what the OpenAPI document says every error is
    assert body["status"] == status
    assert body["title"] and body["type"].startswith("https://")
    if loc is not None:
        locs = [e["loc"] for e in body.get("errors", [])]
        assert loc in locs, locs
    return body


def urls(n: int) -> list[str]:
    return [f"https://example.com/p/{i}" for i in range(n)]


def post_job(client, caller, body) -> httpx.Response:
    return client.post("/v1/jobs", headers=caller.headers, json=body)


# --- auth and malformed bodies -----------------------------------------------------------


def test_malformed_json_is_400(client, alice):
    r = client.post(
        "/v1/jobs",
        headers={**alice.headers, "Content-Type": "application/json"},
        content=b'{"urls": ["https://example.com"',
    )
    assert_problem(r, 400)


def test_missing_key_is_401_with_www_authenticate(client):
    r = client.post("/v1/jobs", json={"urls": urls(1)})
    assert_problem(r, 401)
    assert r.headers["www-authenticate"].lower().startswith("bearer")


def test_unknown_key_is_401(client, alice):
    r = client.get("/v1/jobs", headers={"Authorization": "Bearer sk_not-a-real-key"})
    assert_problem(r, 401)
    assert "www-authenticate" in r.headers


def test_wrong_scheme_is_401(client, alice):
    r = client.get("/v1/jobs", headers={"Authorization": f"Basic {alice.key}"})
    assert_problem(r, 401)


# --- create: field validation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"input": {"urls": urls(1)}, "bogus": 1}, "bogus"),
        ({"input": {"urls": urls(1_001)}}, "input.urls"),
        ({"input": {"urls": urls(1)}, "concurrency": 0}, "concurrency"),
        ({"input": {"urls": urls(1)}, "concurrency": 257}, "concurrency"),
        ({"input": {"urls": urls(1)}, "output": {"format": "csv"}}, "output.format"),
        ({"input": {"urls": urls(1)}, "output": {"format": "parquet"}}, "output.format"),
        ({"input": {"urls": [*urls(3), "ftp://example.com/x"]}}, "input.urls[3]"),
        ({"input": {"urls": [*urls(3), "not a url"]}}, "input.urls[3]"),
        ({"input": {"urls": [{"url": "https://e.com", "bogus": 1}]}}, "input.urls[0].bogus"),
        ({"input": {"urls": urls(1)}, "defaults": {"proxy_type": "residential"}}, None),
        ({"input": {"urls": urls(1)}, "defaults": {"timeout_s": 0}}, "defaults.timeout_s"),
        (
            {"input": {"urls": urls(1)}, "output": {"expires_in_s": 2_592_001}},
            "output.expires_in_s",
        ),
        ({"input": {"urls": urls(1)}, "urls": urls(1)}, None),
        ({"input": {"urls": []}}, "input.urls"),
        ({"urls": ["mailto:x@example.com"]}, "urls[0]"),
    ],
)
def test_invalid_create_is_422_naming_the_field(client, alice, flow_starter, body, loc):
    r = post_job(client, alice, body)
    problem = assert_problem(r, 422, loc)
    assert problem["errors"], "a 422 lists its errors"
    assert not flow_starter.calls


def test_residential_proxy_not_configured_names_the_field(client, alice):
    body = {"input": {"urls": urls(1)}, "defaults": {"proxy_type": "residential"}}
    assert_problem(post_job(client, alice, body), 422, "defaults.proxy_type")
    # the same on a per-URL override
    body = {"input": {"urls": [{"url": "https://e.com", "proxy_type": "residential"}]}}
    assert_problem(post_job(client, alice, body), 422, "input.urls[0].proxy_type")


def test_render_is_422_naming_the_missing_piece_or_accepted(
    client, alice, flow_starter, monkeypatch
):
    from shoal.settings import get_settings

    body = {
        "urls": urls(1),
        "defaults": {
            "render": True,
            "wait_for": {"selector": ".price"},
            "block_resources": ["image"],
            "formats": ["data", {"screenshot": {"full_page": True}}],
        },
    }
    monkeypatch.setenv("SHOAL_RENDER_EXECUTABLE", "/nonexistent/chromium")
    get_settings.cache_clear()
    problem = assert_problem(post_job(client, alice, body), 422, "defaults.render")
    assert "/nonexistent/chromium" in problem["errors"][0]["msg"]
    monkeypatch.setenv("SHOAL_RENDER_EXECUTABLE", sys.executable)  # "a browser" to validation
    get_settings.cache_clear()
    assert post_job(client, alice, body).status_code == 202
    bad = {"urls": urls(1), "defaults": {"render": True, "wait_for": "soon"}}
    assert_problem(post_job(client, alice, bad), 422, "defaults.wait_for")
    bad = {"urls": [{"url": "https://e.com", "block_resources": ["pictures"]}]}
    assert_problem(post_job(client, alice, bad), 422, "urls[0].block_resources[0]")


def test_expires_in_s_at_maximum_is_accepted(client, alice):
    body = {"input": {"urls": urls(1)}, "output": {"expires_in_s": 2_592_000}}
    assert post_job(client, alice, body).status_code == 202


def test_csv_with_selectors_is_accepted(client, alice):
    body = {"urls": urls(1), "selectors": {"name": "h1"}, "output": {"format": "csv"}}
    assert post_job(client, alice, body).status_code == 202


def test_plan_concurrency_cap_applies(client, alice, store):
    from shoal.store._db import session_scope
    from shoal.store._tables import AccountRow

    with session_scope(store.url) as s:
        s.get(AccountRow, alice.account.id).plan = {"concurrency_cap": 8}
    body = {"urls": urls(1), "concurrency": 9}
    assert_problem(post_job(client, alice, body), 422, "concurrency")
    assert post_job(client, alice, {**body, "concurrency": 8}).status_code == 202


# --- create: success path with a fake Prefect --------------------------------------------


def test_create_job_inserts_queued_row_and_stages_one_line_per_url(
    client, alice, store, settings, flow_starter
):
    items = [*urls(4), {"url": "https://example.com/o", "meta": {"sku": 7}, "timeout_s": 5}]
    r = post_job(client, alice, {"name": "n1", "input": {"urls": items}})
    assert r.status_code == 202, r.text
    created = r.json()
    assert created["status"] == "queued" and created["urls_total"] == 5
    assert created["id"].startswith("job_") and created["name"] == "n1"

    row = store.get_job(created["id"], alice.account.id)
    assert row is not None and row.status == "queued"
    assert row.flow_run_id == "fake-flow-run-1"
    assert [c.id for c in flow_starter.calls] == [created["id"]]

    storage = get_storage(settings)
    with storage.open(storage.url("jobs", created["id"], "input.ndjson"), "rb") as fh:
        lines = fh.read().splitlines()
    assert len(lines) == 5
    staged = [json.loads(line) for line in lines]
    assert [s["url"] for s in staged] == [*urls(4), "https://example.com/o"]
    assert staged[4]["meta"] == {"sku": 7} and staged[4]["o"] == {"timeout_s": 5}

    got = client.get(f"/v1/jobs/{created['id']}", headers=alice.headers)
    assert got.status_code == 200 and got.json()["status"] == "queued"


def test_create_job_when_prefect_is_down_fails_the_job(client, alice, store, flow_starter):
    flow_starter.fail = True
    r = post_job(client, alice, {"urls": urls(1)})
    assert_problem(r, 503)
    rows, total = store.list_jobs(alice.account.id, None, 10, 0)
    assert total == 1 and rows[0].status == "failed" and rows[0].error


# --- read, list, cancel -------------------------------------------------------------------


def test_get_job_of_another_account_is_404(client, alice, bob, make_job):
    job = make_job(bob.account)
    assert_problem(client.get(f"/v1/jobs/{job.id}", headers=alice.headers), 404)
    assert client.get(f"/v1/jobs/{job.id}", headers=bob.headers).status_code == 200


def test_get_unknown_job_is_404(client, alice):
    assert_problem(client.get("/v1/jobs/job_000000000000", headers=alice.headers), 404)


def test_get_job_shows_public_fields(client, alice, make_job):
    job = make_job(alice.account, name="x", urls_total=10)
    body = client.get(f"/v1/jobs/{job.id}", headers=alice.headers).json()
    assert body["id"] == job.id and body["name"] == "x" and body["status"] == "queued"
    assert body["urls_total"] == 10 and body["urls_done"] == 0
    assert body["result_available"] is False and body["download_url"] is None
    assert body["progress"] == {"percentage": 0.0}


def test_list_bad_status_is_422(client, alice):
    assert_problem(client.get("/v1/jobs?status=bogus", headers=alice.headers), 422, "status")
    assert_problem(
        client.get("/v1/jobs?status=running,bogus", headers=alice.headers), 422, "status"
    )


@pytest.mark.parametrize(("query", "loc"), [("limit=101", "limit"), ("limit=0", "limit")])
def test_list_bad_paging_is_422(client, alice, query, loc):
    assert_problem(client.get(f"/v1/jobs?{query}", headers=alice.headers), 422, loc)
    assert_problem(client.get("/v1/jobs?offset=-1", headers=alice.headers), 422, "offset")


def test_list_newest_first_with_filter_and_paging(client, alice, bob, make_job):
    t0 = utcnow() - timedelta(hours=1)
    statuses = ["queued", "running", "completed", "failed", "completed", "cancelled"]
    made = [
        make_job(alice.account, status=s, created_at=t0 + timedelta(minutes=i))
        for i, s in enumerate(statuses)
    ]
    make_job(bob.account, created_at=t0 + timedelta(minutes=30))
    newest_first = [j.id for j in reversed(made)]

    body = client.get("/v1/jobs", headers=alice.headers).json()
    assert [j["id"] for j in body["jobs"]] == newest_first
    assert body["total"] == 6 and body["limit"] == 20 and body["offset"] == 0

    body = client.get("/v1/jobs?status=completed,failed", headers=alice.headers).json()
    assert [j["id"] for j in body["jobs"]] == [made[4].id, made[3].id, made[2].id]
    assert body["total"] == 3
    assert {j["status"] for j in body["jobs"]} == {"completed", "failed"}

    body = client.get("/v1/jobs?limit=2&offset=1", headers=alice.headers).json()
    assert [j["id"] for j in body["jobs"]] == newest_first[1:3]
    assert (body["total"], body["limit"], body["offset"]) == (6, 2, 1)

    body = client.get("/v1/jobs?offset=10", headers=alice.headers).json()
    assert body["jobs"] == [] and body["total"] == 6


def test_cancel_of_another_account_is_404(client, alice, bob, make_job, store):
    job = make_job(bob.account)
    assert_problem(client.delete(f"/v1/jobs/{job.id}", headers=alice.headers), 404)
    assert store.get_job(job.id).cancel_requested_at is None


def test_cancel_of_final_job_is_409(client, alice, make_job):
    job = make_job(alice.account, status="completed", completed_at=utcnow())
    assert_problem(client.delete(f"/v1/jobs/{job.id}", headers=alice.headers), 409)


def test_cancel_of_queued_job_is_202(client, alice, make_job, store):
    job = make_job(alice.account)
    r = client.delete(f"/v1/jobs/{job.id}", headers=alice.headers)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["id"] == job.id and body["cancel_requested_at"] is not None
    assert body["status"] == "queued"  # graceful: the flow drains and ends it
    assert store.cancel_requested(job.id)


def test_cancel_unknown_job_is_404(client, alice):
    assert_problem(client.delete("/v1/jobs/job_FFFFFFFFFFFF", headers=alice.headers), 404)


# --- health, openapi, account ------------------------------------------------------------


def test_health_needs_no_key(client):
    from api.readiness import check_ready  # readiness itself: tests/integration/test_health.py

    client.app.dependency_overrides[check_ready] = lambda: None
    r = client.get("/v1/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_openapi_lists_the_job_paths(client):
    r = client.get("/v1/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for p in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/results"):
        assert p in paths


def test_openapi_documents_every_error_as_a_problem(client):
    spec = client.get("/v1/openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(spec)  # FastAPI's default, never served
    problem = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            for code, answer in op["responses"].items():
                if int(code) >= 400:
                    assert answer["content"] == problem, (method, path, code)
                    assert answer["description"], (method, path, code)
            if op.get("security"):
                assert "401" in op["responses"], (method, path)
    create = spec["paths"]["/v1/jobs"]["post"]["responses"]
    assert {"400", "401", "409", "422", "429", "503"} <= set(create)
    assert {"404", "410"} <= set(spec["paths"]["/v1/jobs/{job_id}/results"]["get"]["responses"])
    assert set(spec["components"]["schemas"]["Problem"]["required"]) == {
        "type",
        "title",
        "status",
        "detail",
    }


def test_unknown_route_is_problem_404(client, alice):
    assert_problem(client.get("/v1/nothing-here", headers=alice.headers), 404)


def test_account_and_rotate_secret(client, alice):
    r = client.get("/v1/account", headers=alice.headers)
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == alice.account.id and body["name"] == "a"
    assert body["webhook_secret"].startswith("whsec_")
    assert "concurrency_cap" in body["plan"]

    r = client.post("/v1/account/webhook-secret/rotate", headers=alice.headers)
    assert r.status_code == 200
    rotated = r.json()["webhook_secret"]
    assert rotated.startswith("whsec_") and rotated != body["webhook_secret"]
    again = client.get("/v1/account", headers=alice.headers).json()
    assert again["webhook_secret"] == rotated


def test_account_needs_key(client):
    assert_problem(client.get("/v1/account"), 401)


# --- signed download links -------------------------------------------------------------


@pytest.fixture
def finished_job(tmp_path, alice, make_job):
    path = tmp_path / "out" / "result.ndjson"
    path.parent.mkdir()
    data = b'{"url": "https://example.com", "input_index": 0, "status": "ok"}\n'
    path.write_bytes(data)
    job = make_job(
        alice.account,
        status="completed",
        started_at=utcnow() - timedelta(minutes=2),
        completed_at=utcnow(),
        urls_done=1,
        outputs=[{"name": "result.ndjson", "url": str(path), "rows": 1, "size_bytes": len(data)}],
        output_expires_at=utcnow() + timedelta(hours=1),
    )
    return job, data


def _path_and_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_finished_job_has_download_url_that_works_without_key(client, alice, finished_job):
    job, data = finished_job
    body = client.get(f"/v1/jobs/{job.id}", headers=alice.headers).json()
    assert body["result_available"] is True
    assert body["download_url"] and body["download_url_expires_at"]
    assert body["eta_s"] == 0 and body["progress"]["percentage"] == 100.0
    assert body["download_parts"] is None

    r = client.get(_path_and_query(body["download_url"]))  # no Authorization header
    assert r.status_code == 200, r.text
    assert r.content == data


def test_tampered_download_sig_is_404(client, alice, finished_job, settings):
    job, _ = finished_job
    url = client.get(f"/v1/jobs/{job.id}", headers=alice.headers).json()["download_url"]
    sig = parse_qs(urlsplit(url).query)["sig"][0]
    bad = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    assert_problem(client.get(_path_and_query(url.replace(sig, bad))), 404)
    # a valid link for a name that is not an output of the job
    other = downloads.sign(settings, job.id, "x.ndjson", utcnow() + timedelta(hours=1))
    assert_problem(client.get(_path_and_query(other)), 404)


def test_expired_download_link_is_410(client, finished_job, settings):
    job, _ = finished_job
    url = downloads.sign(settings, job.id, "result.ndjson", utcnow() - timedelta(seconds=5))
    assert_problem(client.get(_path_and_query(url)), 410)


def test_expired_output_has_no_download_url(client, alice, make_job, tmp_path):
    job = make_job(
        alice.account,
        status="completed",
        completed_at=utcnow(),
        outputs=[{"name": "result.ndjson", "url": str(tmp_path / "r"), "rows": 0, "size_bytes": 0}],
        output_expires_at=utcnow() - timedelta(seconds=1),
    )
    body = client.get(f"/v1/jobs/{job.id}", headers=alice.headers).json()
    assert body["download_url"] is None and body["result_available"] is False


def test_download_of_removed_file_is_410(client, finished_job, settings, tmp_path):
    job, _ = finished_job
    (tmp_path / "out" / "result.ndjson").unlink()
    url = downloads.sign(settings, job.id, "result.ndjson", utcnow() + timedelta(hours=1))
    assert_problem(client.get(_path_and_query(url)), 410)


def test_download_parts_listed_when_split(client, alice, make_job, tmp_path):
    outs = []
    for n in (1, 2):
        p = tmp_path / f"part-{n}.ndjson"
        p.write_bytes(b"{}\n" * n)
        outs.append({"name": p.name, "url": str(p), "rows": n, "size_bytes": 3 * n})
    job = make_job(
        alice.account,
        status="partial",
        completed_at=utcnow(),
        outputs=outs,
        output_expires_at=utcnow() + timedelta(hours=1),
    )
    body = client.get(f"/v1/jobs/{job.id}", headers=alice.headers).json()
    parts = body["download_parts"]
    assert [p["rows"] for p in parts] == [1, 2]
    assert body["download_url"] == parts[0]["url"]
    assert aware(job.output_expires_at) is not None
    assert client.get(_path_and_query(parts[1]["url"])).content == b"{}\n" * 2


# --- hostile bodies never 5xx ---------------------------------------------------------------

EXAMPLE = {
    "name": "nightly-catalog-2026-05-12",
    "input": {"urls": ["https://example.com/a", "https://example.com/b"]},
    "defaults": {
        "render": False,
        "proxy_type": "none",
        "extract": {"name": "string", "price": "number"},
        "selectors": {"name": "h1", "price": ".price"},
        "formats": ["data"],
        "timeout_s": 30,
        "headers": {},
    },
    "concurrency": 32,
    "priority": "normal",
    "output": {"format": "ndjson", "gzip": True, "expires_in_s": 86400},
}

HOSTILE = [
    None,
    [],
    {},
    "",
    "x" * 5000,
    -1,
    0,
    10**30,
    -(10**30),
    1.5,
    1e308,
    True,
    "\u0000",
    [None],
    {"a": None},
    [[[[]]]],
    {"url": None},
    "https://example.com/\u202e",
]


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _set(obj, path, value):
    obj = copy.deepcopy(obj)
    if not path:
        return value
    cur = obj
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value
    return obj


def _hostile_bodies(n: int = 60) -> list:
    rng = random.Random(20260512)
    paths = [p for p in _paths(EXAMPLE) if p]
    bodies = [[], "a string", None, 123, [EXAMPLE], {"input": None}, {"urls": None}]
    bodies += [{"input": {"urls": [None]}}, {"input": {"url": None}}, {"urls": [{}]}]
    for path in paths:  # every field of the example gets at least one wrong value
        bodies.append(_set(EXAMPLE, path, rng.choice(HOSTILE)))
    while len(bodies) < n + len(paths):
        body = EXAMPLE
        for _ in range(rng.randint(1, 3)):
            body = _set(body, rng.choice([p for p in _paths(body) if p]), rng.choice(HOSTILE))
        bodies.append(body)
    return bodies


def test_contract_example_base_is_accepted(client, alice):
    assert post_job(client, alice, EXAMPLE).status_code == 202


def test_hostile_bodies_never_5xx(client, alice):
    bodies = _hostile_bodies()
    assert len(bodies) >= 30
    seen = set()
    for body in bodies:
        r = post_job(client, alice, body)
        assert r.status_code < 500, (body, r.text)
        seen.add(r.status_code)
        if r.status_code >= 400:
            assert r.headers["content-type"].startswith(PROBLEM)
    assert 422 in seen


@pytest.mark.parametrize(
    "raw",
    [b"[", b"{", b'{"urls": }', b"\xff\xfe", b"nul", b'{"urls": ["https://e.com"]} trailing'],
)
def test_non_json_bodies_are_400(client, alice, raw):
    r = client.post(
        "/v1/jobs", headers={**alice.headers, "Content-Type": "application/json"}, content=raw
    )
    assert_problem(r, 400)


# --- found by these tests (fixed), and known gaps ---


def test_huge_integer_in_meta_is_not_5xx(client, alice):
    body = {"input": {"urls": [{"url": "https://example.com", "meta": {"n": 10**30}}]}}
    r = post_job(client, alice, body)
    assert r.status_code in (202, 422), r.text


@pytest.mark.parametrize(
    "raw",
    [
        b'{"urls": ["https://example.com/\\ud800"]}',
        b'{"input": {"urls": [{"url": "https://example.com", "meta": "\\ud800"}]}}',
    ],
)
def test_lone_surrogate_is_not_5xx(client, alice, raw):
    r = client.post(
        "/v1/jobs", headers={**alice.headers, "Content-Type": "application/json"}, content=raw
    )
    assert r.status_code in (202, 422), r.text


def test_contract_example_with_webhook_is_accepted(client, alice):
    body = {**EXAMPLE, "webhook": "https://your-app.com/hooks/jobs"}
    r = post_job(client, alice, body)
    assert r.status_code == 202, r.text


def test_prefect_warm_up_needs_a_prefect_api_url(monkeypatch) -> None:
    """Without PREFECT_API_URL the start-up warm-up must not open a client: Prefect would start
    a throwaway local server in the API process."""
    import asyncio

    from api import prefect_access
    from shoal.settings import Settings

    def no_client():  # type: ignore[no-untyped-def]
        raise AssertionError("a Prefect client was opened")

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(prefect_access, "get_client", no_client)
    asyncio.run(prefect_access.warm_up(Settings(), attempts=1))

    opened = []

    def failing_client():  # type: ignore[no-untyped-def]
        opened.append(1)
        raise OSError("connection refused")

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.setattr(prefect_access, "get_client", failing_client)
    asyncio.run(prefect_access.warm_up(Settings(), attempts=3, pause_s=0))  # never raises
    assert opened == [1, 1, 1]


def test_the_api_does_not_load_the_fetch_engine() -> None:
    """The API checks webhook addresses and reads part files, but never fetches: importing it
    must not load aiohttp, the engine or the parser (12 MB of its resident memory, counted
    against the 200 MB a million-line upload may use)."""
    import subprocess
    import sys

    probe = (
        "import sys, api.app; print(sorted(m for m in ('aiohttp', 'selectolax', "
        "'charset_normalizer', 'shoal.fetch._engine', 'shoal.scrape') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"


def test_results_as_csv_or_parquet_need_typed_columns(client, alice, make_job) -> None:
    """A job without an extract schema or selectors has no columns for CSV or Parquet: 422
    naming ``format`` (ndjson and the paged JSON still answer)."""
    job = make_job(alice.account, status="running")
    for fmt in ("csv", "parquet"):
        r = client.get(f"/v1/jobs/{job.id}/results?format={fmt}", headers=alice.headers)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["errors"] == [
            {"loc": "format", "msg": f"{fmt} needs an extract schema or selectors"}
        ]
    for fmt in ("json", "ndjson"):
        r = client.get(f"/v1/jobs/{job.id}/results?format={fmt}", headers=alice.headers)
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("sig", ["é" * 64, "ü" * 16, "\u202e" * 16])
def test_non_ascii_download_sig_is_404_without_a_key(client, finished_job, sig):
    """Found by fuzzing: a non-ASCII ``sig`` was a 500 (``hmac.compare_digest`` on text)."""
    job, _ = finished_job
    r = client.get(f"/v1/downloads/{job.id}/result.ndjson", params={"expires": 1, "sig": sig})
    assert_problem(r, 404)


# --- hostile input (issue 12): limits and checks at creation, one rule for every path --------

LONG_PATH = "https://example.com/" + "a" * (8192 - len("https://example.com/"))
LONG_HOST = "https://" + ".".join(["a" * 63] * 4)[:254] + "/"  # 254 characters of host
LONG_LABEL = "https://" + "a" * 64 + ".example.com/"


@pytest.mark.parametrize(
    ("entry", "loc"),
    [
        (LONG_PATH + "a", "input.urls[1]"),
        ({"url": LONG_PATH + "a"}, "input.urls[1].url"),
        ("https://example.com/" + "a" * 100_000, "input.urls[1]"),
        (LONG_HOST, "input.urls[1]"),
        (LONG_LABEL, "input.urls[1]"),
        ("https://" + "é" * 60 + ".com/", "input.urls[1]"),  # 63+ in its ASCII (IDNA) form
    ],
)
def test_overlong_urls_and_host_names_are_422(client, alice, flow_starter, entry, loc):
    body = {"input": {"urls": ["https://example.com/", entry]}}
    problem = assert_problem(post_job(client, alice, body), 422, loc)
    assert any("longer than" in e["msg"] for e in problem["errors"]), problem
    assert not flow_starter.calls


def test_urls_at_the_limits_are_accepted(client, alice):
    host = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 253 characters
    assert len(LONG_PATH) == 8192 and len(host) == 253
    body = {"input": {"urls": [LONG_PATH, f"https://{host}/", f"https://{host}./x"]}}
    assert post_job(client, alice, body).status_code == 202


def test_overlong_url_in_an_upload_is_an_errored_line(client, alice):
    """The same check for an uploaded row (and an S3 row: both go through stage_record)."""
    rows = [LONG_PATH + "a", LONG_HOST, "https://example.com/ok", {"url": LONG_LABEL}]
    content = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    r = client.post(
        "/v1/uploads",
        headers={**alice.headers, "Content-Type": "application/x-ndjson"},
        content=content,
    )
    assert r.status_code == 201, r.text
    up = r.json()
    assert up["urls_valid"] == 1
    assert [e["line"] for e in up["errors"]] == [1, 2, 4]
    assert all("longer than" in e["msg"] for e in up["errors"])


@pytest.mark.parametrize(
    ("where", "selectors", "loc"),
    [
        ("defaults", {"title": "a[[[["}, "defaults.selectors.title"),
        ("defaults", {"title": "h1", "x": "xpath://h1["}, "defaults.selectors.x"),
        ("defaults", {"x": "xpath:foo()"}, "defaults.selectors.x"),  # unknown function
        ("defaults", {"x": "p::before@href"}, "defaults.selectors.x"),
        ("defaults", {"x": ""}, "defaults.selectors.x"),
        ("url", {"price": "xpath://span[@class='p'"}, "input.urls[3].selectors.price"),
        ("url", {"price": ".p >"}, "input.urls[3].selectors.price"),
    ],
)
def test_invalid_selectors_are_422_naming_the_field(client, alice, where, selectors, loc):
    body: dict = {"input": {"urls": urls(3)}}
    if where == "defaults":
        body["defaults"] = {"selectors": selectors}
    else:
        body["input"]["urls"].append({"url": "https://example.com/x", "selectors": selectors})
    problem = assert_problem(post_job(client, alice, body), 422, loc)
    msg = next(e["msg"] for e in problem["errors"] if e["loc"] == loc)
    assert msg.startswith("not a valid "), msg


def test_valid_selectors_of_every_kind_are_accepted(client, alice):
    selectors = {
        "a": "h1",
        "b": "a.buy@href",
        "c": "xpath://meta[@property='og:title']/@content",
        "d": "div > p:nth-child(2n+1)",
        "e": "xpath:count(//a)",
    }
    body = {"urls": urls(1), "defaults": {"selectors": selectors}}
    assert post_job(client, alice, body).status_code == 202


def test_invalid_selector_in_an_upload_row_is_an_errored_line(client, alice):
    rows = [{"url": "https://example.com/1", "selectors": {"price": "a[[[["}}]
    content = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    r = client.post(
        "/v1/uploads",
        headers={**alice.headers, "Content-Type": "application/x-ndjson"},
        content=content,
    )
    up = r.json()
    assert up["urls_valid"] == 0
    assert up["errors"][0]["msg"].startswith("selectors.price: not a valid CSS selector")


@pytest.mark.parametrize(
    "name",
    [
        "Host",
        "content-length",
        "Transfer-Encoding",
        "Connection",
        "Keep-Alive",
        "Upgrade",
        "TE",
        "Trailer",
        "Proxy-Authorization",
        "proxy-connection",
        "Bad Name",
        "X:Y",
        "",
        "Ünïcode",
    ],
)
def test_reserved_or_malformed_header_names_are_422(client, alice, name):
    body = {"urls": urls(1), "defaults": {"headers": {name: "x"}}}
    assert_problem(post_job(client, alice, body), 422, f"defaults.headers.{name}")
    item = {"url": "https://example.com/", "headers": {"X-Ok": "1", name: "x"}}
    assert_problem(
        post_job(client, alice, {"input": {"urls": [item]}}), 422, f"input.urls[0].headers.{name}"
    )


@pytest.mark.parametrize("value", ["a\x7fb", "a\r\nX-Evil: 1", "\x00", "a\x1bb", "x\n"])
def test_header_values_with_control_characters_are_422(client, alice, value):
    body = {"urls": urls(1), "defaults": {"headers": {"X-Ok": value}}}
    assert_problem(post_job(client, alice, body), 422, "defaults.headers.X-Ok")


def test_ordinary_headers_are_accepted(client, alice):
    headers = {"Accept-Language": "de-CH, de;q=0.9", "X-Tab": "a\tb", "Cookie": "a=1; b=2"}
    body = {"urls": urls(1), "defaults": {"headers": headers}}
    assert post_job(client, alice, body).status_code == 202


@pytest.mark.parametrize(
    ("path", "loc"),
    [
        ("/v1/jobs?offset=9223372036854775808", "offset"),
        ("/v1/jobs?offset=9007199254740992", "offset"),
        ("/v1/jobs?limit=5&offset=99999999999999999999999999", "offset"),
    ],
)
def test_offsets_past_the_maximum_are_422(client, alice, path, loc):
    """``offset=2**63`` was a 500 (SQLite INTEGER overflow)."""
    assert_problem(client.get(path, headers=alice.headers), 422, loc)


def test_results_offset_past_the_maximum_is_422_and_the_maximum_works(client, alice, make_job):
    job = make_job(alice.account, status="running")
    r = client.get(f"/v1/jobs/{job.id}/results?offset=9223372036854775808", headers=alice.headers)
    assert_problem(r, 422, "offset")
    for path in (f"/v1/jobs/{job.id}/results", "/v1/jobs"):
        r = client.get(f"{path}?offset={2**53 - 1}", headers=alice.headers)
        assert r.status_code == 200 and r.json()["offset"] == 2**53 - 1, r.text


@pytest.mark.parametrize("job_id", ["job_\x00", "x" * 65, "job 1", "job_é"])
@pytest.mark.parametrize("suffix", ["", "/results", "/result", "/webhooks"])
def test_non_ids_are_404_without_a_query(client, alice, store, monkeypatch, job_id, suffix):
    """PostgreSQL refuses text holding NUL (a 500): such an id is unknown before the store."""

    def no_query(*_a, **_k):
        raise AssertionError("the store was asked")

    monkeypatch.setattr(type(store), "get_job", no_query)
    assert_problem(client.get(f"/v1/jobs/{quote(job_id)}{suffix}", headers=alice.headers), 404)
    if not suffix:
        assert_problem(client.delete(f"/v1/jobs/{quote(job_id)}", headers=alice.headers), 404)
        r = client.post(f"/v1/jobs/{quote(job_id)}/retry", headers=alice.headers)
        assert_problem(r, 404)


@pytest.mark.parametrize("upload_id", ["upl_\x00", "x" * 65, "upl 1", "upl_é"])
def test_non_upload_ids_are_404_without_a_query(client, alice, store, monkeypatch, upload_id):
    """As for jobs: ``GET /v1/uploads/upl_%00`` was a 500 on PostgreSQL."""

    def no_query(*_a, **_k):
        raise AssertionError("the store was asked")

    monkeypatch.setattr(type(store), "get_upload", no_query)
    assert_problem(client.get(f"/v1/uploads/{quote(upload_id)}", headers=alice.headers), 404)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"urls": urls(1), "name": "a\x00b"}, "name"),
        ({"input": {"upload_id": "upl_\x00"}}, "input.upload_id"),
        ({"input": {"upload_id": "x" * 65}}, "input.upload_id"),
    ],
)
def test_text_the_job_store_cannot_hold_is_422(client, alice, body, loc):
    assert_problem(post_job(client, alice, body), 422, loc)


def test_list_status_filter_is_checked_as_documented(client, alice, make_job):
    from api.routers.jobs import STATUS_FILTER

    spec = client.get("/v1/openapi.json").json()
    params = spec["paths"]["/v1/jobs"]["get"]["parameters"]
    status = next(p for p in params if p["name"] == "status")
    assert STATUS_FILTER in json.dumps(status["schema"]).replace("\\\\", "\\")
    make_job(alice.account, status="failed")
    for ok in ("failed", "running, failed", "queued,running,completed,partial,cancelled,failed"):
        r = client.get("/v1/jobs", params={"status": ok}, headers=alice.headers)
        assert r.status_code == 200 and r.json()["total"] == 1, (ok, r.text)
    for bad in ("failed,,running", "failedrunning", "Failed", ","):
        r = client.get("/v1/jobs", params={"status": bad}, headers=alice.headers)
        assert_problem(r, 422, "status")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/jobs/job_000000000000", "GET, DELETE"),
        ("POST", "/v1/jobs/job_000000000000", "GET, DELETE"),
        ("PATCH", "/v1/jobs", "GET, POST"),
        ("DELETE", "/v1/account", "GET"),
        ("GET", "/v1/account/webhook-secret/rotate", "POST"),
        ("PUT", "/v1/downloads/job_000000000000/r.ndjson", "GET"),
    ],
)
def test_405_allow_lists_every_method_of_the_path(client, alice, method, path, allow):
    """Starlette named only the first route's methods (``/v1/jobs/{id}`` said ``GET``)."""
    r = client.request(method, path, headers=alice.headers)
    assert_problem(r, 405)
    assert r.headers["allow"] == allow


def test_openapi_says_what_the_checks_check(client, monkeypatch):
    """The served document is as strict as the code: URL strings, item counts, operator
    limits, id and offset bounds (it said none of these)."""
    from shoal.contract import ID_PATTERN, MAX_OFFSET, MAX_URL_LENGTH
    from shoal.settings import get_settings

    spec = client.get("/v1/openapi.json").json()
    schemas = spec["components"]["schemas"]
    urls_doc = schemas["InlineInput"]["properties"]["urls"]
    assert (urls_doc["minItems"], urls_doc["maxItems"]) == (1, get_settings().max_inline_urls)
    url_doc = urls_doc["items"]["anyOf"][0]
    assert (
        url_doc["maxLength"] == MAX_URL_LENGTH and "[Hh][Tt][Tt][Pp][Ss]?://" in url_doc["pattern"]
    )
    assert schemas["UrlItem"]["properties"]["url"]["maxLength"] == MAX_URL_LENGTH
    assert schemas["SingleUrlInput"]["properties"]["url"]["maxLength"] == MAX_URL_LENGTH
    assert schemas["UploadInput"]["properties"]["upload_id"]["pattern"]
    assert schemas["S3Input"]["properties"]["s3_uri"]["pattern"].startswith("^(?:s3|gs)://")
    expires = schemas["OutputSpec"]["properties"]["expires_in_s"]["anyOf"][0]
    assert expires["maximum"] == get_settings().max_link_expiry_s
    body_max = schemas["ScrapeOptions"]["properties"]["max_body_bytes"]["anyOf"][0]
    assert body_max["maximum"] == get_settings().max_body_bytes
    headers = schemas["ScrapeOptions"]["properties"]["headers"]
    assert headers["propertyNames"]["pattern"] and headers["additionalProperties"]["pattern"]
    for path in ("/v1/jobs", "/v1/jobs/{job_id}/results"):
        params = {p["name"]: p["schema"] for p in spec["paths"][path]["get"]["parameters"]}
        assert params["offset"]["maximum"] == MAX_OFFSET
    job_id = spec["paths"]["/v1/jobs/{job_id}"]["get"]["parameters"][0]["schema"]
    assert job_id["pattern"] == ID_PATTERN
    one_of = schemas["JobCreate"]["oneOf"]
    assert [m["required"] for m in one_of] == [["input"], ["urls"]]
    names = schemas["ScrapeOptions"]["properties"]["extract"]["anyOf"][0]["propertyNames"]
    assert names["minLength"] == 1 and names["pattern"]

    # the operator's limits, not the defaults
    monkeypatch.setenv("SHOAL_MAX_INLINE_URLS", "50")
    get_settings.cache_clear()
    from api.app import create_app

    doc = create_app().openapi()["components"]["schemas"]
    assert doc["InlineInput"]["properties"]["urls"]["maxItems"] == 50
    assert doc["JobCreate"]["properties"]["urls"]["anyOf"][0]["maxItems"] == 50


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://example.com:99999999/", "port"),
        ("https://example.com:65536/x", "port"),
        ("https://example.com:http/", "port"),
        ("https://exa\x00mple.com/", "control"),
        ("https://example.com/a\r\nX-Evil: 1", "control"),
        ("https://example.com/\x7f", "control"),
    ],
)
def test_urls_with_bad_ports_or_control_characters_are_422(client, alice, url, why):
    for body, loc in (
        ({"urls": [url]}, "urls[0]"),
        ({"input": {"urls": [{"url": url}]}}, "input.urls[0].url"),
        ({"urls": urls(1), "webhook": url}, "webhook"),
    ):
        problem = assert_problem(post_job(client, alice, body), 422, loc)
        assert why in next(e["msg"] for e in problem["errors"] if e["loc"] == loc)


def test_surrounding_whitespace_and_edge_ports_are_accepted(client, alice):
    body = {"urls": [" https://example.com/a\n", "https://example.com:65535/", "HTTP://E.COM"]}
    assert post_job(client, alice, body).status_code == 202


@pytest.mark.parametrize("name", ["", "a\x00b", "price\n", "x" * 201])
@pytest.mark.parametrize("where", ["extract", "selectors"])
def test_output_field_names_are_checked(client, alice, name, where):
    """A field is a CSV/Parquet column: an empty name or one with NUL made the output fail to
    build (DuckDB, Arrow), and ``?format=csv`` a 500."""
    value = "string" if where == "extract" else "h1"
    body = {"urls": urls(1), "defaults": {where: {name: value}}}
    assert_problem(post_job(client, alice, body), 422, f"defaults.{where}.{name}")
    item = {"url": "https://example.com/", where: {name: value}}
    body = {"input": {"urls": [item]}}
    assert_problem(post_job(client, alice, body), 422, f"input.urls[0].{where}.{name}")


@pytest.mark.parametrize("meta", ["NaN", "Infinity", '{"a": [1, -Infinity]}'])
def test_meta_with_nan_or_infinity_is_422_not_echoed_as_null(client, alice, meta):
    """Python's JSON parser takes NaN and Infinity, JSON has neither: such a ``meta`` was
    stored and echoed as ``null``; it is refused naming it, and a finite one is kept."""
    body = f'{{"input": {{"urls": [{{"url": "https://example.com/1", "meta": {meta}}}]}}}}'
    r = client.post(
        "/v1/jobs", headers={**alice.headers, "Content-Type": "application/json"}, content=body
    )
    assert_problem(r, 422, "input.urls[0].meta")
    ok = post_job(
        client, alice, {"input": {"urls": [{"url": "https://example.com/1", "meta": 1.5}]}}
    )
    assert ok.status_code == 202, ok.text


def test_a_busy_scheduler_leaves_the_job_queued_not_failed(client, alice, store, flow_starter):
    """Prefect up but busy past start_flow_run's retries (on SQLite: 503 while its writer is
    busy) used to fail the job (503, ``could not start the flow run``); the job now stays
    ``queued`` without a flow run for the resume service to start, and the caller gets 202."""
    flow_starter.busy = True
    r = post_job(client, alice, {"urls": urls(2)})
    assert r.status_code == 202, r.text
    job = store.get_job(r.json()["id"], alice.account.id)
    assert job is not None and job.status == "queued" and job.flow_run_id is None
    assert client.get(f"/v1/jobs/{job.id}", headers=alice.headers).json()["status"] == "queued"


async def test_a_start_past_its_bound_is_scheduler_busy(monkeypatch, settings):
    """The whole start, the gate's queue included, is bounded: a Prefect that hangs makes the
    request give up after ``START_WAIT_S`` with ``SchedulerBusy``, not wait for minutes."""
    import asyncio

    from api import prefect_access
    from shoal.errors import SchedulerBusy

    monkeypatch.setattr(prefect_access, "START_WAIT_S", 0.05)
    hung = asyncio.Event()

    async def hangs(job, _settings):
        await hung.wait()
        return "never"

    job = type("J", (), {"account_id": "acct_1", "priority": "normal"})()
    with pytest.raises(SchedulerBusy):
        await prefect_access.scheduler_errors(hangs)(job, settings)


# --- screenshot links -----------------------------------------------------------------------

_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def _expires(url: str) -> int:
    return int(parse_qs(urlsplit(url).query)["expires"][0])


def _shot_links(client, caller, job_id: str) -> dict[str, list[int]]:
    """The ``expires`` of every ``screenshot_url`` served, per results format."""
    import csv
    import io

    import orjson
    import pyarrow.parquet as pq

    base = f"/v1/jobs/{job_id}/results"
    got: dict[str, list[int]] = {}
    page = client.get(base, headers=caller.headers).json()["results"]
    got["json"] = [_expires(r["screenshot_url"]) for r in page if r["screenshot_url"]]
    lines = client.get(f"{base}?format=ndjson", headers=caller.headers).content.splitlines()
    got["ndjson"] = [
        _expires(x["screenshot_url"]) for x in map(orjson.loads, lines) if "screenshot_url" in x
    ]
    text = client.get(f"{base}?format=csv", headers=caller.headers).text
    got["csv"] = [
        _expires(r["screenshot_url"])
        for r in csv.DictReader(io.StringIO(text))
        if r["screenshot_url"]
    ]
    raw = client.get(f"{base}?format=parquet", headers=caller.headers).content
    col = pq.read_table(io.BytesIO(raw)).column("screenshot_url").to_pylist()
    got["parquet"] = [_expires(u) for u in col if u]
    single = client.get(f"/v1/jobs/{job_id}/results?limit=1&offset=1", headers=caller.headers)
    got["json_offset"] = [_expires(single.json()["results"][0]["screenshot_url"])]
    return got


def test_screenshot_links_expire_with_the_download_link(client, alice, make_job, settings, store):
    """A row keeps its screenshot's name; the link is signed when rows are served. Once the
    job has ended it expires exactly when ``download_url`` does, in the output file and in
    results of every format; while the job runs, ``output.expires_in_s`` from the read."""
    from shoal import output, screenshots
    from shoal.finalize import finalize_job

    storage = get_storage(settings)
    life = 3600
    spec = {
        "defaults": {"render": True, "formats": ["data", "screenshot"], "selectors": {"t": "h1"}},
        "concurrency": 4,
        "output": {"expires_in_s": life},
        "fields": {"t": "string"},
        "screenshots": True,
    }
    job = make_job(alice.account, status="running", started_at=utcnow(), urls_total=2, spec=spec)
    name = screenshots.save(storage, job.id, 1, _PNG)
    rows = [
        {"url": "https://e.com/0", "input_index": 0, "status": "ok", "data": {"t": "a"}},
        {"url": "https://e.com/1", "input_index": 1, "status": "ok", "data": {"t": "b"},
         "screenshot_url": name},
    ]  # fmt: skip
    output.write_part(storage, output.part_url(storage, job.id, 0), rows)

    # running: valid for expires_in_s from the read
    before = int(utcnow().timestamp())
    live = _shot_links(client, alice, job.id)
    after = int(utcnow().timestamp())
    for fmt, got in live.items():
        assert len(got) == 1 and before + life <= got[0] <= after + life, (fmt, got)

    # ended: the output file's link and every served one expire with download_url
    finalize_job(job.id, settings)
    public = client.get(f"/v1/jobs/{job.id}", headers=alice.headers).json()
    ends = _expires(public["download_url"])
    assert public["download_url_expires_at"] is not None
    out = [
        json.loads(x)
        for x in client.get(_path_and_query(public["download_url"])).content.splitlines()
    ]
    [link] = [x["screenshot_url"] for x in out if "screenshot_url" in x]
    assert _expires(link) == ends
    assert all(got == [ends] for got in _shot_links(client, alice, job.id).values())
    png = client.get(_path_and_query(link))  # no key
    assert png.status_code == 200 and png.content == _PNG
    # served links follow the job's download expiry, not the time of the read
    moved = aware(store.get_job(job.id).output_expires_at) - timedelta(hours=2)
    store.update_job(job.id, output_expires_at=moved)
    assert all(
        got == [int(moved.timestamp())] for got in _shot_links(client, alice, job.id).values()
    )

    # the output expired: the link is gone with it
    store.update_job(job.id, output_expires_at=utcnow() - timedelta(seconds=1))
    assert_problem(client.get(_path_and_query(link)), 410)
