"""Time a change report over two 1,000,000-row runs against a plain Polars join done by hand.

    python bench/change_report.py [--rows 1000000] [--repeat 3] [--key url|sku] [--dups 0]
                                  [--format ndjson|csv|parquet] [--dir /tmp/shoal-bench-changes]

Writes two runs' part files once, as Shoal writes them (``write_table``: Parquet, zstd, row
groups of 1,024, 200 chunks of 5,000 rows; ``data`` as JSON text): last night, and tonight
with 1 % of products replaced (removed + added), 5 % repriced, 1 % restocked, 2 % errored.

Then alternates, ``--repeat`` times (in reversed order every other time), two measurements,
each in a fresh child process so its peak RSS (``ru_maxrss``, which counts Polars' native
allocations, unlike tracemalloc) is its own:

- ``shoal``: ``shoal.changes.report_changes`` — the comparison, the changes file in the job's
  format and the row labels, written to storage;
- ``baseline``: the same comparison written by hand in Polars: scan both runs' parts, keep ok
  rows, decode the fields, full join on the key, count added/removed/changed and per-field
  changes, and sink the differing rows to Parquet.

With ``--output`` it also times building the job's output with and without the ``change``
column (``build_output``), the other cost a compared job pays. Prints each run (wall time, CPU
time of all its threads, peak RSS), the medians and their ratios (shoal / baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import polars as pl  # noqa: E402
import pyarrow as pa  # noqa: E402

from shoal.contract import JobSpec  # noqa: E402
from shoal.output._parts import PART_SCHEMA, part_url, part_urls, write_table  # noqa: E402
from shoal.storage import Storage  # noqa: E402

FIELDS = {"sku": "string", "name": "string", "price": "number", "in_stock": "boolean"}
CHUNK = 5_000


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    """CPU seconds of this process, every thread (Polars' pool included): on a shared, loaded
    machine the work done is steadier than the wall clock."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _row_data(pid: int, night: int, i: int) -> str:
    price = 9.99 + pid % 1000 + (1 if night == 1 and i % 20 == 5 else 0)
    stock = (pid % 2 == 0) != (night == 1 and i % 100 == 11)
    return (
        f'{{"sku":"SKU-{pid}","name":"Product {pid} with a reasonably long name",'
        f'"price":{price},"price_currency":"USD","in_stock":{"true" if stock else "false"}}}'
    )


def write_run(storage: Storage, job_id: str, n: int, night: int, dups: float) -> None:
    """One run's parts: 200 chunks of 5,000 rows (n = 1,000,000), Shoal's part schema."""
    every = int(1 / dups) if dups else 0
    for c0 in range(0, n, CHUNK):
        idx = list(range(c0, min(n, c0 + CHUNK)))
        urls, status, data, err = [], [], [], []
        for i in idx:
            pid = n + i if night == 1 and i % 100 == 3 else i  # replaced: one gone, one new
            if every and i % every == every - 1:
                pid = i - 1  # the same product twice in one run
            bad = (i * 7 + night) % 50 == 0
            urls.append(f"https://store.example/p/{pid}")
            status.append("error" if bad else "ok")
            data.append(None if bad else _row_data(pid, night, i))
            err.append("timeout" if bad else None)
        m = len(idx)
        cols = {c: pa.nulls(m, PART_SCHEMA.field(c).type) for c in PART_SCHEMA.names}
        cols.update(
            url=pa.array(urls),
            final_url=pa.array(urls),
            input_index=pa.array(idx, pa.int64()),
            status=pa.array(status),
            http_status=pa.array([200] * m, pa.int32()),
            attempts=pa.array([1] * m, pa.int32()),
            credits=pa.array([1] * m, pa.int32()),
            data_json=pa.array(data, pa.string()),
            error_code=pa.array(err, pa.string()),
        )
        table = pa.table([cols[c] for c in PART_SCHEMA.names], schema=PART_SCHEMA)
        write_table(storage, part_url(storage, job_id, c0 // CHUNK), table)


def _spec(args: argparse.Namespace) -> JobSpec:
    return JobSpec.model_validate(
        {
            "defaults": {},
            "concurrency": 4,
            "output": {"format": args.format, "gzip": args.format != "parquet"},
            "fields": FIELDS,
            "compare": {"key": args.key, "previous_job_id": "job_last"},
        }
    )


def run_shoal(args: argparse.Namespace) -> dict:
    from shoal.changes import report_changes

    storage = Storage(args.dir)
    t, cpu = time.perf_counter(), _cpu_s()
    report = report_changes(storage, "job_tonight", _spec(args), "job_last")
    dt = time.perf_counter() - t
    c = report.comparison
    return {
        "seconds": dt,
        "cpu": _cpu_s() - cpu,
        "peak_mb": _peak_mb(),
        "counts": [c.added, c.removed, c.changed, c.unchanged, c.duplicate_keys],
        "fields": c.fields,
        "changes_rows": report.rows,
    }


def run_baseline(args: argparse.Namespace) -> dict:
    storage = Storage(args.dir)
    fields = {f: t for f, t in FIELDS.items() if f != args.key}
    types = {"string": pl.String, "number": pl.Float64, "boolean": pl.Boolean}
    decode = {f: types[t] for f, t in FIELDS.items()}

    def side(job_id: str) -> pl.LazyFrame:
        rows = pl.scan_parquet(part_urls(storage, job_id)).filter(pl.col("status") == "ok")
        data = pl.col("data_json").str.json_decode(pl.Struct(decode))
        out = rows.select("url", data.alias("d")).unnest("d")
        return out.rename({"url": "key"}) if args.key == "url" else out.rename({args.key: "key"})

    t, cpu = time.perf_counter(), _cpu_s()
    joined = side("job_tonight").join(
        side("job_last"), on="key", how="full", coalesce=True, suffix="_prev"
    )
    differs = {f: pl.col(f).ne_missing(pl.col(f"{f}_prev")) for f in fields}
    first = next(iter(fields))
    counts = (
        joined.select(
            added=pl.col(f"{first}_prev").is_null().sum(),
            removed=pl.col(first).is_null().sum(),
            **{f: e.sum() for f, e in differs.items()},
        )
        .collect(engine="streaming")
        .row(0, named=True)
    )
    out = os.path.join(args.dir, "baseline-changes.parquet")
    joined.filter(pl.any_horizontal(*differs.values())).sink_parquet(out)
    dt = time.perf_counter() - t
    return {"seconds": dt, "cpu": _cpu_s() - cpu, "peak_mb": _peak_mb(), "counts": counts}


def run_output(args: argparse.Namespace, with_change: bool) -> dict:
    from shoal.changes import RowLabels
    from shoal.output import Extras, build_output

    storage = Storage(args.dir)
    labels = RowLabels.read(storage, "job_tonight") if with_change else None
    t, cpu = time.perf_counter(), _cpu_s()
    build_output(
        storage,
        part_urls(storage, "job_tonight"),
        storage.url("jobs", "job_tonight", f"out-{int(with_change)}"),
        fmt=args.format,
        gzip=args.format != "parquet",
        fields=FIELDS,
        extras=Extras(change=labels),
    )
    return {"seconds": time.perf_counter() - t, "cpu": _cpu_s() - cpu, "peak_mb": _peak_mb()}


def _child(args: argparse.Namespace, what: str) -> dict:
    cmd = [sys.executable, __file__, "--child", what, "--dir", args.dir, "--key", args.key]
    cmd += ["--format", args.format]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--key", default="url", choices=["url", "sku"])
    ap.add_argument("--dups", type=float, default=0.0, help="share of rows repeating a key")
    ap.add_argument("--format", default="ndjson", choices=["ndjson", "csv", "parquet"])
    ap.add_argument("--dir", default="/tmp/shoal-bench-changes")
    ap.add_argument("--output", action="store_true", help="also time build_output with change")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run = {
            "shoal": run_shoal,
            "baseline": run_baseline,
            "output": lambda a: run_output(a, False),
            "output+change": lambda a: run_output(a, True),
        }[args.child]
        print(json.dumps(run(args)))
        return

    shutil.rmtree(args.dir, ignore_errors=True)
    storage = Storage(args.dir)
    t = time.perf_counter()
    write_run(storage, "job_last", args.rows, 0, args.dups)
    write_run(storage, "job_tonight", args.rows, 1, args.dups)
    print(f"two runs of {args.rows:,} rows written in {time.perf_counter() - t:.1f} s "
          f"(key {args.key}, dups {args.dups:g}, format {args.format})")  # fmt: skip
    kinds = ["shoal", "baseline"] + (["output", "output+change"] if args.output else [])
    got: dict[str, list[dict]] = {k: [] for k in kinds}
    for n in range(args.repeat):
        for kind in kinds if n % 2 == 0 else reversed(kinds):
            r = _child(args, kind)
            got[kind].append(r)
            print(f"  {kind:<14} {r['seconds']:6.2f} s  CPU {r['cpu']:6.2f} s  "
                  f"peak RSS {r['peak_mb']:6.0f} MB")  # fmt: skip
    first = got["shoal"][0]
    print(f"shoal: added/removed/changed/unchanged/duplicate_keys {first['counts']}, "
          f"fields {first['fields']}, changes file {first['changes_rows']:,} rows")  # fmt: skip
    print(f"baseline: {got['baseline'][0]['counts']}")
    med = {
        k: tuple(statistics.median(r[m] for r in v) for m in ("seconds", "cpu", "peak_mb"))
        for k, v in got.items()
    }
    for k, (s, cpu, mb) in med.items():
        print(f"median {k:<14} {s:6.2f} s  CPU {cpu:6.2f} s  peak RSS {mb:6.0f} MB")

    def ratio(a: str, b: str) -> str:
        return ", ".join(
            f"{m} {x / y:.2f}"
            for m, x, y in zip(("time", "CPU", "peak RSS"), med[a], med[b], strict=True)
        )

    print(f"ratio shoal/baseline: {ratio('shoal', 'baseline')}")
    if args.output:
        print(f"ratio output with/without change: {ratio('output+change', 'output')}")


if __name__ == "__main__":
    main()
