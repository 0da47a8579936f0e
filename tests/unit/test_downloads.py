"""shoal.downloads: signed, expiring links."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from shoal.downloads import sign, verify
from shoal.errors import Gone, NotFound
from shoal.settings import Settings


@pytest.fixture
def cfg() -> Settings:
    return Settings(signing_secret="test-secret", public_url="https://dl.test/")


def _parse(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    _, v1, downloads, job_id, filename = parts.path.split("/")
    assert (v1, downloads) == ("v1", "downloads")
    q = parse_qs(parts.query)
    return job_id, unquote(filename), int(q["expires"][0]), q["sig"][0]


def _future() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


def test_round_trip(cfg):
    exp = _future()
    url = sign(cfg, "job_A", "result.ndjson.gz", exp)
    assert url.startswith("https://dl.test/v1/downloads/job_A/result.ndjson.gz?")
    job_id, name, expires, sig = _parse(url)
    assert (job_id, name, expires) == ("job_A", "result.ndjson.gz", int(exp.timestamp()))
    verify(cfg, job_id, name, expires, sig)  # does not raise


def test_filename_is_quoted_and_round_trips(cfg):
    url = sign(cfg, "job_A", "part 1 & 2.csv", _future())
    assert " " not in url and "&" not in urlsplit(url).path
    verify(cfg, *_parse(url))


@pytest.mark.parametrize("field", ["job_id", "filename", "expires", "sig"])
def test_tamper_is_not_found(cfg, field):
    job_id, name, expires, sig = _parse(sign(cfg, "job_A", "result.ndjson", _future()))
    if field == "job_id":
        job_id = "job_B"
    elif field == "filename":
        name = "other.ndjson"
    elif field == "expires":
        expires += 3600
    else:
        sig = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    with pytest.raises(NotFound):
        verify(cfg, job_id, name, expires, sig)


def test_other_secret_is_not_found(cfg):
    args = _parse(sign(cfg, "job_A", "r.csv", _future()))
    with pytest.raises(NotFound):
        verify(Settings(signing_secret="another"), *args)


def test_expired_is_gone(cfg):
    args = _parse(sign(cfg, "job_A", "r.csv", datetime.now(UTC) - timedelta(seconds=2)))
    with pytest.raises(Gone):
        verify(cfg, *args)


def test_expired_and_tampered_is_not_found(cfg):
    job_id, name, expires, sig = _parse(
        sign(cfg, "job_A", "r.csv", datetime.now(UTC) - timedelta(seconds=2))
    )
    with pytest.raises(NotFound):
        verify(cfg, job_id, name, expires, "0" * 64)


def test_no_secret_refuses_to_sign():
    with pytest.raises(RuntimeError):
        sign(Settings(signing_secret=None), "job_A", "r.csv", _future())


@pytest.mark.parametrize("sig", ["é" * 64, "\u202e" + "0" * 63, "\ud800" * 20, "ä"])
def test_non_ascii_sig_is_not_found(cfg, sig):
    """``hmac.compare_digest`` raises ``TypeError`` on text with non-ASCII characters: a
    hostile ``sig`` must be a bad signature (404), not an internal error."""
    job_id, name, expires, _ = _parse(sign(cfg, "job_A", "r.csv", _future()))
    with pytest.raises(NotFound):
        verify(cfg, job_id, name, expires, sig)


@pytest.mark.parametrize("expires", [-(10**20), -(10**15), -(2**63)])
def test_absurd_signed_expiry_is_gone(cfg, expires):
    """A link signed with a time ``datetime`` cannot show is still just expired."""
    from shoal.downloads import _sig

    sig = _sig(cfg.secret(), "job_A", "r.csv", expires)
    with pytest.raises(Gone, match="expired"):
        verify(cfg, "job_A", "r.csv", expires, sig)
