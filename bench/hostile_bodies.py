"""Hostile request bodies against the API process: its RSS, CPU and health latency meanwhile.

    .venv/bin/python bench/hostile_bodies.py

Starts the API alone (``uvicorn --factory api.app:create_app``, as ``shoal api`` does; no
Prefect: nothing here starts a job, and ``GET /v1/health`` answers ``503`` at once without
one, which still measures how fast the event loop answers) on a fresh data folder with one
account, then sends, over raw sockets (so nothing on the client side buffers a body):

- item 6: ``POST /v1/jobs`` with a 200 MB body and no key; with a key, 600 MB declared by
  ``Content-Length``, and 600 MB chunked (no length);
- item 8: ``POST /v1/uploads`` of ~1 MB of gzip (``Content-Encoding: gzip``) that inflates to
  1 GiB of newlines (64 gzip members of 16 MiB each);
- the same bomb to an API whose ratio and line limits are off, the client leaving right after
  sending it: the API's CPU in the seconds after shows whether the work stopped.

For each: the answer, the bytes the client got to send before it, the wall time, the API's
CPU seconds (utime+stime from /proc) and RSS peak (sampled every 10 ms) from the request until
1.5 s after the answer, and GET /v1/health latency (polled every 50 ms) meanwhile, against an
idle baseline.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from shoal.settings import Settings  # noqa: E402
from shoal.store import get_store  # noqa: E402
from tests.net import free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
MB = 1024 * 1024
#: each phase is watched this long after its answer: work that goes on shows in its CPU
LINGER_S = 1.5


def _cpu(pid: int) -> float:
    raw = Path(f"/proc/{pid}/stat").read_text()
    f = raw[raw.rindex(")") + 2 :].split()
    return (int(f[11]) + int(f[12])) / TICK


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Watch:
    """RSS peak of ``pid`` and health latencies, sampled in threads while a phase runs."""

    def __init__(self, pid: int, base: str) -> None:
        self.pid, self.base = pid, base
        self.peak = 0
        self.health: list[float] = []
        self._stop = threading.Event()

    def __enter__(self) -> Watch:
        self.peak = _rss(self.pid)
        self.cpu0 = _cpu(self.pid)
        self.t0 = time.perf_counter()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._mem, self._ping)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        self.cpu = _cpu(self.pid) - self.cpu0
        self.wall = time.perf_counter() - self.t0

    def _mem(self) -> None:
        while not self._stop.wait(0.01):
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, _rss(self.pid))

    def _ping(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as c:
            while not self._stop.wait(0.05):
                t = time.perf_counter()
                c.get("/v1/health")
                self.health.append((time.perf_counter() - t) * 1000)

    def line(self) -> str:
        h = sorted(self.health) or [0.0]
        p95 = h[min(len(h) - 1, int(len(h) * 0.95))]
        return (
            f"API cpu {self.cpu:6.2f} s  rss peak {self.peak / MB:6.0f} MB  "
            f"health ms median {statistics.median(h):5.1f} p95 {p95:6.1f} max {h[-1]:6.1f} "
            f"(n={len(self.health)})"
        )


def send(
    port: int,
    path: str,
    headers: dict[str, str],
    chunks: Iterator[bytes],
    *,
    length: int | None,
    leave: bool = False,
) -> tuple[str, int, float]:
    """POST ``chunks`` (``Content-Length: length``, or chunked when None); stops sending as soon
    as an answer arrives. The status line, the body bytes sent, the seconds to the answer."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(60)
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{framing}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    t0 = time.perf_counter()
    sent = 0
    answer = b""
    try:
        s.sendall(head.encode())
        for chunk in chunks:
            if select.select([s], [], [], 0)[0]:
                break  # the server answered (or closed) before the whole body
            s.sendall(chunk if length is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        else:
            if length is None:
                s.sendall(b"0\r\n\r\n")
        if leave:
            s.close()
            return "(client left)", sent, time.perf_counter() - t0
    except OSError:
        pass  # the server closed while we were sending: read its answer, if any
    with contextlib.suppress(OSError):
        while b"\r\n" not in answer:
            data = s.recv(65536)
            if not data:
                break
            answer += data
    s.close()
    status = answer.split(b"\r\n", 1)[0].decode() or "(connection closed, no answer)"
    return status, sent, time.perf_counter() - t0


def zeros(total: int, size: int = MB) -> Iterator[bytes]:
    block = b" " * size
    for _ in range(total // size):
        yield block


def start_api(data: Path, port: int, **env: str) -> subprocess.Popen[bytes]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("SHOAL_", "PREFECT_API"))}
    e.update(SHOAL_DATA_DIR=str(data), SHOAL_SIGNING_SECRET="bench", **env)
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app", "--no-access-log"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(cmd, env=e, cwd=root, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2)
            return proc
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the API did not start")


def main() -> None:
    data = Path(tempfile.mkdtemp()) / "data"
    store = get_store(Settings(data_dir=data, signing_secret="bench"))
    account, _ = store.get_or_create_account("bench")
    key = store.create_key(account.id)
    auth = {"Authorization": f"Bearer {key}"}
    bomb = gzip.compress(b"\n" * (16 * MB), 9) * 64
    a_bomb = gzip.compress(b"a" * (16 * MB), 9) * 64
    print(f"bomb: {len(bomb) / MB:.2f} MB of gzip, 1 GiB of newlines")
    upload_headers = {**auth, "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}

    port = free_port()
    api = start_api(data, port)
    base = f"http://127.0.0.1:{port}"
    try:
        print(f"API pid {api.pid}, idle RSS {_rss(api.pid) / MB:.0f} MB")
        with Watch(api.pid, base) as w:
            time.sleep(2)
        print(f"{'idle 2 s':44} {w.line()}")
        cases = [
            ("item 6: 200 MB JSON, no key", "/v1/jobs", {}, 200 * MB, True),
            ("item 6: 600 MB JSON, key, Content-Length", "/v1/jobs", auth, 600 * MB, True),
            ("item 6: 600 MB JSON, key, chunked", "/v1/jobs", auth, 600 * MB, False),
        ]
        for name, path, headers, size, declared in cases:
            hdrs = {**headers, "Content-Type": "application/json"}
            with Watch(api.pid, base) as w:
                status, sent, took = send(
                    port, path, hdrs, zeros(size), length=size if declared else None
                )
                time.sleep(LINGER_S)  # work going on after the answer shows here
            print(f"{name:44} -> {status} after {sent / MB:.0f} MB sent, {took:.2f} s")
            print(f"{'':44} {w.line()}")
        bombs = [
            ("item 8: 1 MB gzip of 1 GiB newlines", bomb, "application/x-ndjson"),
            ("the same as CSV", bomb, "text/csv"),
            ("1 MB gzip of 1 GiB of 'a' (one line)", a_bomb, "application/x-ndjson"),
        ]
        for name, body, ctype in bombs:
            with Watch(api.pid, base) as w:
                status, sent, took = send(
                    port,
                    "/v1/uploads",
                    {**upload_headers, "Content-Type": ctype},
                    iter([body]),
                    length=len(body),
                )
                time.sleep(LINGER_S)
            print(f"{name:44} -> {status}, {took:.2f} s")
            print(f"{'':44} {w.line()}")
    finally:
        api.terminate()
        api.wait()

    # the client leaving: limits that would stop the bomb turned off, only the disconnect can
    port = free_port()
    api = start_api(
        data, port, SHOAL_MAX_UPLOAD_RATIO="1000000", SHOAL_MAX_UPLOAD_LINES="2000000000"
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with Watch(api.pid, base) as w:
            send(port, "/v1/uploads", upload_headers, iter([bomb]), length=len(bomb), leave=True)
            cpu_at = [(0.0, _cpu(api.pid))]
            for _ in range(10):
                time.sleep(0.5)
                cpu_at.append((cpu_at[-1][0] + 0.5, _cpu(api.pid)))
        print(f"{'item 8, limits off, client leaves at once':44} -> API CPU after it left:")
        steps = "  ".join(f"{t:.1f}s:{c - cpu_at[0][1]:.2f}" for t, c in cpu_at)
        print(f"{'':44} {steps}")
        print(f"{'':44} {w.line()}")
    finally:
        api.terminate()
        api.wait()


if __name__ == "__main__":
    main()
