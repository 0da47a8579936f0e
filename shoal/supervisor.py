"""Supervising the processes of ``shoal up``: restart what dies, leave nothing behind.

A child that exits is restarted after a pause (1 s, doubling to 30 s; back to 1 s once it had
stayed up ``stable_s``), and the restart is said on stdout and in the child's log. Each child
runs in its own process group; a stop (``Supervisor.stop``, or leaving the ``with`` block) stops
them last-started first, each with SIGTERM to its group, SIGKILL after ``grace_s``.

Nothing outlives the supervisor, however it ends:

* Every child asks the kernel for SIGKILL when the supervisor's thread that started it dies
  (``prctl(PR_SET_PDEATHSIG)``, Linux); children are therefore started from one thread, the one
  that runs the supervisor for its whole life.
* That reaches the children, not what they forked (the worker's forkserver and flow runs, a
  multiprocessing resource tracker; Prefect may put flow runs in sessions of their own). So every
  child carries a cookie in its environment (``SHOAL_SUPERVISOR=<token>/<name>``), which every
  process under it inherits (the way Jenkins finds a build's processes), and a small watchdog
  process (``python -m shoal.supervisor --watchdog <token>``, not a child's descendant) waits
  for its stdin pipe from the supervisor to close: when the supervisor is gone, even by SIGKILL,
  it SIGKILLs every process that carries the token.
* When a child dies on its own, what it left running is stopped before it is restarted (the
  processes of its group and those with its cookie: SIGTERM, then SIGKILL after 5 s).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

COOKIE = "SHOAL_SUPERVISOR"
_PR_SET_PDEATHSIG = 1
_LEFTOVER_GRACE_S = 5.0


class Stopped(Exception):
    """A stop was asked (``stop_event``) while waiting for something."""


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()  # loaded before any fork: a child between fork and exec only calls into it


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` making the child receive ``sig`` when this thread of ours dies (Linux;
    ``None`` elsewhere). If we died between fork and prctl, the child ends itself at once."""
    if _LIBC is None:
        return None
    parent = os.getpid()
    prctl = _LIBC.prctl

    def _preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return _preexec


def _signal_name(code: int) -> str:
    if code >= 0:
        return f"exit {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


def carrying(cookie: str) -> list[int]:
    """The live processes whose environment holds ``SHOAL_SUPERVISOR=<cookie>`` exactly, or a
    value starting with ``<cookie>/`` (so a token names every child's processes)."""
    exact = f"{COOKIE}={cookie}".encode()
    prefix = exact + b"/"
    me = os.getpid()
    found: list[int] = []
    if not os.path.isdir("/proc"):  # not Linux: only the process groups are stopped
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:  # gone, or not ours to read
            continue
        if any(v == exact or v.startswith(prefix) for v in env):
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _kill(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a group whose members are all zombies still "exists"; only live ones count
    return any(_alive(p) for p in _group_members(pgid))


def _group_members(pgid: int) -> list[int]:
    out: list[int] = []
    if not os.path.isdir("/proc"):
        return out
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    stat = fh.read()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[2]) == pgid:
                out.append(int(entry))
    return out


def sweep(cookie: str, pgid: int | None = None, grace_s: float = _LEFTOVER_GRACE_S) -> int:
    """Stop every process carrying ``cookie`` (and in group ``pgid``): SIGTERM, then SIGKILL
    what is left after ``grace_s``. How many there were."""
    found = set(carrying(cookie))
    if pgid is not None and _group_alive(pgid):
        found.update(_group_members(pgid))
    if not found:
        return 0
    if pgid is not None:
        _killpg(pgid, signal.SIGTERM)
    _kill(sorted(found), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in found):
            return len(found)
        time.sleep(0.05)
    for _ in range(20):  # SIGKILL until nothing new appears (a dying parent may still fork)
        left = [p for p in set(carrying(cookie)) | found if _alive(p)]
        if pgid is not None:
            _killpg(pgid, signal.SIGKILL)
        if not left:
            break
        _kill(left, signal.SIGKILL)
        found.update(left)
        time.sleep(0.05)
    return len(found)


@dataclass
class Child:
    """One supervised command and its restart state."""

    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    pause: float = 0.0
    restart_at: float | None = None
    restarts: int = 0


@dataclass
class Supervisor:
    """Runs children, restarts them, stops them in order; see the module docstring.

    ``echo`` says what happens (one line each); ``on_change(pids)`` is called with the live
    children's pids (by name) whenever one starts or ends."""

    env: dict[str, str]
    logs: Path
    echo: Callable[[str], None] = print
    on_change: Callable[[dict[str, int]], None] | None = None
    first_pause_s: float = 1.0
    max_pause_s: float = 30.0
    stable_s: float = 60.0
    grace_s: float = 15.0
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    stop_event: threading.Event = field(default_factory=threading.Event)
    children: dict[str, Child] = field(default_factory=dict)
    _watchdog: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Supervisor:
        self.logs.mkdir(parents=True, exist_ok=True)
        self._watchdog = subprocess.Popen(
            [sys.executable, "-m", "shoal.supervisor", "--watchdog", self.token],
            stdin=subprocess.PIPE,
            env={k: v for k, v in self.env.items() if k != COOKIE},
            start_new_session=True,  # a Ctrl-C in the terminal is not for it
        )
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def install_signals(self) -> None:
        """SIGINT and SIGTERM only set ``stop_event`` (an exception raised from a handler can
        land inside ``Popen.poll()`` and leak its lock, after which ``wait()`` blocks forever)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda _s, _f: self.stop_event.set())

    def pids(self) -> dict[str, int]:
        return {n: c.proc.pid for n, c in self.children.items() if c.proc is not None}

    def start(self, name: str, argv: list[str]) -> Child:
        """Start ``argv`` as the child ``name`` now (its output appended to ``logs/name.log``)."""
        child = Child(name, argv, self.logs / f"{name}.log", pause=self.first_pause_s)
        self.children[name] = child
        self._spawn(child)
        return child

    def _spawn(self, child: Child) -> None:
        env = {**self.env, COOKIE: f"{self.token}/{child.name}"}
        with open(child.log, "ab") as out:
            child.proc = subprocess.Popen(
                child.argv,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent(),  # only prctl: safe beside threads
            )
        child.started = time.monotonic()
        child.restart_at = None
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.pids())

    def _say(self, child: Child, line: str) -> None:
        self.echo(line)
        with contextlib.suppress(OSError), open(child.log, "a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} [shoal up] {line}\n")

    def poll(self) -> None:
        """Notice children that exited (stop what they left, schedule their restart) and
        restart those whose pause is over. Call it often, from the supervising thread."""
        now = time.monotonic()
        for child in self.children.values():
            proc = child.proc
            if proc is not None and proc.poll() is not None:
                up_s = now - child.started
                if up_s >= self.stable_s:
                    child.pause = self.first_pause_s
                child.proc = None
                self._changed()
                left = sweep(f"{self.token}/{child.name}", proc.pid)
                extra = f", {left} process(es) it left stopped" if left else ""
                self._say(
                    child,
                    f"{child.name} exited ({_signal_name(proc.returncode)}) after {up_s:.1f} s"
                    f"{extra}; restarting in {child.pause:.0f} s (log: {child.log})",
                )
                child.restart_at = time.monotonic() + child.pause
                child.pause = min(child.pause * 2, self.max_pause_s)
            elif child.proc is None and child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self._spawn(child)
                assert child.proc is not None
                self._say(child, f"{child.name} restarted (pid {child.proc.pid})")

    def wait(
        self, ready: Callable[[], object], every_s: float = 0.25, timeout_s: float | None = None
    ) -> None:
        """Supervise until ``ready()`` is true; ``Stopped`` if a stop is asked first,
        ``TimeoutError`` after ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            if self.stop_event.is_set():
                raise Stopped
            self.poll()
            if ready():
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"not ready within {timeout_s} s")
            self.stop_event.wait(every_s)

    def run(self, every_s: float = 0.25) -> None:
        """Supervise until a stop is asked."""
        while not self.stop_event.wait(every_s):
            self.poll()

    def stop(self) -> None:
        """Stop the children last-started first, each before the next (the worker's shutdown
        still talks to the Prefect server, so that goes last), then the watchdog."""
        for child in reversed(list(self.children.values())):
            proc, child.proc, child.restart_at = child.proc, None, None
            if proc is None:
                continue
            _killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(self.grace_s)
                self.echo(f"{child.name} stopped ({_signal_name(proc.returncode)})")
            except subprocess.TimeoutExpired:
                _killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                self.echo(f"{child.name} killed: it did not stop within {self.grace_s:.0f} s")
            sweep(f"{self.token}/{child.name}", proc.pid)
            self._changed()
        if self._watchdog is not None:
            assert self._watchdog.stdin is not None
            self._watchdog.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._watchdog.wait(15)
            self._watchdog = None


@contextlib.contextmanager
def _ignored(*sigs: int) -> Iterator[None]:
    old = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _watchdog(token: str) -> None:
    """Block until the supervisor's pipe closes, then SIGKILL every process carrying ``token``."""
    with _ignored(signal.SIGINT, signal.SIGHUP):
        while sys.stdin.buffer.read(4096):
            pass
        sweep(token, grace_s=0)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--watchdog"] and len(sys.argv) == 3:
        _watchdog(sys.argv[2])
    else:
        sys.exit("usage: python -m shoal.supervisor --watchdog TOKEN")
