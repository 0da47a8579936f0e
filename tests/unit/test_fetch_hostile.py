"""The fetch engine against the hostile site and a real forwarding proxy, all on 127.0.0.1.

Names like ``shop.example.com`` reach the site through a resolver the test injects
(``Engine(resolver=...)``): the SSRF guard checks whatever that resolver answers, exactly as it
checks the system resolver's answers in production.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import tracemalloc
from collections.abc import Iterator
from email.utils import formatdate
from urllib.parse import quote

import pytest

from shoal.errors import FetchError
from shoal.fetch import Engine, FetchOptions
from shoal.fetch._inflate import STEP, brotli, decoder_for
from shoal.settings import Settings
from tests.sites.hostile import (
    COMPRESSED_PAGE,
    ENC_PAGES,
    EXPECTED_TEXT,
    PDF_BYTES,
    PNG_BYTES,
    HostileSite,
    brotli_bomb,
    deflate_bomb,
    gzip_bomb,
)
from tests.sites.names import MapResolver
from tests.sites.proxy import ForwardProxy, dead_proxy_url

MIB = 1 << 20


@pytest.fixture(scope="module")
def site() -> Iterator[HostileSite]:
    s = HostileSite().start()
    yield s
    s.stop()


@pytest.fixture
def fresh_site() -> Iterator[HostileSite]:
    """A site of its own, for tests that change robots.txt or count every hit."""
    s = HostileSite().start()
    yield s
    s.stop()


def _settings(**kw: object) -> Settings:
    base: dict[str, object] = {"allow_private_networks": True, "fetch_retries": 2}
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


async def _fail(engine: Engine, url: str, options: FetchOptions | None = None) -> FetchError:
    with pytest.raises(FetchError) as info:
        await engine.fetch(url, options or FetchOptions())
    return info.value


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ----------------------------------------------------------------------------- SSRF guard


async def test_public_looking_name_answering_loopback_is_blocked(site: HostileSite) -> None:
    resolver = MapResolver({"shop.example.com": ["127.0.0.1"]})
    settings = _settings(allow_private_networks=False)
    before = site.hits["/ok"]
    async with Engine(concurrency=2, settings=settings, resolver=resolver) as engine:
        url = f"http://shop.example.com:{site.port}/ok"
        err = await _fail(engine, url, FetchOptions(respect_robots=False))
        assert err.code == "blocked"
        assert "127.0.0.1" in err.message
        # One lookup, made by the connector itself: the address checked is the one it would
        # have connected to; there is no earlier check a rebinding answer could slip past.
        assert resolver.asked == ["shop.example.com"]
        # With robots.txt on, the robots fetch meets the guard first: still ``blocked``.
        err = await _fail(engine, url)
        assert err.code == "blocked"
    assert site.hits["/ok"] == before


async def test_one_private_answer_among_public_ones_blocks(site: HostileSite) -> None:
    resolver = MapResolver({"mixed.example.com": ["93.184.216.34", "10.0.0.7"]})
    settings = _settings(allow_private_networks=False)
    async with Engine(concurrency=2, settings=settings, resolver=resolver) as engine:
        err = await _fail(engine, "http://mixed.example.com/", FetchOptions(respect_robots=False))
    assert err.code == "blocked"


@pytest.mark.parametrize(
    "target",
    ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://0.0.0.0/"],
)
async def test_redirect_to_metadata_is_blocked(site: HostileSite, target: str) -> None:
    resolver = MapResolver({"shop.example.com": ["127.0.0.1"]})
    settings = _settings(allow_private_networks=False, allow_hosts="shop.example.com")
    async with Engine(concurrency=2, settings=settings, resolver=resolver) as engine:
        t0 = time.monotonic()
        err = await _fail(
            engine,
            f"http://shop.example.com:{site.port}/redirect-to?url={quote(target, safe='')}",
            FetchOptions(respect_robots=False),
        )
    assert err.code == "blocked"
    assert err.final_url is not None and err.final_url.startswith(target.split("/latest")[0])
    assert time.monotonic() - t0 < 1  # refused before connecting, not after a timeout


async def test_allow_list_by_host_and_by_network(site: HostileSite) -> None:
    resolver = MapResolver({"shop.example.com": ["127.0.0.1"], "evil.example.com": ["127.0.0.1"]})
    by_host = _settings(allow_private_networks=False, allow_hosts=" shop.example.com ,other")
    async with Engine(concurrency=2, settings=by_host, resolver=resolver) as engine:
        ok = await engine.fetch(f"http://shop.example.com:{site.port}/ok")
        assert ok.status == 200
        # The allow-list names hosts: a redirect to another name on the same address is refused.
        evil = f"http://evil.example.com:{site.port}/ok"
        err = await _fail(
            engine, f"http://shop.example.com:{site.port}/redirect-to?url={quote(evil, safe='')}"
        )
        assert err.code == "blocked"
        assert err.final_url == evil
        err = await _fail(engine, f"http://127.0.0.1:{site.port}/ok")
        assert err.code == "blocked"
    by_net = _settings(allow_private_networks=False, allow_hosts="127.0.0.0/8")
    async with Engine(concurrency=2, settings=by_net, resolver=resolver) as engine:
        assert (await engine.fetch(f"http://127.0.0.1:{site.port}/ok")).status == 200
        assert (await engine.fetch(f"http://evil.example.com:{site.port}/ok")).status == 200
        err = await _fail(engine, "http://[::1]:9/ok")
        assert err.code == "blocked"


# ----------------------------------------------------------------------------- bodies


async def test_gzip_bomb_ends_too_large_quickly_with_bounded_memory(site: HostileSite) -> None:
    bomb = gzip_bomb(1024)  # 1 GiB of zeros; built once (about 2 s), outside the timing
    assert len(bomb) < 2 * MIB
    peak = baseline = _rss()
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss())
            await asyncio.sleep(0.005)

    sampler = asyncio.ensure_future(sample())
    async with Engine(concurrency=2, settings=_settings()) as engine:
        t0 = time.monotonic()
        err = await _fail(
            engine, site.url("/gzip-bomb?mb=1024"), FetchOptions(max_body_bytes=10 * MIB)
        )
        took = time.monotonic() - t0
    done.set()
    await sampler
    assert err.code == "too_large"
    assert took < 2.0
    assert peak - baseline < 100 * MIB


@pytest.mark.parametrize(
    "path",
    ["/br-bomb?mb=256", "/deflate-bomb?mb=64", "/deflate-bomb?mb=64&raw=1", "/gzip-bomb?mb=64"],
)
async def test_every_codec_bomb_ends_too_large_in_bounded_memory(
    site: HostileSite, path: str
) -> None:
    """405 bytes of brotli are 256 MiB of zeros: fed 1 KiB at a time, one ``process`` call
    made all of it (tracemalloc peak 256.0 MiB). Every codec now hands out at most a step at a
    time, so memory stays near the cap (4 MiB here): peaks of 4.2 MiB (brotli) and 4.7 MiB
    (gzip, zlib, raw deflate) measured."""
    if path.startswith("/br") and brotli is None:
        pytest.skip("brotli is not installed")
    q = dict(p.split("=") for p in path.split("?")[1].split("&"))
    bomb = (
        brotli_bomb(int(q["mb"]))
        if path.startswith("/br")
        else deflate_bomb(int(q["mb"]), raw="raw" in q)
        if path.startswith("/deflate")
        else gzip_bomb(int(q["mb"]))
    )  # built before tracing: the site serves it from its cache
    assert bomb is not None and len(bomb) < 200 * 1024
    async with Engine(concurrency=2, settings=_settings()) as engine:
        tracemalloc.start()
        try:
            err = await _fail(engine, site.url(path), FetchOptions(max_body_bytes=4 * MIB))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert err.code == "too_large"
    assert peak < 8 * MIB, f"{peak / MIB:.1f} MiB"


@pytest.mark.parametrize("codec", ["gzip", "deflate", "deflate-raw", "br"])
def test_every_decoder_piece_is_at_most_a_step(codec: str) -> None:
    if codec == "br" and brotli is None:
        pytest.skip("brotli is not installed")
    bomb = {
        "gzip": lambda: gzip_bomb(64),
        "deflate": lambda: deflate_bomb(64),
        "deflate-raw": lambda: deflate_bomb(64, raw=True),
        "br": lambda: brotli_bomb(256),
    }[codec]()
    assert bomb is not None
    decoder = decoder_for(codec.split("-")[0])
    assert decoder is not None
    sizes = []
    for piece in decoder.feed(bomb):
        sizes.append(len(piece))
        if sum(sizes) >= 32 * MIB:
            break
    assert sum(sizes) >= 32 * MIB
    assert max(sizes) <= STEP


async def test_stacked_codings_are_decoded_up_to_a_bound(site: HostileSite) -> None:
    """``Content-Encoding: gzip, gzip, ...``: each coding is a decoder with its own window
    (and a chain of 2,000 overflowed Python's recursion limit); five are decoded, as curl
    does, more are refused."""
    async with Engine(concurrency=2, settings=_settings(fetch_retries=0)) as engine:
        five = await engine.fetch(site.url("/stacked?n=5"))
        err = await _fail(engine, site.url("/stacked?n=6"))
        many = await _fail(engine, site.url("/stacked?n=2000"))
    assert five.text == COMPRESSED_PAGE
    assert (err.code, many.code) == ("connect", "connect")
    assert "codings" in err.message and "codings" in many.message


async def test_compressed_bodies_are_decoded(site: HostileSite) -> None:
    async with Engine(concurrency=2, settings=_settings()) as engine:
        five = await engine.fetch(site.url("/gzip-bomb?mb=5"), FetchOptions(max_body_bytes=6 * MIB))
        assert five.content == bytes(5 * MIB)
        for path in ("/gzip", "/deflate") + (("/br",) if brotli is not None else ()):
            resp = await engine.fetch(site.url(path))
            assert resp.text == COMPRESSED_PAGE, path
        headers = (await engine.fetch(site.url("/headers"))).text
    assert ("br" in headers) == (brotli is not None)


async def test_non_html_and_encodings(site: HostileSite) -> None:
    async with Engine(concurrency=4, settings=_settings()) as engine:
        pdf = await engine.fetch(site.url("/pdf"))
        png = await engine.fetch(site.url("/image.png"))
        js = await engine.fetch(site.url("/json"))
        assert (pdf.content_type, pdf.content) == ("application/pdf", PDF_BYTES)
        assert (png.content_type, png.content) == ("image/png", PNG_BYTES)
        assert js.content_type == "application/json"
        for path in ENC_PAGES:
            resp = await engine.fetch(site.url(path))
            assert resp.text == EXPECTED_TEXT[path], path


# ----------------------------------------------------------------------------- time


async def test_slow_drip_body_cannot_escape_the_deadline(site: HostileSite) -> None:
    async with Engine(concurrency=2, settings=_settings()) as engine:
        t0 = time.monotonic()
        # 100 bytes, one every 50 ms: every read is quick, the whole is 5 s.
        err = await _fail(engine, site.url("/drip?bytes=100&every=0.05"), FetchOptions(timeout_s=1))
        took = time.monotonic() - t0
    assert err.code == "timeout"
    assert 0.9 < took < 1.4


async def test_slow_headers_end_at_the_deadline(site: HostileSite) -> None:
    async with Engine(concurrency=2, settings=_settings()) as engine:
        t0 = time.monotonic()
        err = await _fail(engine, site.url("/slow-headers?s=5"), FetchOptions(timeout_s=1))
        took = time.monotonic() - t0
    assert err.code == "timeout"
    assert 0.9 < took < 1.4


async def test_read_timeout_is_retried_within_the_deadline(site: HostileSite) -> None:
    settings = _settings(read_timeout_s=0.3, fetch_retries=1)
    async with Engine(concurrency=2, settings=settings) as engine:
        t0 = time.monotonic()
        err = await _fail(engine, site.url("/slow-headers?s=3"), FetchOptions(timeout_s=10))
        took = time.monotonic() - t0
    assert err.code == "timeout"
    assert err.attempts == 2
    assert took < 2.0


async def test_retries_never_outlive_the_deadline(site: HostileSite) -> None:
    site.reset_stats()
    async with Engine(concurrency=2, settings=_settings(fetch_retries=20)) as engine:
        t0 = time.monotonic()
        err = await _fail(engine, site.url("/flaky?n=100"), FetchOptions(timeout_s=1.5))
        took = time.monotonic() - t0
    assert err.code in ("http_5xx", "timeout")
    assert err.attempts >= 3
    assert took < 1.7


async def test_retry_after_seconds_is_honoured(site: HostileSite) -> None:
    site.reset_stats()
    async with Engine(concurrency=2, settings=_settings()) as engine:
        t0 = time.monotonic()
        resp = await engine.fetch(site.url("/retry-after?n=1&s=1"))
        took = time.monotonic() - t0
    assert resp.status == 200
    assert resp.attempts == 2
    assert took >= 0.95


async def test_retry_after_http_date_is_honoured(site: HostileSite) -> None:
    site.reset_stats()
    when = quote(formatdate(time.time() + 2, usegmt=True))
    async with Engine(concurrency=2, settings=_settings()) as engine:
        t0 = time.monotonic()
        resp = await engine.fetch(site.url(f"/retry-after?n=1&s={when}"))
        took = time.monotonic() - t0
    assert resp.attempts == 2
    assert took >= 0.9  # a date has whole seconds: 2 s ahead is at least 1 s ahead


async def test_retry_after_past_the_deadline_fails_at_once(site: HostileSite) -> None:
    site.reset_stats()
    async with Engine(concurrency=2, settings=_settings()) as engine:
        t0 = time.monotonic()
        err = await _fail(engine, site.url("/retry-after?n=1&s=20"), FetchOptions(timeout_s=3))
        took = time.monotonic() - t0
    assert (err.code, err.http_status, err.attempts) == ("http_4xx", 429, 1)
    assert took < 0.5


@pytest.mark.parametrize(("status", "retried"), [(503, True), (408, True), (404, False)])
async def test_which_statuses_are_retried(site: HostileSite, status: int, retried: bool) -> None:
    site.reset_stats()
    async with Engine(concurrency=2, settings=_settings()) as engine:
        path = f"/flaky?n=1&status={status}"
        if retried:
            assert (await engine.fetch(site.url(path))).attempts == 2
        else:
            assert (await _fail(engine, site.url(path))).code == "http_4xx"
    assert site.hits_full[path.lstrip()] == (2 if retried else 1)


async def test_reset_mid_body_is_connect_after_retries(site: HostileSite) -> None:
    async with Engine(concurrency=2, settings=_settings(fetch_retries=1)) as engine:
        err = await _fail(engine, site.url("/reset-mid"))
    assert (err.code, err.attempts) == ("connect", 2)


async def test_redirect_chain_and_loop(site: HostileSite) -> None:
    async with Engine(concurrency=2, settings=_settings(max_redirects=5)) as engine:
        resp = await engine.fetch(site.url("/redirect?n=3&status=307"))
        assert resp.final_url == site.url("/redirect?n=0&status=307")
        err = await _fail(engine, site.url("/redirect-loop"))
    assert err.code == "too_many_redirects"


async def test_credentials_stay_on_their_host(site: HostileSite) -> None:
    resolver = MapResolver({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"]})
    secret = {"Authorization": "Bearer s3cret", "Cookie": "session=1", "X-Keep": "yes"}
    options = FetchOptions(headers=secret, respect_robots=False)
    async with Engine(concurrency=2, settings=_settings(), resolver=resolver) as engine:
        same = f"http://a.test:{site.port}/headers"
        other = f"http://b.test:{site.port}/headers"
        kept = await engine.fetch(f"{same[:-8]}/redirect-to?url={quote(same, safe='')}", options)
        moved = await engine.fetch(f"{same[:-8]}/redirect-to?url={quote(other, safe='')}", options)
    assert "s3cret" in kept.text and "session=1" in kept.text
    assert "s3cret" not in moved.text and "session=1" not in moved.text
    assert "x-keep" in moved.text.lower()


# ----------------------------------------------------------------------------- politeness


async def test_host_delay_spaces_requests(site: HostileSite) -> None:
    site.reset_stats()
    async with Engine(concurrency=8, settings=_settings(), host_delay_s=0.2) as engine:
        await asyncio.gather(
            *(
                engine.fetch(site.url(f"/ok?d={i}"), FetchOptions(respect_robots=False))
                for i in range(4)
            )
        )
    starts = sorted(r.at for r in site.log if r.target.startswith("/ok?d="))
    assert len(starts) == 4
    # 0.2 s apart as sent; the site's thread stamps arrivals, and on a loaded CI machine its
    # scheduling moved one by over 20 ms (without the delay they arrive together)
    assert all(b - a >= 0.15 for a, b in zip(starts, starts[1:], strict=False))


# ----------------------------------------------------------------------------- robots.txt


async def test_robots_disallow_and_opt_out(fresh_site: HostileSite) -> None:
    async with Engine(concurrency=8, settings=_settings()) as engine:
        results = await asyncio.gather(
            *(engine.fetch(fresh_site.url(f"/ok?i={i}")) for i in range(20)),
            return_exceptions=True,
        )
        assert all(not isinstance(r, BaseException) for r in results)
        err = await _fail(engine, fresh_site.url("/private/page"))
        assert err.code == "robots_disallowed"
        ok = await engine.fetch(fresh_site.url("/private/page"), FetchOptions(respect_robots=False))
        assert ok.status == 200
    assert fresh_site.hits["/robots.txt"] == 1  # once per origin, shared by concurrent URLs
    assert fresh_site.hits["/private/page"] == 1


@pytest.mark.parametrize(
    ("robots_status", "code"), [(503, "robots_disallowed"), (0, "connect"), (404, None)]
)
async def test_robots_unreachable_disallows(
    fresh_site: HostileSite, robots_status: int, code: str | None
) -> None:
    fresh_site.robots_status = robots_status  # 0: the connection is reset
    async with Engine(concurrency=2, settings=_settings(fetch_retries=0)) as engine:
        if code is None:
            assert (await engine.fetch(fresh_site.url("/private/x"))).status == 200
        else:
            err = await _fail(engine, fresh_site.url("/ok"))
            assert err.code == code
            assert code != "connect" or "robots.txt" in err.message
    assert fresh_site.hits["/ok"] == 0


async def test_robots_crawl_delay_is_honoured_and_bounded(fresh_site: HostileSite) -> None:
    fresh_site.robots = "User-agent: *\nCrawl-delay: 0.3\n"
    async with Engine(concurrency=8, settings=_settings()) as engine:
        await asyncio.gather(*(engine.fetch(fresh_site.url(f"/ok?c={i}")) for i in range(3)))
    starts = sorted(r.at for r in fresh_site.log if r.target.startswith("/ok?c="))
    assert all(b - a >= 0.28 for a, b in zip(starts, starts[1:], strict=False))
    fresh_site.robots = "User-agent: *\nCrawl-delay: 60\n"
    fresh_site.reset_stats()
    async with Engine(concurrency=8, settings=_settings(max_crawl_delay_s=0.1)) as engine:
        t0 = time.monotonic()
        await asyncio.gather(*(engine.fetch(fresh_site.url(f"/ok?b={i}")) for i in range(3)))
    assert time.monotonic() - t0 < 1.5


async def test_two_processes_sharing_a_job_keep_its_crawl_delay(fresh_site: HostileSite) -> None:
    """Two engines of one job (two chunk processes) each space their requests to a host by
    2 x Crawl-delay, so the job as a whole averages at most one request per Crawl-delay."""
    fresh_site.robots = "User-agent: *\nCrawl-delay: 0.2\n"
    engines = [Engine(concurrency=4, settings=_settings(), delay_scale=2) for _ in range(2)]
    try:
        await asyncio.gather(
            *(
                e.fetch(fresh_site.url(f"/ok?d={i}{j}"))
                for i, e in enumerate(engines)
                for j in range(3)
            )
        )
    finally:
        for e in engines:
            await e.aclose()
    for i in range(2):
        starts = sorted(r.at for r in fresh_site.log if r.target.startswith(f"/ok?d={i}"))
        assert len(starts) == 3
        assert all(b - a >= 2 * 0.2 * 0.95 for a, b in zip(starts, starts[1:], strict=False))


# ----------------------------------------------------------------------------- proxies


async def test_requests_go_through_the_proxy() -> None:
    with HostileSite() as s, ForwardProxy() as proxy:
        async with Engine(
            concurrency=4, settings=_settings(), proxies={"datacenter": [proxy.url]}
        ) as engine:
            resp = await engine.fetch(s.url("/ok"), FetchOptions(proxy_type="datacenter"))
            assert resp.status == 200
            err = await _fail(engine, s.url("/ok"), FetchOptions(proxy_type="residential"))
            assert err.code == "proxy"
        assert proxy.forwarded >= 2  # robots.txt and the page
        assert s.url("/ok") in proxy.targets


async def test_dead_proxy_is_benched_and_the_live_one_used() -> None:
    dead = dead_proxy_url()
    with HostileSite() as s, ForwardProxy() as live:
        async with Engine(
            concurrency=4, settings=_settings(), proxies={"datacenter": [dead, live.url]}
        ) as engine:
            opts = FetchOptions(proxy_type="datacenter")
            results = [await engine.fetch(s.url(f"/ok?p={i}"), opts) for i in range(4)]
            pool = engine._pools["datacenter"]
            assert pool.benched(dead) > 0
            assert pool.benched(live.url) == 0
        assert all(r.status == 200 for r in results)
        assert live.forwarded >= 5


async def test_all_proxies_dead_is_proxy_error() -> None:
    with HostileSite() as s:
        proxies = {"residential": [dead_proxy_url(), dead_proxy_url()]}
        async with Engine(concurrency=2, settings=_settings(), proxies=proxies) as engine:
            opts = FetchOptions(proxy_type="residential", respect_robots=False)
            err = await _fail(engine, s.url("/ok"), opts)
            assert err.code == "proxy"
            assert err.attempts == 2
            err = await _fail(engine, s.url("/ok"), opts)  # both benched now
            assert err.code == "proxy"


async def test_proxy_auth() -> None:
    with HostileSite() as s, ForwardProxy(require_auth=("user", "pass")) as proxy:
        opts = FetchOptions(proxy_type="datacenter", respect_robots=False)
        async with Engine(
            concurrency=2, settings=_settings(), proxies={"datacenter": [proxy.url]}
        ) as engine:
            err = await _fail(engine, s.url("/ok"), opts)
            assert (err.code, err.http_status) == ("proxy", 407)
        async with Engine(
            concurrency=2, settings=_settings(), proxies={"datacenter": [proxy.auth_url]}
        ) as engine:
            assert (await engine.fetch(s.url("/ok"), opts)).status == 200


async def test_proxied_targets_are_guarded_too() -> None:
    resolver = MapResolver({"shop.example.com": ["127.0.0.1"]})
    with ForwardProxy() as proxy:
        async with Engine(
            concurrency=2,
            settings=_settings(allow_private_networks=False),
            proxies={"datacenter": [proxy.url]},  # on loopback: the operator's choice
            resolver=resolver,
        ) as engine:
            opts = FetchOptions(proxy_type="datacenter")
            for url in (
                "http://127.0.0.1:9/",
                "http://169.254.169.254/",
                "http://shop.example.com/",
            ):
                err = await _fail(engine, url, opts)
                assert err.code == "blocked", url
        assert proxy.forwarded == 0


async def test_operator_user_agent_and_default_headers_per_url_override(site: HostileSite) -> None:
    settings = _settings().model_copy(
        update={
            "user_agent": "OpsBot/2",
            "default_headers": {"Accept-Language": "de", "X-Team": "a"},
        }
    )
    async with Engine(concurrency=2, settings=settings) as engine:
        sent = json.loads((await engine.fetch(site.url("/headers"))).text)
        over = json.loads(
            (await engine.fetch(site.url("/headers"), FetchOptions(headers={"X-Team": "b"}))).text
        )
    lower = {k.lower(): v for k, v in sent.items()}
    assert (lower["user-agent"], lower["accept-language"], lower["x-team"]) == (
        "OpsBot/2",
        "de",
        "a",
    )
    assert {k.lower(): v for k, v in over.items()}["x-team"] == "b"
