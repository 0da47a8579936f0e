"""The fetch engine: one aiohttp session per job, a true in-flight cap, an SSRF guard.

    async with Engine(concurrency=32, settings=get_settings()) as engine:
        page = await engine.fetch("https://example.com/", FetchOptions(timeout_s=20))

Failures raise ``shoal.errors.FetchError`` with a contract error code. Why aiohttp (and the
measurements): ``shoal/fetch/_engine.py``.
"""

from ._engine import Engine
from ._errors import classify
from ._guard import AddressPolicy, BlockedAddress, GuardedResolver, is_blocked_address
from ._models import FetchOptions, FetchResponse

__all__ = [
    "AddressPolicy",
    "BlockedAddress",
    "Engine",
    "FetchOptions",
    "FetchResponse",
    "GuardedResolver",
    "classify",
    "is_blocked_address",
]
