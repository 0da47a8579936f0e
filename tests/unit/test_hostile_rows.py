"""Rows of a URL file (an upload, or an S3/GCS object the job stages) meet the rules of inline
URLs: ``shoal.inputs`` checks each record with ``shoal.jobs.stage_record``, whose URL check is
``shoal.contract.http_url_problem`` and whose option checks name the field."""

from __future__ import annotations

import csv
import io

import orjson
import pytest

from shoal import inputs
from shoal.contract import MAX_URL_LENGTH, http_url_problem
from shoal.settings import Settings

OK = "https://example.com/ok"
LONG_URL = "https://example.com/" + "a" * MAX_URL_LENGTH
LONG_HOST = "https://" + ".".join(["a" * 60] * 5) + "/"
LONG_LABEL = "https://" + "a" * 64 + ".example.com/"


@pytest.fixture
def cfg() -> Settings:
    return Settings(signing_secret="x")


def _normalize(data: bytes, cfg: Settings, fmt: str) -> tuple[inputs.InputStats, list[dict]]:
    out = io.BytesIO()
    stats = inputs.normalize(io.BytesIO(data), out, fmt=fmt, settings=cfg, max_bytes=1 << 30)
    return stats, [orjson.loads(line) for line in out.getvalue().splitlines()]


def _ndjson(rows: list) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def _csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["url", "selectors", "headers"])
    writer.writeheader()
    for row in rows:
        writer.writerow({k: orjson.dumps(v).decode() if k != "url" else v for k, v in row.items()})
    return buf.getvalue().encode()


@pytest.mark.parametrize("url", [LONG_URL, LONG_HOST, LONG_LABEL])
def test_overlong_urls_are_errored_lines_in_every_format(cfg, url):
    assert http_url_problem(url) is not None
    for fmt, data in (
        ("ndjson", _ndjson([url, OK])),
        ("ndjson", _ndjson([{"url": url, "meta": 1}, OK])),
        ("csv", f"url\n{url}\n{OK}\n".encode()),
    ):
        stats, staged = _normalize(data, cfg, fmt)
        assert stats.urls_valid == 1, (fmt, staged)
        assert "longer than" in staged[0]["error"] and staged[1]["url"] == OK
        assert len(staged[0]["url"]) <= 2048  # an errored line does not keep it whole


@pytest.mark.parametrize(
    ("override", "why"),
    [
        ({"selectors": {"price": "a[[[["}}, "selectors.price: not a valid CSS selector"),
        ({"selectors": {"t": "xpath://h1["}}, "selectors.t: not a valid XPath expression"),
        ({"headers": {"Host": "evil.example"}}, "headers.Host: a hop-by-hop or framing header"),
        ({"headers": {"Transfer-Encoding": "chunked"}}, "headers.Transfer-Encoding: a hop"),
        ({"headers": {"X-A": "a\u007fb"}}, "headers.X-A: a header value may not hold control"),
    ],
)
def test_bad_selectors_and_headers_are_errored_lines(cfg, override, why):
    for fmt, data in (
        ("ndjson", _ndjson([{"url": OK, **override}])),
        ("csv", _csv([{"url": OK, **override}])),
    ):
        stats, staged = _normalize(data, cfg, fmt)
        assert stats.urls_valid == 0, (fmt, staged)
        assert staged[0]["error"].startswith(why), (fmt, staged[0]["error"])


def test_good_selectors_and_headers_are_staged(cfg):
    row = {"url": OK, "selectors": {"p": ".price@content"}, "headers": {"X-A": "1"}}
    for fmt, data in (("ndjson", _ndjson([row])), ("csv", _csv([row]))):
        stats, staged = _normalize(data, cfg, fmt)
        assert stats.urls_valid == 1 and staged[0]["o"]["headers"] == {"X-A": "1"}, staged
