"""What ``shoal jobs submit`` sends, against a scripted API on 127.0.0.1 (no stack): each kind
of SOURCE becomes its input form, ``--extract``/``--selector``/``--format`` the body's
``defaults`` and ``output``, and a bad option is a usage error before any request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shoal.cli import app
from tests.unit.test_client_http import CREATED, Answer, Scripted, scripted

runner = CliRunner()


@pytest.fixture
def api() -> Iterator[Scripted]:
    with scripted() as s:
        yield s


def submit(api: Scripted, *args: str) -> tuple[int, str, dict | None]:
    api.script = [Answer(202, CREATED)]
    done = runner.invoke(
        app, ["jobs", "submit", *args], env={"SHOAL_URL": api.url, "SHOAL_API_KEY": "k"}
    )
    posted = [b for (m, p, _), b in zip(api.seen, api.bodies, strict=True) if p == "/v1/jobs"]
    return done.exit_code, done.output, json.loads(posted[-1]) if posted else None


def test_urls_inline_with_extract_selectors_and_format(api: Scripted) -> None:
    code, out, body = submit(
        api,
        "https://a.example/1",
        "https://a.example/2",
        "--extract",
        "name:string, price:number",
        "-e",
        "sku",
        "--selector",
        "price=span[data-k=v]@content",
        "--format",
        "csv",
        "--gzip",
        "--concurrency",
        "8",
        "--name",
        "n",
    )
    assert code == 0, out
    assert body == {
        "input": {"urls": ["https://a.example/1", "https://a.example/2"]},
        "concurrency": 8,
        "defaults": {
            "extract": {"name": "string", "price": "number", "sku": "string"},
            "selectors": {"price": "span[data-k=v]@content"},
        },
        "output": {"format": "csv", "gzip": True},
        "name": "n",
    }
    assert "job_1 running (10 URLs)" in out  # as the (scripted) API answered


def test_an_object_uri_is_s3_input(api: Scripted) -> None:
    code, out, body = submit(api, "s3://bucket/urls.csv.gz", "--role-arn", "arn:aws:iam::1:role/r")
    assert code == 0, out
    assert body == {
        "input": {"s3_uri": "s3://bucket/urls.csv.gz", "role_arn": "arn:aws:iam::1:role/r"}
    }


def test_a_file_is_uploaded_first(api: Scripted, tmp_path: Path) -> None:
    f = tmp_path / "urls.jsonl"
    f.write_text('"https://a.example/1"\n')
    upload = {
        "id": "upl_1",
        "format": "ndjson",
        "size_bytes": 22,
        "lines": 1,
        "urls_valid": 1,
        "errors": [],
        "created_at": "2026-12-05T10:00:00Z",
    }
    api.script = [Answer(201, upload), Answer(202, CREATED)]
    done = runner.invoke(
        app, ["jobs", "submit", str(f)], env={"SHOAL_URL": api.url, "SHOAL_API_KEY": "k"}
    )
    assert done.exit_code == 0, done.output
    (method, path, headers), sent = api.seen[0], api.bodies[0]
    assert (method, path, headers["Content-Type"]) == (
        "POST",
        "/v1/uploads",
        "application/x-ndjson",
    )
    assert sent == f.read_bytes()
    assert json.loads(api.bodies[1]) == {"input": {"upload_id": "upl_1"}}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["https://a.example/", "s3://b/k.csv"], "give http(s) URLs, or one URL file"),
        (["https://a.example/", "--extract", ":number"], "give field:type"),
        (["https://a.example/", "--selector", "price"], "give field=selector"),
        (["missing.csv"], "no such file"),
    ],
)
def test_bad_options_are_usage_errors_before_any_request(
    api: Scripted, args: list[str], says: str
) -> None:
    code, out, body = submit(api, *args)
    assert code == 2 and says in out and body is None and api.seen == []
