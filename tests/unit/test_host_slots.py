"""SHOAL_MAX_PER_HOST across jobs, processes and workers: host-slot leases in the job store
(``shoal.store.HostLeases``) and the engine's gates on them (``shoal.fetch._hostcap``).

The grant rules run on SQLite and PostgreSQL alike, from threads and from processes; engines
fetch from a real catalog site on 127.0.0.1 that counts the requests it has in flight."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, select

from shoal.fetch import Engine, FetchOptions
from shoal.fetch._hostcap import SharedHostCap
from shoal.settings import Settings
from shoal.store import HostGrant, HostLeases, HostSlotRow, get_host_leases
from shoal.store._db import get_engine
from shoal.store.migrations import baseline
from tests.sites.catalog import Site

#: the grant rules are checked on SQLite and on PostgreSQL alike
STORES = ("sqlite", "postgres")
ROOT = Path(__file__).resolve().parents[2]
OPTIONS = FetchOptions(timeout_s=60, respect_robots=False)


@pytest.fixture
def leases(settings: Settings) -> HostLeases:
    return HostLeases(settings.db_url)


def _claim(leases: HostLeases, holder: str, want: int, host: str = "h", **kw) -> HostGrant:
    kw.setdefault("lease_s", 30)
    return leases.sync(holder, cap=8, claim={host: want}, **kw).get(host, HostGrant(0, 0, 0))


# --- the grant ---------------------------------------------------------------------------


def test_grants_never_pass_the_cap(leases: HostLeases) -> None:
    assert _claim(leases, "a", 6).slots == 6
    assert _claim(leases, "b", 6).slots == 2  # what is left
    assert _claim(leases, "c", 1).slots == 0
    assert leases.leases("h") == {"a": (6, 0), "b": (2, 4), "c": (0, 1)}
    assert _claim(leases, "c", 8, host="other").slots == 8  # each host has its own cap


def test_a_waiting_holder_gets_a_fair_share(leases: HostLeases) -> None:
    assert _claim(leases, "a", 8).slots == 8
    assert _claim(leases, "b", 8) == HostGrant(slots=0, fair=4, others_want=0)
    # a's renewal tells it that b waits, and what a fair share is
    assert leases.sync("a", cap=8, lease_s=30, renew=True) == {"h": HostGrant(8, 4, 8)}
    leases.sync("a", cap=8, lease_s=30, keep={"h": (4, 0)})
    # while b waits, a cannot grow back into the slots it gave up
    assert _claim(leases, "a", 8).slots == 4
    assert _claim(leases, "b", 8).slots == 4
    leases.sync("b", cap=8, lease_s=30, release=["h"])
    assert _claim(leases, "a", 8).slots == 8  # alone again: all of it


def test_expired_leases_come_back(leases: HostLeases) -> None:
    assert _claim(leases, "dead", 8, lease_s=0).slots == 8  # expired as soon as written
    assert _claim(leases, "b", 8).slots == 8  # the grant reclaimed the dead lease
    assert leases.leases("h") == {"b": (8, 0)}
    # a holder whose lease was taken back learns it at its renewal: the host is missing
    assert leases.sync("dead", cap=8, lease_s=30, renew=True) == {}
    # leases long dead on hosts nobody asks for are purged by anyone's renewal
    _claim(leases, "gone", 2, host="forgotten", lease_s=-120)
    leases.sync("b", cap=8, lease_s=30, renew=True)
    with get_engine(leases.url).connect() as conn:
        hosts = set(conn.execute(select(HostSlotRow.host)).scalars())
    assert hosts == {"h"}


def test_keep_only_lowers_and_release_gives_back(leases: HostLeases) -> None:
    assert _claim(leases, "a", 4).slots == 4
    leases.sync("a", cap=8, lease_s=30, keep={"h": (8, 0)})
    assert leases.leases("h") == {"a": (4, 0)}  # keep never raises a lease
    leases.sync("a", cap=8, lease_s=30, keep={"h": (2, 0)})
    assert leases.leases("h") == {"a": (2, 0)}
    leases.sync("a", cap=8, lease_s=30, keep={"h": (0, 0)})
    assert leases.leases("h") == {}
    _claim(leases, "a", 3)
    _claim(leases, "a", 3, host="h2")
    leases.sync("a", cap=8, lease_s=30, release=["h"])
    assert leases.leases("h") == {} and leases.leases("h2") == {"a": (3, 0)}
    leases.release_all("a")
    assert leases.leases("h2") == {}


def test_one_call_claims_shrinks_and_releases_many_hosts(leases: HostLeases) -> None:
    hosts = [f"h{i}.example" for i in range(600)]  # more than one statement's slice
    got = leases.sync("a", cap=8, lease_s=30, claim=dict.fromkeys(hosts, 3))
    assert len(got) == 600 and {g.slots for g in got.values()} == {3}
    assert _claim(leases, "b", 8, host="h5.example").slots == 5
    leases.sync(
        "a",
        cap=8,
        lease_s=30,
        keep={"h5.example": (1, 0), "h6.example": (0, 0), "h8.example": (2, 4)},
        release=["h7.example"],
    )
    answer = leases.sync("a", cap=8, lease_s=30, renew=True)
    assert len(answer) == 598 and "h6.example" not in answer and "h7.example" not in answer
    assert answer["h5.example"] == HostGrant(1, 4, 3)  # b holds 5 and wants 3 more
    assert leases.leases("h8.example") == {"a": (2, 4)}


def test_a_very_long_host_name_is_stored_under_a_key(leases: HostLeases) -> None:
    host = "a" * 300 + ".example"
    assert _claim(leases, "a", 3, host=host).slots == 3
    assert leases.sync("a", cap=8, lease_s=30, renew=True) == {host: HostGrant(3, 8, 0)}


def test_grants_from_threads_never_pass_the_cap(leases: HostLeases) -> None:
    cap, peak, granted, errors = 8, [0], [0], []
    stop = threading.Event()

    def work(n: int) -> None:
        rng, holder, held = random.Random(n), f"t{n}", 0
        try:
            for _ in range(60):
                roll = rng.random()
                if roll < 0.6:
                    got = leases.sync(holder, cap=cap, lease_s=30, claim={"h": rng.randint(1, 8)})
                    held = got["h"].slots
                    granted[0] += held > 0
                elif roll < 0.8 and held:
                    held = rng.randint(0, held)
                    leases.sync(holder, cap=cap, lease_s=30, keep={"h": (held, 0)})
                else:
                    leases.sync(holder, cap=cap, lease_s=30, release=["h"])
                    held = 0
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], sum(s for s, _ in leases.leases("h").values()))

    workers = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    watcher = threading.Thread(target=watch)
    watcher.start()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    watcher.join()
    assert not errors
    assert granted[0] > 0 and peak[0] <= cap


def test_grants_from_processes_never_pass_the_cap(leases: HostLeases) -> None:
    cap, peak = 8, 0
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.hostslots_worker"]
            + ["grants", leases.url, "h", "8", "60", str(n)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    while any(p.poll() is None for p in procs):
        peak = max(peak, sum(s for s, _ in leases.leases("h").values()))
    granted = 0
    for p in procs:
        out, err = p.communicate()
        assert p.returncode == 0, err
        granted += int(out.split()[-1])
    assert granted > 0 and peak <= cap
    assert leases.leases("h") == {}  # each gave its leases back


def test_the_table_is_created_on_an_older_store(tmp_path: Path) -> None:
    """A store of before the table (55f2ba1's, the first migration's schema) gets it."""
    url = f"sqlite:///{tmp_path}/old.db"
    old = create_engine(url)
    baseline.metadata().create_all(old)
    assert "host_slots" not in inspect(old).get_table_names()
    old.dispose()
    assert _claim(HostLeases(url), "a", 2).slots == 2


def test_the_cross_job_cap_can_be_turned_off(settings: Settings) -> None:
    assert isinstance(get_host_leases(settings), HostLeases)
    assert get_host_leases(settings.model_copy(update={"host_lease_s": 0})) is None


# --- engines sharing a host ----------------------------------------------------------------


@pytest.fixture
def slow_site() -> Site:
    site = Site().start()
    site.app.delay_ms = 20  # every /p/N takes 20 ms: requests overlap
    try:
        yield site
    finally:
        site.stop()


def _fetch_settings(settings: Settings, **kw: object) -> Settings:
    values = {"allow_private_networks": True, "max_per_host": 4, "host_lease_s": 2.0, **kw}
    return settings.model_copy(update=values)


async def _fetch_all(engine: Engine, urls: list[str], workers: int) -> list[float]:
    todo, done = iter(urls), []

    async def worker() -> None:
        for url in todo:
            await engine.fetch(url, OPTIONS)
            done.append(time.monotonic())

    await asyncio.gather(*(worker() for _ in range(workers)))
    return done


async def test_two_engines_in_one_process_share_the_cap(
    settings: Settings, leases: HostLeases, slow_site: Site
) -> None:
    s = _fetch_settings(settings)
    urls = [slow_site.url(f"/p/{i}") for i in range(120)]
    async with (
        Engine(concurrency=8, settings=s, host_leases=leases) as a,
        Engine(concurrency=8, settings=s, host_leases=leases) as b,
    ):
        done_a, done_b = await asyncio.gather(_fetch_all(a, urls, 8), _fetch_all(b, urls[::-1], 8))
    assert len(done_a) == len(done_b) == 120
    assert slow_site.stats.peak <= 4
    assert leases.leases("127.0.0.1") == {}  # given back on close
    # both progressed side by side: neither waited for the other to finish
    assert min(done_a[-1], done_b[-1]) > max(done_a[0], done_b[0])


async def test_one_engine_alone_costs_a_few_transactions(
    settings: Settings, leases: HostLeases, slow_site: Site
) -> None:
    slow_site.app.delay_ms = 0
    s = _fetch_settings(settings, max_per_host=16, host_lease_s=30.0)
    async with Engine(concurrency=16, settings=s, host_leases=leases) as engine:
        started = time.monotonic()
        await _fetch_all(engine, [slow_site.url(f"/p/{i}") for i in range(400)], 16)
        took = time.monotonic() - started
        shared = engine.host_slots
        assert shared is not None
        # a claim or two as the demand ramps up, then one check a second: none per request
        assert shared.transactions <= 2 + took / shared.check_s + 1
        assert leases.leases("127.0.0.1") == {shared.holder: (16, 0)}
    assert slow_site.stats.peak <= 16


async def test_the_jobs_own_per_host_cap_still_applies(
    settings: Settings, leases: HostLeases, slow_site: Site
) -> None:
    s = _fetch_settings(settings, max_per_host=8)
    async with Engine(concurrency=8, settings=s, max_per_host=2, host_leases=leases) as engine:
        await _fetch_all(engine, [slow_site.url(f"/p/{i}") for i in range(40)], 8)
        assert engine.host_slots is not None
        assert max(g for g, _ in leases.leases("127.0.0.1").values()) <= 2
    assert slow_site.stats.peak <= 2


async def test_a_dead_holders_slots_come_back(
    settings: Settings, leases: HostLeases, slow_site: Site
) -> None:
    # a worker that took every slot, then died: its lease is never renewed
    leases.sync("dead", cap=4, lease_s=1.0, claim={"127.0.0.1": 4})
    s = _fetch_settings(settings, host_lease_s=1.0)
    async with Engine(concurrency=4, settings=s, host_leases=leases) as engine:
        await _fetch_all(engine, [slow_site.url(f"/p/{i}") for i in range(8)], 4)
        shared = engine.host_slots
        assert shared is not None
        assert shared.transactions >= 2  # claims got nothing until the dead lease expired
        assert set(leases.leases("127.0.0.1")) == {shared.holder}
    assert slow_site.stats.peak <= 4


class FakeLeases:
    """A store that grants whatever is asked; ``others_want``/``fair`` set what checks report."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.held: dict[str, int] = {}
        self.others_want = 0
        self.fair = 8

    def sync(self, holder, *, cap, lease_s, claim=None, keep=None, release=(), renew=False,
             min_left_s=None):  # fmt: skip
        self.calls.append(
            {
                "claim": dict(claim or {}),
                "keep": dict(keep or {}),
                "release": list(release),
                "renew": renew,
            }  # fmt: skip
        )
        for h in release:
            self.held.pop(h, None)
        for h, (slots, _) in (keep or {}).items():
            self.held[h] = min(self.held[h], slots)
            if not self.held[h]:
                del self.held[h]
        self.held.update(claim or {})
        hosts = self.held if renew else (claim or {})
        return {h: HostGrant(self.held[h], self.fair, self.others_want) for h in hosts}

    def release_all(self, holder: str) -> None:
        self.calls.append({"release_all": holder})


async def test_gates_close_when_the_leases_may_have_expired() -> None:
    store = FakeLeases()
    cap = SharedHostCap(store, cap=8, local_cap=8, lease_s=60)
    gate = cap.gate("h")
    await cap.wait("h", gate)  # the first request claims (and starts the renewal clock)
    assert gate.in_use == 1 and gate.limit == 2
    assert store.calls[0]["claim"] == {"h": 2} and store.calls[0]["renew"]
    cap._expired()  # no renewal got through for a whole lease
    assert gate.limit == 0
    before = len(store.calls)
    cap.leave("h", gate)
    await asyncio.wait_for(cap.wait("h", gate), 10)  # admitted once a renewal went through
    assert store.calls[before]["renew"] and not store.calls[before]["keep"]
    assert gate.limit == gate.held == 2 and store.held == {"h": 2}  # the lease was kept
    cap.leave("h", gate)
    await cap.aclose()
    assert store.calls[-1] == {"release_all": cap.holder}


async def _check(cap: SharedHostCap) -> None:
    """One check, now (what the background task does every ``check_s``)."""
    cap._next_check = -math.inf
    await cap._step(asyncio.get_running_loop())


async def test_a_holder_shrinks_to_its_fair_share_when_others_wait() -> None:
    store = FakeLeases()
    cap = SharedHostCap(store, cap=8, local_cap=8, lease_s=60)
    gate = cap.gate("h")
    store.held["h"] = gate.limit = gate.held = 8
    for _ in range(6):  # six requests in flight
        await cap.wait("h", gate)
    store.others_want, store.fair = 3, 4
    await _check(cap)  # others wait: keep min(fair share, what was used) = 4
    assert gate.limit == 4 and gate.held == 8
    for _ in range(2):
        cap.leave("h", gate)  # 4 in flight now: the 4 unused slots can go back
    await _check(cap)
    assert store.calls[-1]["keep"] == {"h": (4, 0)} and gate.held == store.held["h"] == 4
    for _ in range(4):
        cap.leave("h", gate)
    await cap.aclose()


async def test_an_idle_host_is_released() -> None:
    store = FakeLeases()
    cap = SharedHostCap(store, cap=8, local_cap=8, lease_s=15)
    gate = cap.gate("h")
    store.held["h"] = gate.limit = gate.held = 8
    await cap.wait("h", gate)
    cap.leave("h", gate)
    checks = 0
    while "h" in cap.gates and checks < 100:
        await _check(cap)
        checks += 1
    # the check that saw it used, ``refresh_s`` (3 s) of checks finding it idle, one a second,
    # and the one that lets go
    assert checks == 2 + round(cap.refresh_s / cap.check_s)
    assert store.calls[-1]["release"] == ["h"] and store.held == {}
    await cap.aclose()


def test_two_processes_never_pass_the_cap_and_both_progress(
    settings: Settings, leases: HostLeases, slow_site: Site
) -> None:
    n = 400  # the store exists already (``leases``), as it does when a job runs
    env = {
        **os.environ,
        "SHOAL_DATABASE_URL": settings.db_url,
        "SHOAL_DATA_DIR": str(settings.data_dir),
        "SHOAL_MAX_PER_HOST": "8",
        "SHOAL_HOST_LEASE_S": "2",
        "SHOAL_ALLOW_PRIVATE_NETWORKS": "1",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.hostslots_worker"]
            + ["fetch", settings.db_url, slow_site.url(f"/p/{k}"), str(n), "16"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in (1, 2)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:  # go: both at once
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert slow_site.stats.peak <= 8
    assert all(len(r["done"]) == n for r in results)
    first, other = sorted(results, key=lambda r: r["done"][-1])
    # when the first process finished, the other had done a fair part of its pages too
    assert sum(t <= first["done"][-1] for t in other["done"]) >= n // 5
    assert all(r["tx"] < n // 5 for r in results)  # no round trip per request
