"""Leases on the slots of a host: ``SHOAL_MAX_PER_HOST`` across every job, process and worker.

The job store is the one thing every worker shares (SQLite on one machine, PostgreSQL on many),
so it grants the slots. A *holder* (one fetch engine of one process) asks for ``k`` slots of a
host; one transaction grants ``min(k, cap - slots held by the live leases of others)`` and
writes them as a lease (a ``host_slots`` row) that expires ``lease_s`` later, on the database's
clock. The holder uses its slots through a local semaphore (no round trip per request:
``shoal.fetch._hostcap``), renews all its leases in one statement every few seconds, shrinks a
lease when others wait for the host, and gives it back when idle. A dead holder's slots come
back when its leases expire; whoever grants the host next deletes them.

Safety: growing a lease happens only under the host's lock, so two grants of one host never
both count the same free slots. On PostgreSQL the lock is a transaction-level advisory lock
keyed by the host (released by commit or rollback, so a killed holder never keeps it); on
SQLite the transaction starts with ``BEGIN IMMEDIATE``, the database's one write lock.
Everything else only lowers a lease or extends its life, which needs no lock: a renewal racing
the deletion of the same expired lease either lands first (and the deletion, which re-checks
the row, spares it) or finds the row gone and reports the host lost.

Fairness: a grant never takes a host past its cap. While another holder waits (its ``wanted``
is above 0) nobody grows past the fair share, ``cap // holders that hold or want slots``
(at least 1), and at its next renewal a holder above it shrinks to
``min(fair share, what it used since the last renewal)``. So two jobs on one host end up with
about half each, and one alone gets all of it.

Limits: a host is a name (two names of one address are two hosts, as in the engine); every
worker should have the same ``SHOAL_MAX_PER_HOST`` (each grants with its own); with more
holders wanting one host than its cap, the fair share is 1 and those without a slot wait until
a holder ends or idles (no rotation); a holder stalled past its lease may still have requests
in flight when its slots are granted again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    Table,
    and_,
    bindparam,
    case,
    delete,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError

from ._db import get_engine
from ._tables import HostSlotRow

log = logging.getLogger(__name__)

_T: Table = HostSlotRow.__table__  # type: ignore[assignment]
#: a lease expired this long ago is removed by any holder's renewal (hosts nobody asks for
#: again would keep their dead leases otherwise); younger ones go when their host is granted
_PURGE_AFTER_S = 60.0
_ATTEMPTS = 3  # a deadlock or a busy SQLite is retried this often within one call
_MAX_KEY = 255
#: the database's clock in epoch seconds: every worker reads the same one
_NOW_PG = "extract(epoch from clock_timestamp())"
_NOW_SQLITE = "((julianday('now') - 2440587.5) * 86400.0)"


@dataclass(frozen=True)
class HostGrant:
    """A holder's lease on one host, as the transaction left it."""

    slots: int  # slots the holder holds now (0: none, or the lease was lost)
    fair: int  # cap // holders holding or wanting slots of the host (at least 1)
    others_want: int  # slots other live holders asked for and did not get


def host_key(host: str) -> str:
    """``host`` as stored (a name longer than the column is cut and made unique by a hash)."""
    if len(host) <= _MAX_KEY:
        return host
    return host[:200] + "#" + hashlib.sha256(host.encode()).hexdigest()[:32]


def _parts(keys: list[str], size: int = 500) -> Iterator[list[str]]:
    """``keys`` in slices small enough for one statement's parameters."""
    for i in range(0, len(keys), size):
        yield keys[i : i + size]


def _lock_id(host: str) -> int:
    digest = hashlib.blake2b(b"shoal-host-slots:" + host.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class HostLeases:
    """The host-slot leases of one job store (one instance per database URL is enough)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = get_engine(url)  # migrates a store that lacks the table (_migrate)
        self._pg = self._engine.dialect.name == "postgresql"
        self._long: dict[str, str] = {}  # stored key -> host, for names cut by ``host_key``

    # ------------------------------------------------------------------ transactions
    @contextmanager
    def _transaction(self) -> Iterator[tuple[Connection, float]]:
        """A write transaction and the database's clock (epoch seconds) read inside it."""
        with self._engine.connect() as conn:
            if not self._pg:
                # the write lock first: reads under it never see a stale snapshot
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            now = conn.execute(text(f"SELECT {_NOW_PG if self._pg else _NOW_SQLITE}")).scalar()
            try:
                yield conn, float(now or 0.0)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise

    def _retrying(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        for attempt in range(_ATTEMPTS):
            try:
                return fn(*args, **kwargs)
            except OperationalError:  # deadlock detected (PostgreSQL), database is locked
                if attempt == _ATTEMPTS - 1:
                    raise
                log.info("host slots: transaction failed, retrying", exc_info=True)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ public
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
    ) -> dict[str, HostGrant]:
        """Everything a holder has to say, in one transaction; its leases afterwards.

        ``release``: hosts given back. ``keep``: host -> (slots, wanted) for leases that
        shrink (slots are only ever lowered here) or whose unmet demand changed. ``claim``:
        host -> slots wanted in all; grows (or starts) the lease under the host's lock.
        ``renew``: extend the holder's leases to ``lease_s`` from now (those with less than
        ``min_left_s`` left, default all: a holder checking often rewrites a row only now and
        then) and answer for all of them (a host missing from the answer was lost: its lease
        expired and was taken back). Without ``renew`` the answer covers the claimed hosts."""
        left = lease_s if min_left_s is None else min_left_s
        return self._retrying(
            self._sync, holder, cap, lease_s, claim or {}, keep or {}, release, renew, left
        )

    def release_all(self, holder: str) -> None:
        """Give back every lease of ``holder`` (its engine is closing)."""

        def run() -> None:
            with self._transaction() as (conn, _):
                conn.execute(delete(_T).where(_T.c.holder == holder))

        self._retrying(run)

    def leases(self, host: str) -> dict[str, tuple[int, int]]:
        """The live leases of ``host``: holder -> (slots, wanted) (operators, tests).

        One read, no lock: what some committed state of the store held."""
        now = _NOW_PG if self._pg else _NOW_SQLITE
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(_T.c.holder, _T.c.slots, _T.c.wanted).where(
                    _T.c.host == host_key(host), _T.c.expires_at > text(now)
                )
            ).all()
        return {r.holder: (r.slots, r.wanted) for r in rows}

    # ------------------------------------------------------------------ the transaction
    def _key(self, host: str) -> str:
        key = host_key(host)
        if key is not host:
            if len(self._long) > 10_000:
                self._long.clear()
            self._long[key] = host
        return key

    def _sync(
        self,
        holder: str,
        cap: int,
        lease_s: float,
        claim: Mapping[str, int],
        keep: Mapping[str, tuple[int, int]],
        release: Collection[str],
        renew: bool,
        min_left_s: float,
    ) -> dict[str, HostGrant]:
        out: dict[str, HostGrant] = {}
        with self._transaction() as (conn, now):
            gone = [self._key(h) for h in release]
            for part in _parts(gone):
                conn.execute(delete(_T).where(_T.c.holder == holder, _T.c.host.in_(part)))
            if keep:
                self._keep(conn, holder, {self._key(h): v for h, v in keep.items()})
            wants = {self._key(h): w for h, w in claim.items()}
            for part in _parts(sorted(wants)):
                grants = self._claim(conn, holder, {k: wants[k] for k in part}, cap, lease_s, now)
                out.update((self._long.get(k, k), g) for k, g in grants.items())
            if renew:
                conn.execute(
                    update(_T)
                    .where(_T.c.holder == holder, _T.c.expires_at < now + min_left_s)
                    .values(expires_at=now + lease_s)
                )
                conn.execute(delete(_T).where(_T.c.expires_at < now - _PURGE_AFTER_S))
                held = self._held(conn, holder, cap, now)
                out = {self._long.get(k, k): g for k, g in held.items()}
        return out

    @staticmethod
    def _keep(conn: Connection, holder: str, keep: Mapping[str, tuple[int, int]]) -> None:
        """Lower leases (never raised here) and set their unmet demand; 0 and 0 removes one."""
        gone = [k for k, (slots, wanted) in keep.items() if slots <= 0 and wanted <= 0]
        for part in _parts(gone):
            conn.execute(delete(_T).where(_T.c.holder == holder, _T.c.host.in_(part)))
        rows = [
            {"k": k, "s": max(0, slots), "w": max(0, wanted)}
            for k, (slots, wanted) in keep.items()
            if k not in gone
        ]
        if rows:
            s_new = bindparam("s", type_=Integer)
            conn.execute(
                update(_T)
                .where(_T.c.host == bindparam("k"), _T.c.holder == holder)
                .values(
                    slots=case((_T.c.slots < s_new, _T.c.slots), else_=s_new),
                    wanted=bindparam("w", type_=Integer),
                ),
                rows,
            )

    def _claim(
        self,
        conn: Connection,
        holder: str,
        wants: Mapping[str, int],
        cap: int,
        lease_s: float,
        now: float,
    ) -> dict[str, HostGrant]:
        """Grant ``wants`` (stored key -> slots wanted in all) under the hosts' locks."""
        keys = sorted(wants)
        if self._pg:
            # in one order, whoever asks: two holders claiming the same hosts cannot deadlock
            conn.execute(
                text(
                    "SELECT pg_advisory_xact_lock(k) "
                    "FROM unnest(CAST(:ks AS bigint[])) AS k ORDER BY k"
                ),
                {"ks": sorted({_lock_id(k) for k in keys})},
            )
        # dead holders' slots come back here, under the lock
        conn.execute(delete(_T).where(_T.c.host.in_(keys), _T.c.expires_at <= now))
        rows = conn.execute(
            select(_T.c.host, _T.c.holder, _T.c.slots, _T.c.wanted).where(_T.c.host.in_(keys))
        ).all()
        by_host: dict[str, list[Any]] = {k: [] for k in keys}
        for r in rows:
            by_host[r.host].append(r)
        out: dict[str, HostGrant] = {}
        upserts: list[dict[str, Any]] = []
        empty: list[str] = []
        for key in keys:
            want = wants[key]
            mine = next((r.slots for r in by_host[key] if r.holder == holder), 0)
            others = [r for r in by_host[key] if r.holder != holder]
            taken = sum(r.slots for r in others)
            others_want = sum(r.wanted for r in others)
            fair = max(1, cap // (1 + sum(1 for r in others if r.slots > 0 or r.wanted > 0)))
            grant = max(0, min(want, cap - taken))
            if others_want > 0:  # others wait: grow no further than the fair share
                grant = min(grant, max(fair, mine))
            wanted = max(0, want - grant)
            if grant == 0 and wanted == 0:
                empty.append(key)
            else:
                upserts.append(
                    {
                        "host": key,
                        "holder": holder,
                        "slots": grant,
                        "wanted": wanted,
                        "expires_at": now + lease_s,
                    }  # fmt: skip
                )
            out[key] = HostGrant(grant, fair, others_want)
        if empty:
            conn.execute(delete(_T).where(_T.c.holder == holder, _T.c.host.in_(empty)))
        if upserts:
            stmt = (postgresql if self._pg else sqlite).insert(_T)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[_T.c.host, _T.c.holder],
                    set_={
                        "slots": stmt.excluded.slots,
                        "wanted": stmt.excluded.wanted,
                        "expires_at": stmt.excluded.expires_at,
                    },
                ),
                upserts,
            )
        return out

    @staticmethod
    def _held(conn: Connection, holder: str, cap: int, now: float) -> dict[str, HostGrant]:
        """Every lease of ``holder`` with its host's contention (one query)."""
        mine = _T.alias("mine")
        rows = conn.execute(
            select(mine.c.host, mine.c.slots, _T.c.holder, _T.c.slots, _T.c.wanted)
            .select_from(mine)
            .outerjoin(
                _T,
                and_(_T.c.host == mine.c.host, _T.c.holder != holder, _T.c.expires_at > now),
            )
            .where(mine.c.holder == holder)
        ).all()
        acc: dict[str, list[int]] = {}  # host -> [my slots, contenders, others' wanted]
        for host, my_slots, other, slots, wanted in rows:
            entry = acc.setdefault(host, [my_slots, 1, 0])
            if other is not None and (slots > 0 or wanted > 0):
                entry[1] += 1
                entry[2] += wanted
        return {
            host: HostGrant(my, max(1, cap // contenders), want)
            for host, (my, contenders, want) in acc.items()
        }
