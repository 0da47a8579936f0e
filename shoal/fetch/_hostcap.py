"""``SHOAL_MAX_PER_HOST`` across processes and workers: leased host slots behind local gates.

The job store grants slots of a host as leases (``shoal.store.HostLeases``); this is the
engine's side of it. Requests to a host wait on the host's ``_Gate``, a semaphore sized to the
slots granted, so a request costs a few attribute operations and never a round trip. One
background task per engine talks to the store, one transaction at a time, each carrying
everything due (so requests to many new hosts share a transaction):

- a gate whose requests want more than it has *claims* ``min(job's host cap, 2 x demand)``,
  retrying with back-off (0.1 s doubling up to half the check interval) while the host is full;
- every ``check_s`` (``min(1 s, lease_s / 5)``) it *checks*: one statement renews the leases
  that have used a fifth of their life (so a row is rewritten every ``lease_s / 5``, not every
  check), one query tells which of its hosts others are waiting for; on those it shrinks to
  ``min(fair share, what it used since the last check)`` (slots in use are given back as their
  requests end), so a newcomer gets its share within about a second; a host unused for
  ``lease_s / 5`` is *released*;
- if checks fail until the leases may have expired (the database is down or this loop was
  stalled), the gates close until a check succeeds: others may have been granted the slots.

The engine stays alone on its fast path when nobody else wants its hosts: one claim per new
host (two while its demand ramps up) and one check a second, whatever the number of requests.
Measured with ``bench/host_cap.py`` (20,000 pages of 44 KB from nginx on 127.0.0.1, C=64, two
cores shared with other work, so wall-clock ratios swung +-20 % from run to run, both ways;
SQLite and PostgreSQL stores alike):

- the gate itself costs 0.4-0.8 us a request (a request through ``Engine._in_shared_slot``
  with the rest stubbed out, against the stub alone), against 130-200 us of CPU a request;
- one process alone: 0.30 store transactions per 1,000 requests; the lowest CPU per request
  with and without the cap within -8..+25 us of each other across runs (noise, both ways);
  pages/s 0.95-1.00 in the last runs;
- two processes sharing a host: 1.0 transactions per 1,000 requests, +5 us of CPU a request;
  pages/s 0.78-0.94 of two processes capped at C/2 each: the first to claim holds every slot
  until its next check (up to a second), and one process alone uses one core;
- 1,000 hosts in a shuffled list (each host claimed once, claims batched): 9-11 transactions
  per 1,000 requests and +40..66 us of CPU a request (the store thread's SQLAlchemy work),
  against ~450-550 us a request for the fetch itself (a new connection to each host).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
from collections import deque
from collections.abc import Collection, Mapping
from typing import Protocol

log = logging.getLogger(__name__)

#: first wait before a claim that got nothing (or less than asked) is made again; it doubles up
#: to the renewal interval while the host stays full
_RETRY_FIRST_S = 0.1


class HostGrantLike(Protocol):
    @property
    def slots(self) -> int: ...
    @property
    def fair(self) -> int: ...
    @property
    def others_want(self) -> int: ...


class HostLeaseBackend(Protocol):
    """What the engine needs of the job store (``shoal.store.HostLeases``)."""

    def sync(
        self,
        holder: str,
        *,
        cap: int,
        lease_s: float,
        claim: Mapping[str, int] | None = None,
        keep: Mapping[str, tuple[int, int]] | None = None,
        release: Collection[str] = (),
        renew: bool = False,
        min_left_s: float | None = None,
    ) -> Mapping[str, HostGrantLike]: ...

    def release_all(self, holder: str) -> None: ...


class _Gate:
    """One host's local semaphore, sized to the slots this engine holds (``limit``)."""

    __slots__ = (
        "limit",
        "held",
        "in_use",
        "waiters",
        "peak",
        "idle",
        "wanted",
        "retry_at",
        "backoff",
    )

    def __init__(self) -> None:
        self.limit = 0  # requests may use this many slots now (at most ``held``)
        self.held = 0  # slots of the lease in the store (above ``limit`` while shrinking)
        self.in_use = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.peak = 0  # most requests in use or waiting since the last check
        self.idle = 0  # checks in a row that found it unused
        self.wanted = 0  # unmet demand as the store knows it
        self.retry_at = 0.0  # loop time before which the next claim is not made
        self.backoff = 0.0


class SharedHostCap:
    """The slots this engine holds of each host, leased from the job store (see module doc).

    ``cap`` is ``SHOAL_MAX_PER_HOST`` (across every holder); ``local_cap`` the engine's own
    per-host cap (never claimed past). ``transactions`` counts store transactions."""

    def __init__(
        self,
        backend: HostLeaseBackend,
        *,
        cap: int,
        local_cap: int,
        lease_s: float,
        holder: str | None = None,
    ) -> None:
        if lease_s <= 0:
            raise ValueError("lease_s must be > 0")
        self.backend = backend
        self.cap = max(1, cap)
        self.local_cap = max(1, min(local_cap, self.cap))
        self.lease_s = lease_s
        self.refresh_s = lease_s / 5  # a lease is rewritten when it has lived this long
        self.check_s = min(1.0, self.refresh_s)
        # a full host frees slots at the holders' checks: look twice per interval
        self.retry_max_s = self.check_s / 2
        self._idle_checks = max(1, round(self.refresh_s / self.check_s))
        self.holder = holder or (
            f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"
        )
        self.gates: dict[str, _Gate] = {}
        self.transactions = 0
        self.failures = 0
        self._dirty: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._valid_until = -math.inf  # loop time until which every lease surely lives
        self._expiry: asyncio.TimerHandle | None = None
        self._suspended = False
        self._next_check = -math.inf  # due at once: the first transaction checks
        self._synced = False

    # ------------------------------------------------------------------ the request path
    def gate(self, host: str) -> _Gate:
        g = self.gates.get(host)
        if g is None:
            g = self.gates[host] = _Gate()
        return g

    async def wait(self, host: str, gate: _Gate) -> None:
        """Wait for a slot of ``gate`` (the caller found none free, or others waiting)."""
        fut = asyncio.get_running_loop().create_future()
        gate.waiters.append(fut)
        demand = gate.in_use + len(gate.waiters)
        if demand > gate.peak:
            gate.peak = demand
        if gate.in_use < gate.limit:
            self._hand_off(gate)  # a slot is free: the first waiter gets it
        if (
            not fut.done()
            and host not in self._dirty  # else the store is asked already (or after a back-off)
            and gate.limit < self.local_cap  # else more cannot be asked for
            and gate.held <= gate.limit  # else shrinking: asked again once drained
        ):
            self._kick(host)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed a slot as we were cancelled
                self.leave(host, gate)
            else:
                with contextlib.suppress(ValueError):
                    gate.waiters.remove(fut)
            raise

    def leave(self, host: str, gate: _Gate) -> None:
        gate.in_use -= 1
        if gate.waiters and gate.in_use < gate.limit:
            self._hand_off(gate)
        elif gate.held > gate.limit and gate.in_use <= gate.limit:
            self._kick(host)  # shrinking, and now drained: give the slots back

    @staticmethod
    def _hand_off(gate: _Gate) -> None:
        while gate.waiters and gate.in_use < gate.limit:
            fut = gate.waiters.popleft()
            if not fut.done():
                gate.in_use += 1
                fut.set_result(None)

    # ------------------------------------------------------------------ lifecycle
    async def aclose(self) -> None:
        """Stop talking to the store and give every lease back."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._expiry is not None:
            self._expiry.cancel()
        if self._synced:
            try:
                await asyncio.to_thread(self.backend.release_all, self.holder)
                self.transactions += 1
            except Exception:  # they expire by themselves
                log.warning("could not release host-slot leases of %s", self.holder, exc_info=True)
        for g in self.gates.values():
            g.limit = g.held = 0
        self.gates.clear()

    def _kick(self, host: str) -> None:
        self._dirty.add(host)
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        assert self._wake is not None
        self._wake.set()

    # ------------------------------------------------------------------ the store
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while True:
            try:
                await self._step(loop)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the book-keeping die: requests would wait forever
                log.exception("host slots: unexpected error")
                await asyncio.sleep(self.retry_max_s)
            wait = self._next_check - loop.time() if self.gates else math.inf
            now = loop.time()
            for host in self._dirty:
                g = self.gates.get(host)
                if g is not None:
                    wait = min(wait, g.retry_at - now)
            if wait > 0:
                self._wake.clear()
                try:
                    async with asyncio.timeout(None if wait == math.inf else wait):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    async def _step(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        renew = bool(self.gates) and now >= self._next_check
        claim, keep, release = self._plan(now, renew)
        if not (claim or keep or release or renew):
            return
        if claim and self._valid_until < now:
            renew = True  # a first claim (or one after a quiet time) renews: the clock starts
        sent = loop.time()
        self.transactions += 1
        self._synced = True
        try:
            answer = await asyncio.to_thread(
                self.backend.sync,
                self.holder,
                cap=self.cap,
                lease_s=self.lease_s,
                claim=claim,
                keep=keep,
                release=release,
                renew=renew,
                min_left_s=self.lease_s - self.refresh_s,
            )
        except Exception:
            self.failures += 1
            log.warning("host slots: the job store failed; retrying", exc_info=True)
            retry = loop.time() + min(1.0, self.retry_max_s)
            for host in (*claim, *keep):
                self._dirty.add(host)
                g = self.gates.get(host)
                if g is not None:
                    g.retry_at = retry
            if renew:
                self._next_check = retry
            return
        self._apply(answer, claim, keep, renew, sent, loop)

    def _plan(
        self, now: float, renew: bool
    ) -> tuple[dict[str, int], dict[str, tuple[int, int]], list[str]]:
        claim: dict[str, int] = {}
        keep: dict[str, tuple[int, int]] = {}
        release: list[str] = []
        hosts = list(self.gates) if renew else list(self._dirty)
        self._dirty = set()
        for host in hosts:
            g = self.gates.get(host)
            if g is None:
                continue
            demand = g.in_use + len(g.waiters)
            if self._suspended:  # nothing but the renewal until it gets through
                if demand:
                    g.retry_at = max(g.retry_at, self._next_check)
                    self._dirty.add(host)
                continue
            if g.held > g.limit:  # shrinking: give back what is no longer in use
                slots = max(g.limit, g.in_use)
                if slots < g.held:
                    keep[host] = (slots, 0)
            elif demand > g.limit and g.limit < self.local_cap:
                if g.retry_at <= now:
                    claim[host] = min(self.local_cap, 2 * demand)
                else:
                    self._dirty.add(host)
            elif renew and demand == 0 and g.peak == 0 and g.idle >= self._idle_checks:
                release.append(host)  # unused for ``refresh_s``: let go
                del self.gates[host]
            elif renew and g.wanted and demand <= g.limit:
                keep[host] = (g.held, 0)  # satisfied now: others need not shrink for us
        return claim, keep, release

    def _apply(
        self,
        answer: Mapping[str, HostGrantLike],
        claim: Mapping[str, int],
        keep: Mapping[str, tuple[int, int]],
        renew: bool,
        sent: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        now = loop.time()
        for host, (slots, wanted) in keep.items():
            g = self.gates.get(host)
            if g is not None:
                g.held, g.wanted = min(g.held, slots), wanted
                if g.in_use + len(g.waiters) > g.limit:
                    self._dirty.add(host)  # shrunk with requests waiting: ask again later
        for host, want in claim.items():
            g = self.gates.get(host)
            if g is None:
                continue
            got = answer[host].slots if host in answer else 0
            if got > g.held:
                g.backoff = 0.0
            else:
                g.backoff = min(max(2 * g.backoff, _RETRY_FIRST_S), self.retry_max_s)
            g.retry_at = now + g.backoff
            g.held = g.limit = got
            g.wanted = max(0, want - got)
            self._hand_off(g)
            if g.in_use + len(g.waiters) > g.limit:
                self._dirty.add(host)
        if not renew:
            return
        self._next_check = sent + self.check_s
        # every lease has at least this much life left on the store's side
        self._set_valid_until(sent + self.lease_s - self.refresh_s, loop)
        resumed, self._suspended = self._suspended, False
        for host, g in self.gates.items():
            grant = answer.get(host)
            if grant is None:
                if g.held > 0:
                    log.warning("host slots: lease on %s was lost (expired); claiming again", host)
                g.held = g.limit = g.wanted = 0
                if g.waiters or g.in_use:
                    self._dirty.add(host)
                continue
            g.held = grant.slots
            if resumed or g.limit > g.held:
                g.limit = g.held
            if grant.others_want > 0:  # others wait for this host: keep the fair share at most
                target = min(g.held, g.peak, grant.fair)
                if target < g.limit:
                    g.limit = target
                    self._dirty.add(host)
            g.idle = g.idle + 1 if g.peak == 0 else 0
            g.peak = g.in_use + len(g.waiters)
            self._hand_off(g)

    def _set_valid_until(self, when: float, loop: asyncio.AbstractEventLoop) -> None:
        self._valid_until = when
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = loop.call_at(when, self._expired)

    def _expired(self) -> None:
        """No renewal got through for a whole lease: others may hold our slots by now."""
        self._expiry = None
        if not any(g.held for g in self.gates.values()):
            return
        log.warning("host slots: leases of %s may have expired; waiting to renew", self.holder)
        self._suspended = True
        for g in self.gates.values():
            g.limit = 0
        self._next_check = min(self._next_check, asyncio.get_running_loop().time())
        if self._wake is not None:
            self._wake.set()
