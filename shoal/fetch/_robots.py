"""robots.txt (RFC 9309), fetched once per origin per engine and parsed with protego.

    robots = RobotsCache("ShoalBot/0.1 (+https://example.com/bot)", fetch_text)
    if not await robots.allowed(url): ...  # -> robots_disallowed

``fetch_text(robots_url)`` returns ``(status, text)`` and raises on a network failure; the
engine supplies it (its own client, timeouts, SSRF guard and redirects, up to five hops per
RFC 9309). Outcomes per RFC 9309: 2xx -> the rules; 4xx -> "unavailable", everything allowed;
5xx, 429 or a network failure -> "unreachable", everything disallowed. An unreachable origin is
tried again after ``retry_unreachable_s`` so one blip does not block a host for a whole job.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from protego import Protego

#: RFC 9309 asks crawlers to parse at least 500 KiB; more than that is ignored.
_MAX_ROBOTS_CHARS = 500 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_COMPATIBLE = re.compile(r"compatible;\s*([A-Za-z0-9_-]+)", re.IGNORECASE)


def product_token(user_agent: str) -> str:
    """The product token robots.txt groups are matched on.

    ``ShoalBot/0.1 (+https://...)`` -> ``ShoalBot``; ``Mozilla/5.0 (compatible; X/1)`` -> ``X``.
    """
    token = re.split(r"[/\s]", user_agent.strip(), maxsplit=1)[0]
    if token.lower() == "mozilla":
        m = _COMPATIBLE.search(user_agent)
        if m:
            return m.group(1)
    return token or "*"


def origin_of(url: str) -> tuple[str, str]:
    """``(origin key, robots.txt URL)`` for a URL: scheme, host and explicit-or-default port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port or _DEFAULT_PORTS.get(scheme)
    netloc = f"[{host}]" if ":" in host else host
    if port and port != _DEFAULT_PORTS.get(scheme):
        netloc = f"{netloc}:{port}"
    return f"{scheme}://{host}:{port}", f"{scheme}://{netloc}/robots.txt"


@dataclass(frozen=True)
class _Rules:
    """What is known about one origin: parsed rules, or allow/disallow everything."""

    parser: Protego | None = None
    allow_all: bool = True
    expires: float | None = None  # clock time after which to fetch again (unreachable only)


_ALLOW_ALL = _Rules()


class RobotsCache:
    """robots.txt rules per origin for one engine (one job in one process)."""

    def __init__(
        self,
        user_agent: str,
        fetch_text: Callable[[str], Awaitable[tuple[int, str]]],
        *,
        retry_unreachable_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token = product_token(user_agent)
        self._fetch_text = fetch_text
        self._retry_unreachable_s = retry_unreachable_s
        self._clock = clock
        self._rules: dict[str, _Rules] = {}
        self._pending: dict[str, asyncio.Future[_Rules]] = {}
        #: robots.txt fetches started, per origin key (for tests and metrics).
        self.fetches: dict[str, int] = {}

    async def allowed(self, url: str) -> bool:
        """May the user agent fetch ``url``? Fetches the origin's robots.txt on first use."""
        if urlsplit(url).path == "/robots.txt":
            return True
        rules = await self._rules_for(url)
        if rules.parser is None:
            return rules.allow_all
        return rules.parser.can_fetch(url, self.token)

    def crawl_delay(self, url: str) -> float | None:
        """The ``Crawl-delay`` for the user agent at this origin, if known and set."""
        rules = self._rules.get(origin_of(url)[0])
        if rules is None or rules.parser is None:
            return None
        return rules.parser.crawl_delay(self.token)

    async def _rules_for(self, url: str) -> _Rules:
        key, robots_url = origin_of(url)
        rules = self._rules.get(key)
        if rules is not None and (rules.expires is None or self._clock() < rules.expires):
            return rules
        pending = self._pending.get(key)
        if pending is None:
            # One fetch per origin; concurrent callers wait for it. It runs as its own task so a
            # caller being cancelled does not cancel it for the others.
            pending = asyncio.ensure_future(self._load(key, robots_url))
            self._pending[key] = pending
        return await asyncio.shield(pending)

    async def _load(self, key: str, robots_url: str) -> _Rules:
        self.fetches[key] = self.fetches.get(key, 0) + 1
        try:
            try:
                status, text = await self._fetch_text(robots_url)
            except asyncio.CancelledError:
                raise
            except Exception:
                rules = self._unreachable()
            else:
                rules = self._from_response(status, text)
            self._rules[key] = rules
            return rules
        finally:
            self._pending.pop(key, None)

    def _from_response(self, status: int, text: str) -> _Rules:
        if 200 <= status < 300:
            try:
                return _Rules(parser=Protego.parse(text[:_MAX_ROBOTS_CHARS]))
            except Exception:  # a parser bug must not stop the job: treat as no rules
                return _ALLOW_ALL
        if status == 429 or status >= 500:
            return self._unreachable()
        return _ALLOW_ALL  # 4xx (and an unfollowed 3xx): "unavailable"

    def _unreachable(self) -> _Rules:
        return _Rules(allow_all=False, expires=self._clock() + self._retry_unreachable_s)
