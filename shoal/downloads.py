"""Signed, expiring download links that work without the API key."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime
from urllib.parse import quote

from shoal.errors import Gone, NotFound
from shoal.settings import Settings


def _sig(secret: bytes, job_id: str, filename: str, expires: int) -> str:
    msg = f"{job_id}/{filename}:{expires}".encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def sign(settings: Settings, job_id: str, filename: str, expires_at: datetime) -> str:
    """The public URL of one output file of a job, valid until ``expires_at``."""
    expires = int(expires_at.timestamp())
    sig = _sig(settings.secret(), job_id, filename, expires)
    base = settings.public_url.rstrip("/")
    return f"{base}/v1/downloads/{job_id}/{quote(filename)}?expires={expires}&sig={sig}"


def verify(settings: Settings, job_id: str, filename: str, expires: int, sig: str) -> None:
    """Raise ``NotFound`` for a bad signature and ``Gone`` for an expired link."""
    good = _sig(settings.secret(), job_id, filename, expires)
    # as bytes: compare_digest refuses text with non-ASCII characters (a hostile ``sig``)
    if not hmac.compare_digest(good.encode(), sig.encode("utf-8", "surrogatepass")):
        raise NotFound("no such download (bad signature)")
    if expires < time.time():
        raise Gone(f"this download link expired at {_when(expires)}")


def _when(expires: int) -> str:
    try:
        return datetime.fromtimestamp(expires, UTC).isoformat()
    except (OverflowError, OSError, ValueError):  # a signed but absurd time
        return f"{expires} (Unix time)"
