"""A pool of proxies: round robin, with failing proxies benched for a while.

    pool = ProxyPool(["http://user:pass@10.0.0.1:3128", "socks5h://10.0.0.2:1080"])
    proxy = pool.pick()          # None: every proxy is benched -> the URL fails with ``proxy``
    ... pool.failed(proxy) / pool.succeeded(proxy)

A proxy that fails is benched for ``bench_s``, doubling with each further failure in a row (capped
at 10 minutes); a success resets the count (an active bench runs out on its own). Credentials
stay in the URL (``http://user:pass@host:port``); the transport sends them as
``Proxy-Authorization`` (inside TLS to an ``https://`` proxy), or as SOCKS5's username and
password. Not thread-safe: one pool per engine, used from its event loop.

Schemes (``PROXY_PORTS``, see ``_connect`` for what each does): ``http://`` and ``https://``
forward proxies, ``socks5://`` and ``socks4://`` (the target resolved by Shoal, through the
SSRF guard), ``socks5h://`` (the proxy resolves the target's name).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit

MAX_BENCH_S = 600.0
#: the proxy URL schemes the transport speaks, and the port of each when the URL names none
PROXY_PORTS = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080, "socks4": 1080}


def validate_proxy_url(url: str) -> str:
    """The URL of a proxy, normalised; ``ValueError`` when it is not one Shoal can use."""
    url = url.strip()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in PROXY_PORTS:
        known = ", ".join(f"{s}://" for s in PROXY_PORTS)
        raise ValueError(f"proxy {_redact(url)!r}: scheme must be one of {known}")
    if not parts.hostname:
        raise ValueError(f"proxy {_redact(url)!r}: no host")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"proxy {_redact(url)!r}: bad port") from exc
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"proxy {_redact(url)!r}: must not have a path, query or fragment")
    if parts.password is not None and not parts.username:
        raise ValueError(f"proxy {_redact(url)!r}: password without a user name")
    if scheme == "socks4" and parts.password is not None:
        raise ValueError(f"proxy {_redact(url)!r}: SOCKS4 takes a user id, not a password")
    return f"{scheme}://{parts.netloc}"


def _redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


class ProxyPool:
    """Round robin over the proxies that are not benched."""

    def __init__(
        self,
        proxies: list[str],
        bench_s: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if bench_s < 0:
            raise ValueError("bench_s must be >= 0")
        # dict keeps order and drops duplicates
        self._proxies = list(dict.fromkeys(validate_proxy_url(p) for p in proxies))
        self.bench_s = bench_s
        self._clock = clock
        self._next = 0
        self._failures: dict[str, int] = dict.fromkeys(self._proxies, 0)
        self._benched_until: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._proxies)

    def __repr__(self) -> str:
        shown = ", ".join(_redact(p) for p in self._proxies)
        return f"ProxyPool([{shown}], benched={len(self._benched_until)})"

    @property
    def proxies(self) -> list[str]:
        return list(self._proxies)

    def pick(self) -> str | None:
        """The next proxy that is not benched, round robin; ``None`` when all are benched."""
        n = len(self._proxies)
        now = self._clock() if self._benched_until else 0.0
        for i in range(n):
            proxy = self._proxies[(self._next + i) % n]
            until = self._benched_until.get(proxy)
            if until is not None:
                if now < until:
                    continue
                del self._benched_until[proxy]
            self._next = (self._next + i + 1) % n
            return proxy
        return None

    def failed(self, proxy: str) -> None:
        """Bench ``proxy``: ``bench_s``, doubled for each failure in a row, at most 10 min."""
        if proxy not in self._failures:
            return
        self._failures[proxy] += 1
        bench = min(self.bench_s * 2 ** min(self._failures[proxy] - 1, 30), MAX_BENCH_S)
        self._benched_until[proxy] = max(self._benched_until.get(proxy, 0.0), self._clock() + bench)

    def succeeded(self, proxy: str) -> None:
        """Reset the failure count of ``proxy``."""
        if proxy in self._failures:
            self._failures[proxy] = 0

    def benched(self, proxy: str) -> float:
        """Seconds ``proxy`` stays benched (0 when it is available)."""
        until = self._benched_until.get(proxy)
        return max(0.0, until - self._clock()) if until is not None else 0.0

    def next_available_in(self) -> float:
        """Seconds until some proxy is available again (0 when one is now or the pool is empty)."""
        if not self._proxies:
            return 0.0
        return min(self.benched(p) for p in self._proxies)
