"""ProxyPool: validation, round robin, benching with doubling, reset on success."""

from __future__ import annotations

import aiohttp
import pytest

from shoal.fetch._proxy import MAX_BENCH_S, ProxyPool, validate_proxy_url
from tests.sites.hostile import HostileSite
from tests.sites.proxy import ForwardProxy, dead_proxy_url

A, B, C = "http://10.0.0.1:3128", "http://u:p@10.0.0.2:3128", "https://proxy.example:443"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    "url",
    [
        "socks://10.0.0.1:1080",  # ambiguous: say which SOCKS
        "socks4a://10.0.0.1:1080",
        "10.0.0.1:3128",
        "ftp://10.0.0.1",
        "socks4://user:pass@10.0.0.1:1080",  # SOCKS4 has a user id, no password
        "http://",
        "http://10.0.0.1:99999",
        "http://10.0.0.1:3128/path",
        "http://10.0.0.1:3128?x=1",
        "http://:secret@10.0.0.1:3128",
    ],
)
def test_invalid_proxy_urls(url: str) -> None:
    with pytest.raises(ValueError, match="proxy"):
        ProxyPool([url])


def test_an_unknown_scheme_is_refused_naming_the_ones_that_work() -> None:
    with pytest.raises(ValueError) as err:
        validate_proxy_url("socks://10.0.0.1:1080")
    for scheme in ("http://", "https://", "socks5://", "socks5h://", "socks4://"):
        assert scheme in str(err.value)


@pytest.mark.parametrize("scheme", ["http", "https", "socks5", "socks5h", "socks4"])
def test_every_scheme_the_transport_speaks_is_accepted(scheme: str) -> None:
    """The schemes ``_connect.Dialer`` handles (https: TLS to the proxy; SOCKS via python-socks)."""
    user = "u:p@" if scheme != "socks4" else "u@"
    url = f"{scheme.upper()}://{user}10.0.0.1:1080"
    assert validate_proxy_url(url) == f"{scheme}://{user}10.0.0.1:1080"


def test_error_message_hides_the_password() -> None:
    with pytest.raises(ValueError) as err:
        ProxyPool(["socks://user:hunter2@10.0.0.1:1080"])
    assert "hunter2" not in str(err.value)
    assert "hunter2" not in repr(ProxyPool(["http://user:hunter2@10.0.0.1:1"]))


def test_validation_normalises() -> None:
    assert validate_proxy_url(" HTTP://u:p@Host:8080/ ") == "http://u:p@Host:8080"
    pool = ProxyPool([A, A + "/", B])
    assert len(pool) == 2 and pool.proxies == [A, B]


def test_round_robin() -> None:
    pool = ProxyPool([A, B, C])
    assert [pool.pick() for _ in range(7)] == [A, B, C, A, B, C, A]


def test_empty_pool() -> None:
    pool = ProxyPool([])
    assert len(pool) == 0 and pool.pick() is None and pool.next_available_in() == 0


def test_failed_proxy_is_benched_then_returns() -> None:
    clock = Clock()
    pool = ProxyPool([A, B, C], bench_s=60, clock=clock)
    pool.failed(B)
    assert [pool.pick() for _ in range(4)] == [A, C, A, C]
    assert pool.benched(B) == 60
    clock.now += 59.9
    assert B not in {pool.pick() for _ in range(3)}
    clock.now += 0.2
    assert B in {pool.pick() for _ in range(3)}
    assert pool.benched(B) == 0


def test_all_benched_gives_none_until_one_is_back() -> None:
    clock = Clock()
    pool = ProxyPool([A, B], bench_s=10, clock=clock)
    pool.failed(A)
    clock.now += 5
    pool.failed(B)
    assert pool.pick() is None
    assert pool.next_available_in() == pytest.approx(5)
    clock.now += 5
    assert pool.pick() == A and pool.pick() == A


def test_bench_doubles_and_is_capped() -> None:
    clock = Clock()
    pool = ProxyPool([A], bench_s=60, clock=clock)
    expected = [60, 120, 240, 480, MAX_BENCH_S, MAX_BENCH_S]
    for bench in expected:
        pool.failed(A)
        assert pool.benched(A) == pytest.approx(bench)
        clock.now += bench
        assert pool.pick() == A
    for _ in range(2000):  # no overflow however long it keeps failing
        pool.failed(A)
    assert pool.benched(A) == pytest.approx(MAX_BENCH_S)


def test_success_resets_the_failure_count() -> None:
    clock = Clock()
    pool = ProxyPool([A], bench_s=60, clock=clock)
    pool.failed(A)
    pool.failed(A)
    assert pool.benched(A) == pytest.approx(120)
    clock.now += 120
    pool.succeeded(A)
    pool.failed(A)
    assert pool.benched(A) == pytest.approx(60)


def test_success_does_not_lift_an_active_bench() -> None:
    clock = Clock()
    pool = ProxyPool([A], bench_s=60, clock=clock)
    pool.failed(A)
    pool.succeeded(A)  # a request picked before the failure finished fine
    assert pool.pick() is None


def test_unknown_proxy_is_ignored() -> None:
    pool = ProxyPool([A])
    pool.failed("http://elsewhere:1")
    pool.succeeded("http://elsewhere:1")
    assert pool.pick() == A


async def test_picked_urls_work_with_aiohttp_through_a_real_proxy() -> None:
    """The engine passes ``pick()`` to aiohttp as ``proxy=``: credentials ride in the URL."""
    with HostileSite() as site, ForwardProxy(require_auth=("user", "pa:ss")) as proxy:
        good = f"http://user:pa%3Ass@127.0.0.1:{proxy.port}"
        pool = ProxyPool([dead_proxy_url(), good], bench_s=60)
        async with aiohttp.ClientSession() as session:
            seen = []
            for _ in range(3):
                chosen = pool.pick()
                assert chosen is not None
                try:
                    async with session.get(site.url("/ok"), proxy=chosen) as resp:
                        assert resp.status == 200
                        seen.append(chosen)
                        pool.succeeded(chosen)
                except aiohttp.ClientConnectionError:
                    pool.failed(chosen)
            assert seen == [good, good]
            async with session.get(site.url("/ok"), proxy=proxy.url) as resp:
                assert resp.status == 407
        assert proxy.forwarded == 2 and proxy.rejected == 1
