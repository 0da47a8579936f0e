"""The fetch engine: one connection pool per job, a true in-flight cap, an SSRF guard.

    async with Engine(concurrency=32, settings=get_settings()) as engine:
        page = await engine.fetch("https://example.com/", FetchOptions(timeout_s=20))

Failures raise ``shoal.errors.FetchError`` with a contract error code. Why the engine speaks
HTTP/1.1 itself (and the measurements): ``shoal/fetch/_engine.py`` and ``_h1.py``.

The policy and the models load without aiohttp; ``Engine``, ``GuardedResolver`` and ``classify``
load it on first use, so a process that only checks addresses (the API) never imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._models import FetchOptions, FetchResponse
from ._policy import AddressPolicy, BlockedAddress, is_blocked_address

if TYPE_CHECKING:
    from ._engine import Engine
    from ._errors import classify, status_error
    from ._guard import GuardedResolver

_LAZY = {
    "Engine": "._engine",
    "GuardedResolver": "._guard",
    "classify": "._errors",
    "status_error": "._errors",
}

__all__ = [
    "AddressPolicy",
    "BlockedAddress",
    "Engine",
    "FetchOptions",
    "FetchResponse",
    "GuardedResolver",
    "classify",
    "is_blocked_address",
    "status_error",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
