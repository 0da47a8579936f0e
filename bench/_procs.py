"""Process accounting from ``/proc`` for benchmarks: CPU of process trees and sampled RSS peaks.

``tree_cpu(root)`` is utime+stime+cutime+cstime of every live process in ``root``'s tree, so a
child that exited and was reaped inside the tree still counts (in its parent's cutime/cstime).
``Sampler`` walks the descendants of some roots every ``interval`` seconds in a thread and keeps,
per root, the peak of the summed RSS and of the summed PSS of its descendants (the root itself
excluded; PSS shares the pages a fork shares with its parent, RSS counts them in each) and, per
descendant, a timeline of its own CPU seconds and its ``VmHWM`` (kernel-kept peak RSS).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Proc:
    pid: int
    ppid: int
    cpu_self: float  # utime + stime, seconds
    cpu_tree: float  # + cutime + cstime (reaped children)
    rss: int  # bytes
    cmd: str


def table() -> dict[int, Proc]:
    """Every live process."""
    out: dict[int, Proc] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = Path(f"/proc/{entry}/stat").read_text()
            cmd = raw[raw.index("(") + 1 : raw.rindex(")")]
            f = raw[raw.rindex(")") + 2 :].split()
            # f[0] is field 3 (state): utime..cstime are fields 14..17, rss is field 24
            ut, st, cut, cst = (int(x) / TICK for x in f[11:15])
            pid = int(entry)
            out[pid] = Proc(pid, int(f[1]), ut + st, ut + st + cut + cst, int(f[21]) * PAGE, cmd)
    return out


def descendants(procs: dict[int, Proc], root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for p in procs.values():
        kids.setdefault(p.ppid, []).append(p.pid)
    out, todo = [], list(kids.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def tree_cpu(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named tree (live processes + reaped children)."""
    procs = table()
    res = {}
    for name, root in roots.items():
        pids = [root, *descendants(procs, root)] if root in procs else []
        res[name] = sum(procs[p].cpu_tree for p in pids)
    return res


def system_busy() -> float:
    """CPU seconds all cores spent busy since boot (every process on the machine)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICK


def vm_hwm(pid: int) -> int:
    """Peak RSS of one live process in bytes (0 if gone)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def pss(pid: int) -> int:
    """Proportional set size of one live process in bytes (0 if gone): pages shared with other
    processes (a fork and its parent) count a share each, so a sum over processes is fair."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class Track:
    """One descendant seen by the sampler."""

    pid: int
    cmd: str
    first: float
    samples: list[tuple[float, float]] = field(default_factory=list)  # (time, cpu_self)
    hwm: int = 0

    def cpu_between(self, t0: float, t1: float) -> tuple[float, float]:
        """(CPU seconds, wall seconds) between the samples closest inside [t0, t1]."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            return 0.0, 0.0
        return inside[-1][1] - inside[0][1], inside[-1][0] - inside[0][0]


class Sampler(threading.Thread):
    """Samples the descendants of ``roots`` (name -> pid) every ``interval`` s until stopped."""

    def __init__(self, roots: dict[str, int], interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.roots, self.interval = roots, interval
        self.lock = threading.Lock()
        self.peak: dict[str, int] = dict.fromkeys(roots, 0)  # summed RSS of descendants
        self.peak_pss: dict[str, int] = dict.fromkeys(roots, 0)  # summed PSS of descendants
        self.tracks: dict[int, Track] = {}
        self._halt = threading.Event()

    def reset_peaks(self) -> None:
        with self.lock:
            self.peak = dict.fromkeys(self.roots, 0)
            self.peak_pss = dict.fromkeys(self.roots, 0)

    def run(self) -> None:
        while not self._halt.is_set():
            now = time.time()
            procs = table()
            with self.lock:
                for name, root in self.roots.items():
                    pids = descendants(procs, root)
                    self.peak[name] = max(self.peak[name], sum(procs[p].rss for p in pids))
                    self.peak_pss[name] = max(self.peak_pss[name], sum(pss(p) for p in pids))
                    for p in pids:
                        tr = self.tracks.get(p)
                        if tr is None:
                            tr = self.tracks[p] = Track(p, procs[p].cmd, now)
                        tr.samples.append((now, procs[p].cpu_self))
                        tr.hwm = max(tr.hwm, vm_hwm(p))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def new_since(self, t: float) -> list[Track]:
        with self.lock:
            return [tr for tr in self.tracks.values() if tr.first >= t]


def every(seconds: float, line: Callable[[Any], str]) -> Callable[[Any], None]:
    """A callback printing ``line(x)`` at most once per ``seconds`` (progress while polling)."""
    last = time.monotonic()

    def tick(x: Any) -> None:
        nonlocal last
        if time.monotonic() - last > seconds:
            last = time.monotonic()
            print(line(x), flush=True)

    return tick
