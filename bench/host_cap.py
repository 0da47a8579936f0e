"""What ``SHOAL_MAX_PER_HOST`` across jobs and workers costs: leased host slots against none.

    python bench/host_cap.py [--pages 20000] [--kb 44] [--concurrency 64] [--repeat 3]
                             [--db sqlite|postgres]

Writes N product pages (``bench/fetch_engines.page``) to a temp folder, serves them with nginx on
127.0.0.1 (``bench/_nginx.py``) and fetches every page through Shoal's ``Engine``, as a job does
(SSRF guard on with loopback allowed, robots.txt respected: nginx answers 404 once), in two
situations, each with and without the cross-job cap, all in this one run:

1. **one process alone on the host** (C requests in flight, ``SHOAL_MAX_PER_HOST`` = C): the
   fast path. Without: the engine's per-job cap only (no ``host_leases``). With: the engine holds
   a lease on the host's slots in the job store and every request passes the local gate.
   Runs alternate (without, with, without, ...) and the best of ``--repeat`` is kept.
2. **two processes sharing the host** (each a job with C in flight fetching all N pages,
   ``SHOAL_MAX_PER_HOST`` = C): without the cross-job cap each process is capped at C/2 (the
   static split chunk processes of one job get, so the host sees C either way); with it, each
   may use C and the store splits the host's C slots between them: the first to ask gets them
   all, the other waits until the first's next check (within a second) shrinks it to half.

3. **many hosts** (one process, C in flight): the same pages under ``--hosts`` names (default
   1,000; ``h17.test`` and so on, all resolving to nginx), in a shuffled order, so every host is
   in use all along: with the cap, each host is claimed once (claims of hosts met meanwhile
   share a transaction) and all leases are checked and renewed together. robots.txt is off
   here (it would add a request per host).

For each: pages/s, the ratio with/without, CPU µs per request (user+system of the fetching
processes; nginx is another process) and the difference with - without: the cost of the cap per
request, and the job-store transactions per 1,000 requests. Last, the gate alone: a request's
way through ``Engine._in_shared_slot`` with the rest of the request stubbed out, against the
stub alone, in ns (no I/O: the cost without the noise of a shared machine).
``--db postgres`` runs the job store on a throw-away PostgreSQL (``tests/pgserver.py``) instead
of SQLite in the temp folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _nginx import Nginx, find_or_install  # noqa: E402
from aiohttp.abc import AbstractResolver, ResolveResult  # noqa: E402
from fetch_engines import page  # noqa: E402

from shoal.fetch import Engine, FetchOptions  # noqa: E402
from shoal.settings import Settings  # noqa: E402
from shoal.store import HostLeases  # noqa: E402


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class _Loopback(AbstractResolver):
    """Every name is 127.0.0.1 (the many-hosts case: nginx answers any ``Host``)."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }  # fmt: skip
        ]

    async def close(self) -> None:
        return None


async def fetch_pages(
    urls: list[str],
    concurrency: int,
    settings: Settings,
    db_url: str | None,
    job_cap: int,
    many_hosts: bool = False,
) -> dict[str, float]:
    """Fetch every URL with ``concurrency`` workers through one Engine; timings and counts."""
    leases = HostLeases(db_url) if db_url else None
    options = FetchOptions(timeout_s=60, respect_robots=not many_hosts)
    engine = Engine(
        concurrency=concurrency,
        settings=settings,
        max_per_host=job_cap,
        host_leases=leases,
        resolver=_Loopback() if many_hosts else None,
    )
    it = iter(urls)
    total = 0

    async def worker() -> None:
        nonlocal total
        for url in it:
            chars = len((await engine.fetch(url, options)).text)
            total += chars

    async with engine:
        cpu0, t0, wall0 = _cpu(), time.perf_counter(), time.time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall, cpu, end = time.perf_counter() - t0, _cpu() - cpu0, time.time()
        shared = engine.host_slots
        tx = shared.transactions if shared is not None else 0
    return {
        "pages": len(urls),
        "chars": total,
        "wall": wall,
        "cpu": cpu,
        "tx": tx,
        "start": wall0,
        "end": end,
        "peak": engine.peak_in_flight,
    }


def _keep_best(best: dict[str, dict[str, float]], name: str, run: dict[str, float]) -> None:
    """The fastest run of ``name``, with the lowest CPU per request seen in any of its runs
    (the least disturbed by the rest of the machine)."""
    cpu = run["cpu"] / run["pages"]
    kept = best.get(name)
    if kept is None:
        best[name] = {**run, "cpu_min": cpu}
        return
    if run["wall"] < kept["wall"]:
        best[name] = {**run, "cpu_min": kept["cpu_min"]}
    best[name]["cpu_min"] = min(best[name]["cpu_min"], cpu)


def _settings(cap: int) -> Settings:
    return Settings(allow_private_networks=True, max_per_host=cap)  # type: ignore[call-arg]


def alone(
    urls: list[str], c: int, db_url: str, repeat: int, expected: int
) -> dict[str, dict[str, float]]:
    for db in (None, db_url):  # warm up: first-run costs (imports, caches) out of the timing
        asyncio.run(fetch_pages(urls[: c * 8], c, _settings(c), db, c))
    best: dict[str, dict[str, float]] = {}
    for _ in range(repeat):
        for name, db in (("without", None), ("with", db_url)):
            r = asyncio.run(fetch_pages(urls, c, _settings(c), db, c))
            if r["chars"] != expected:
                raise SystemExit(f"alone/{name}: read {r['chars']} chars, expected {expected}")
            _keep_best(best, name, r)
    return best


def many(
    urls: list[str], c: int, db_url: str, repeat: int, expected: int
) -> dict[str, dict[str, float]]:
    best: dict[str, dict[str, float]] = {}
    for _ in range(repeat):
        for name, db in (("without", None), ("with", db_url)):
            r = asyncio.run(fetch_pages(urls, c, _settings(c), db, c, many_hosts=True))
            if r["chars"] != expected:
                raise SystemExit(f"many/{name}: read {r['chars']} chars, expected {expected}")
            _keep_best(best, name, r)
    return best


def shared(
    urls: list[str], c: int, db_url: str, repeat: int, expected: int
) -> dict[str, dict[str, float]]:
    """Two processes, all the URLs each, started together."""
    halves = [urls, urls[::-1]]
    best: dict[str, dict[str, float]] = {}
    for _ in range(repeat):
        for name in ("without", "with"):
            procs = []
            for k, part in enumerate(halves):
                spec = {
                    "urls": part,
                    "concurrency": c,
                    "cap": c,
                    "db": db_url if name == "with" else None,
                    "job_cap": c if name == "with" else c // 2,
                }
                path = Path(tempfile.gettempdir()) / f"shoal-hostcap-{os.getpid()}-{k}.json"
                path.write_text(json.dumps(spec))
                procs.append(
                    subprocess.Popen(
                        [sys.executable, __file__, "--child", str(path)],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                )
            for p in procs:
                assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            results = []
            for p in procs:
                out, _ = p.communicate(timeout=600)
                if p.returncode != 0:
                    raise SystemExit(f"shared/{name}: a child failed ({p.returncode})")
                results.append(json.loads(out.strip().splitlines()[-1]))
            chars = sum(r["chars"] for r in results)
            if chars != 2 * expected:
                raise SystemExit(f"shared/{name}: read {chars} chars, expected {expected}")
            merged = {
                "pages": sum(r["pages"] for r in results),
                "wall": max(r["end"] for r in results) - min(r["start"] for r in results),
                "cpu": sum(r["cpu"] for r in results),
                "tx": sum(r["tx"] for r in results),
                "share": min(r["wall"] for r in results) / max(r["wall"] for r in results),
            }
            _keep_best(best, name, merged)
    return best


async def gate_ns(db_url: str, n: int) -> tuple[float, float]:
    """ns per request through the shared gate + a stub, and through the stub alone."""
    from yarl import URL

    from shoal.fetch._engine import _State

    engine = Engine(concurrency=64, settings=_settings(64), host_leases=HostLeases(db_url))
    shared = engine.host_slots
    assert shared is not None
    gate = shared.gate("127.0.0.1")
    gate.limit = gate.held = 64  # as granted: no store involved

    async def stub(*_args: object) -> None:
        return None

    engine._in_job_slot = stub  # type: ignore[method-assign]
    url = URL("http://127.0.0.1/")
    state = _State(url, 60.0, 1 << 20)
    best = [float("inf"), float("inf")]
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            await engine._in_shared_slot("127.0.0.1", url, b"", state, None)
        t1 = time.perf_counter_ns()
        for _ in range(n):
            await stub("127.0.0.1", url, b"", state, None)
        t2 = time.perf_counter_ns()
        best = [min(best[0], (t1 - t0) / n), min(best[1], (t2 - t1) / n)]
    await engine.aclose()
    return best[0], best[1]


def child(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    print("ready", flush=True)
    sys.stdin.readline()  # go: both children at once
    r = asyncio.run(
        fetch_pages(
            spec["urls"], spec["concurrency"], _settings(spec["cap"]), spec["db"], spec["job_cap"]
        )  # fmt: skip
    )
    print(json.dumps(r), flush=True)


def _report(title: str, res: dict[str, dict[str, float]]) -> None:
    wo, w = res["without"], res["with"]
    rate_wo, rate_w = wo["pages"] / wo["wall"], w["pages"] / w["wall"]
    us_wo, us_w = wo["cpu_min"] * 1e6, w["cpu_min"] * 1e6
    print(f"\n{title}")
    print(
        "| cross-job cap | pages/s (best) | CPU µs/request (lowest) "
        "| store transactions / 1,000 requests |"
    )
    print("|---|---|---|---|")
    print(f"| without | {rate_wo:,.0f} | {us_wo:.1f} | 0 |")
    print(f"| with | {rate_w:,.0f} | {us_w:.1f} | {w['tx'] / w['pages'] * 1000:.2f} |")
    print(f"ratio with/without: {rate_w / rate_wo:.3f}; cost per request: {us_w - us_wo:+.1f} µs")
    if "share" in w:
        print(
            f"the two processes' fetch times, shorter/longer: without {wo['share']:.2f}, "
            f"with {w['share']:.2f}"
        )


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--pages", type=int, default=20_000)
    ap.add_argument("--kb", type=int, default=44, help="pad pages to this size (0: ~3 KB)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5, help="runs per case; the best is kept")
    ap.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--hosts", type=int, default=1000, help="names of the many-hosts case")
    ap.add_argument("--skip-shared", action="store_true", help="no two-process case")
    ap.add_argument("--skip-many", action="store_true", help="no many-hosts case")
    args = ap.parse_args()

    binary = find_or_install()
    if binary is None:
        sys.exit("nginx is needed (apt-get install nginx-light)")
    tmp = Path(tempfile.mkdtemp(prefix="shoal-hostcap-bench-"))
    root = tmp / "site"
    root.mkdir()
    for n in range(args.pages):
        (root / str(n)).write_text(page(n, args.kb))
    os.chmod(tmp, 0o755)
    os.chmod(root, 0o755)
    pg = None
    if args.db == "postgres":
        from tests.pgserver import PgServer

        pg = PgServer().start()
        db_url = pg.new_database()
    else:
        db_url = f"sqlite:///{tmp / 'store.db'}"
    HostLeases(db_url)  # the store exists before the processes start, as with a running job
    nginx = Nginx(binary, root, tmp / "nginx").start(probe_path="/0")
    urls = [f"{nginx.base}/{n}" for n in range(args.pages)]
    expected = sum(len(page(n, args.kb)) for n in range(args.pages))
    c = args.concurrency
    print(
        f"{args.pages} pages of ~{expected / args.pages / 1024:.1f} KB from nginx {nginx.base}, "
        f"C={c}, job store {args.db}, python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"best of {args.repeat}"
    )
    try:
        _report(f"One process alone on the host (C={c}, SHOAL_MAX_PER_HOST={c})",
                alone(urls, c, db_url, args.repeat, expected))  # fmt: skip
        if not args.skip_many:
            rng = random.Random(7)
            spread = [f"http://h{n % args.hosts}.test:{nginx.port}/{n}" for n in range(args.pages)]
            rng.shuffle(spread)
            _report(
                f"Many hosts: one process, the pages under {args.hosts} names, shuffled (C={c})",
                many(spread, c, db_url, args.repeat, expected),
            )
        if not args.skip_shared:
            _report(
                f"Two processes sharing the host (each C={c}, SHOAL_MAX_PER_HOST={c}; "
                f"without: each capped at {c // 2})",
                shared(urls, c, db_url, args.repeat, expected),
            )
        through, stub = asyncio.run(gate_ns(db_url, 200_000))
        print(
            f"\nThe gate alone: {through:.0f} ns per request through it (with a stub for the "
            f"rest), the stub alone {stub:.0f} ns: the gate costs {through - stub:.0f} ns"
        )
    finally:
        nginx.stop()
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
