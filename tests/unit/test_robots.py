"""RobotsCache: RFC 9309 outcomes, one fetch per origin, product-token matching."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from shoal.fetch._robots import RobotsCache, origin_of, product_token
from tests.sites.hostile import HostileSite

UA = "ShoalBot/0.1 (+https://shoal.example/bot)"

ROBOTS = """\
User-agent: *
Disallow: /private/
Crawl-delay: 2

User-agent: ShoalBot
Disallow: /no-shoal/
Allow: /no-shoal/but-this
Disallow: /*.pdf$
Crawl-delay: 0.5

User-agent: OtherBot
Disallow: /
"""


class FakeFetch:
    """fetch_text that answers from a table and counts calls; ``gate`` holds answers back."""

    def __init__(self, answers: dict[str, tuple[int, str] | Exception]) -> None:
        self.answers = answers
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, url: str) -> tuple[int, str]:
        self.calls.append(url)
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answers[url]
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_rules_for_the_product_token() -> None:
    fetch = FakeFetch({"https://a.example/robots.txt": (200, ROBOTS)})
    robots = RobotsCache(UA, fetch)
    assert robots.token == "ShoalBot"
    assert await robots.allowed("https://a.example/")
    assert not await robots.allowed("https://a.example/no-shoal/x")
    assert await robots.allowed("https://a.example/no-shoal/but-this?q=1")
    assert not await robots.allowed("https://a.example/files/report.pdf")
    assert await robots.allowed("https://a.example/files/report.pdf?download=1")
    # the ShoalBot group replaces the * group, it does not add to it
    assert await robots.allowed("https://a.example/private/x")
    assert robots.crawl_delay("https://a.example/any") == 0.5
    assert fetch.calls == ["https://a.example/robots.txt"]


async def test_star_group_applies_to_other_agents() -> None:
    fetch = FakeFetch({"https://a.example/robots.txt": (200, ROBOTS)})
    robots = RobotsCache("Mozilla/5.0 (compatible; OtherBot/2.1)", fetch)
    assert robots.token == "OtherBot"
    assert not await robots.allowed("https://a.example/")
    robots = RobotsCache("Unknown/1.0", FakeFetch(fetch.answers))
    assert not await robots.allowed("https://a.example/private/x")
    assert await robots.allowed("https://a.example/no-shoal/x")
    assert robots.crawl_delay("https://a.example/") == 2.0


async def test_one_fetch_per_origin_and_no_stampede() -> None:
    fetch = FakeFetch(
        {
            "https://a.example/robots.txt": (200, ROBOTS),
            "http://a.example/robots.txt": (200, "User-agent: *\nDisallow: /\n"),
            "https://a.example:8443/robots.txt": (404, ""),
        }
    )
    fetch.gate = asyncio.Event()
    robots = RobotsCache(UA, fetch)
    waiting = [asyncio.create_task(robots.allowed(f"https://a.example/p/{i}")) for i in range(50)]
    await asyncio.sleep(0.01)
    assert fetch.calls == ["https://a.example/robots.txt"]
    fetch.gate.set()
    assert all(await asyncio.gather(*waiting))
    assert await robots.allowed("https://A.example:443/x")  # same origin, default port
    assert not await robots.allowed("http://a.example/x")  # another scheme, another file
    assert await robots.allowed("https://a.example:8443/no-shoal/x")  # another port
    assert fetch.calls == [
        "https://a.example/robots.txt",
        "http://a.example/robots.txt",
        "https://a.example:8443/robots.txt",
    ]


async def test_a_cancelled_caller_does_not_cancel_the_fetch_for_others() -> None:
    fetch = FakeFetch({"https://a.example/robots.txt": (200, ROBOTS)})
    fetch.gate = asyncio.Event()
    robots = RobotsCache(UA, fetch)
    first = asyncio.create_task(robots.allowed("https://a.example/x"))
    second = asyncio.create_task(robots.allowed("https://a.example/no-shoal/x"))
    await asyncio.sleep(0.01)
    first.cancel()
    fetch.gate.set()
    assert await second is False
    assert len(fetch.calls) == 1


@pytest.mark.parametrize(
    ("answer", "allowed"),
    [
        ((404, "Disallow: /"), True),
        ((401, ""), True),
        ((403, ""), True),
        ((410, ""), True),
        ((429, ""), False),
        ((500, ""), False),
        ((503, ""), False),
        (ConnectionResetError("reset"), False),
        (TimeoutError(), False),
        ((200, ""), True),
        ((200, "garbage\n\x00\nnot robots"), True),
    ],
)
async def test_status_outcomes(answer: tuple[int, str] | Exception, allowed: bool) -> None:
    robots = RobotsCache(UA, FakeFetch({"https://a.example/robots.txt": answer}))
    assert await robots.allowed("https://a.example/page") is allowed
    assert robots.crawl_delay("https://a.example/page") is None


async def test_robots_url_itself_is_always_allowed() -> None:
    fetch = FakeFetch({"https://a.example/robots.txt": (503, "")})
    robots = RobotsCache(UA, fetch)
    assert await robots.allowed("https://a.example/robots.txt")
    assert fetch.calls == []


async def test_unreachable_is_retried_after_a_while_but_rules_are_kept() -> None:
    now = [100.0]
    fetch = FakeFetch({"https://a.example/robots.txt": (503, "")})
    robots = RobotsCache(UA, fetch, retry_unreachable_s=30, clock=lambda: now[0])
    assert not await robots.allowed("https://a.example/x")
    now[0] += 10
    assert not await robots.allowed("https://a.example/x")
    assert len(fetch.calls) == 1
    now[0] += 25
    fetch.answers["https://a.example/robots.txt"] = (200, ROBOTS)
    assert await robots.allowed("https://a.example/x")
    assert len(fetch.calls) == 2
    now[0] += 1e6
    assert await robots.allowed("https://a.example/x")
    assert len(fetch.calls) == 2  # a real answer is kept for the engine's life


async def test_crawl_delay_unknown_before_fetch() -> None:
    robots = RobotsCache(UA, FakeFetch({}))
    assert robots.crawl_delay("https://nowhere.example/") is None


def test_product_token_and_origin() -> None:
    assert product_token("ShoalBot/0.1 (+https://x)") == "ShoalBot"
    assert product_token("ShoalBot") == "ShoalBot"
    assert product_token("Mozilla/5.0 (compatible; Googlebot/2.1; +http://g.co)") == "Googlebot"
    assert origin_of("HTTPS://Example.COM/a?b") == (
        "https://example.com:443",
        "https://example.com/robots.txt",
    )
    assert origin_of("http://[::1]:8080/x") == ("http://::1:8080", "http://[::1]:8080/robots.txt")


# --- against the hostile site over real HTTP -------------------------------------------------


def _urllib_fetch_text(ua: str):  # type: ignore[no-untyped-def]
    """A tiny fetch_text on urllib (in a thread): (status, text), raising on network failure."""

    def get(url: str) -> tuple[int, str]:
        req = urllib.request.Request(url, headers={"User-Agent": ua})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")

    async def fetch_text(url: str) -> tuple[int, str]:
        return await asyncio.to_thread(get, url)

    return fetch_text


@pytest.fixture
def site() -> Iterator[HostileSite]:
    with HostileSite() as s:
        yield s


async def test_against_hostile_site_default_robots(site: HostileSite) -> None:
    robots = RobotsCache(UA, _urllib_fetch_text(UA))
    results = await asyncio.gather(
        *(robots.allowed(site.url(f"/p/{i}")) for i in range(20)),
        robots.allowed(site.url("/private/secret")),
    )
    assert all(results[:-1]) and results[-1] is False
    assert site.hits["/robots.txt"] == 1
    assert site.log[0].headers["user-agent"] == UA


@pytest.mark.parametrize(
    ("robots_body", "status", "allowed"),
    [
        ("User-agent: shoalbot\nDisallow: /shop/\n", 200, False),  # case-insensitive token
        ("User-agent: *\nDisallow: /\n", 404, True),
        ("User-agent: *\nDisallow:\n", 500, False),
        ("", 0, False),  # connection reset: unreachable
    ],
)
async def test_against_hostile_site_configured(
    robots_body: str, status: int, allowed: bool
) -> None:
    with HostileSite(robots=robots_body, robots_status=status) as s:
        robots = RobotsCache(UA, _urllib_fetch_text(UA))
        assert await robots.allowed(s.url("/shop/item")) is allowed
