"""The inbox side of the spool: leases and their ends, dead letters, peeking, stats, upkeep.

Theory of operation
===================

``inbox``   messages delivered to this node, keyed ``(channel, priority, id)``
            *without rowid*, so the table itself is in lease order: a lease
            reads the first rows of its channel and changes them in place.
            ``lease_until`` is 0 for a ready message and the lease deadline
            (ms) for a leased one; a lease whose deadline has passed is ready
            again. ``attempts`` counts leases; the lease token is
            ``(key, attempts)``, so a stale lease can never ack a newer one.
``delayed`` messages not ready before ``due`` (sent with a delay, or nacked
            with one), keyed ``(channel, due, id)``. A lease first moves the
            due rows of its channel into ``inbox``.
``dead``    dead letters with ``reason`` and ``detail``; ``peer`` is set when
            the message died on its way out.

States of a message and the moves between them (each move is one function
below, written once)::

    send ──▶ inbox(ready) ──lease──▶ inbox(leased) ──ack──▶ (gone)
      │          ▲   ▲                 │ │ └─expiry─▶ ready (attempt counted)
      │          │   └───nack(0)───────┘ └─nack(d)──▶ delayed
      └─delay──▶ delayed ──due──▶ ready     attempts used up / ttl ─▶ dead

Leases come back as whatever ``make_lease`` builds from the row: the store
does not know the ``Lease`` class above it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from .. import _bell
from ..errors import LeaseExpired, LeaseLost, NotFound
from ..message import DeadLetter, Message, _ms_of, decode_headers, id_bytes, id_text_from_bytes
from . import sql
from .db import Database
from .events import TraceSetting, record
from .events import detail as event_detail
from .events import runs as event_runs
from .names import JobNumbers, Names

__all__ = ["Inbox", "LeaseKey", "ChannelStats", "PeerStats", "Stats", "Rollback"]

L = TypeVar("L")
MakeLease = Callable[..., Any]


class LeaseKey(Protocol):
    """What the store needs of a lease to end it: its key and token, and names for error messages."""

    @property
    def key(self) -> tuple[int, int, bytes, int]: ...  # (channel id, priority, id, attempts)

    @property
    def id(self) -> str: ...

    @property
    def channel(self) -> str: ...


class Rollback(Exception):
    """Raised inside a transaction to undo it."""


@dataclass(frozen=True, slots=True)
class ChannelStats:
    """Counts for one channel. ``oldest_age``: seconds since the oldest ready or leased message was created."""

    ready: int = 0
    delayed: int = 0
    leased: int = 0
    dead: int = 0
    oldest_age: float | None = None
    urgent: int = 0  # ready with priority < 1024 (beanstalkd's "urgent")
    held: int = 0  # in the hold queue (spool.admin.hold), neither leased nor forwarded


@dataclass(frozen=True, slots=True)
class PeerStats:
    """Outbox of one peer: messages waiting, of which in flight, and the oldest's age in seconds."""

    outbox: int = 0
    in_flight: int = 0
    dead: int = 0
    oldest_age: float | None = None
    held: int = 0  # on their way to this peer, but in the hold queue


@dataclass(frozen=True, slots=True)
class Stats:
    channels: dict[str, ChannelStats] = field(default_factory=dict)
    peers: dict[str, PeerStats] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "channels": {k: _fields(v) for k, v in self.channels.items()},
            "peers": {k: _fields(v) for k, v in self.peers.items()},
        }


def _fields(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


def _max(a: Any, b: Any) -> Any:
    return a if a > b else b


# -- state transitions, each written once -----------------------------------------------------


def promote_due(conn: sqlite3.Connection, ch: int, now: int) -> int:
    """Move the delayed messages of channel ``ch`` whose time has come to ready; returns how many."""
    n: int = conn.execute(sql.PROMOTE_DUE, (ch, now)).rowcount
    conn.execute(sql.PROMOTE_DUE_DELETE, (ch, now))
    return n


def promote_one(conn: sqlite3.Connection, ch: int, due: int, idb: bytes) -> None:
    """Make one delayed message ready now."""
    conn.execute(sql.PROMOTE_ONE, (ch, due, idb))
    conn.execute(sql.DELAYED_DELETE, (ch, due, idb))


def inbox_to_dead(conn: sqlite3.Connection, ch: int, pri: int, idb: bytes, reason: str, detail: str, now: int,
                  trace: bool = False, priority: int | None = None) -> None:
    conn.execute(sql.INBOX_TO_DEAD, (reason, detail, now, ch, pri, idb))
    if priority is not None and priority != pri:  # before any other insert: it names last_insert_rowid()
        conn.execute(sql.DEAD_SET_PRIORITY, (priority,))
    conn.execute(sql.INBOX_DELETE, (ch, pri, idb))
    if trace:
        record(conn, [idb, now, "dead", event_detail(reason=reason, detail=detail)])


def restore_dead(conn: sqlite3.Connection, seq: int, jobs: JobNumbers) -> tuple[int, int]:
    """Move dead letter ``seq`` (of a channel) back to ready, keeping its job and priority.

    Returns the channel id and the job number."""
    idb, ch, pri, job, body, hdrs, origin, deliver_at = conn.execute(sql.DEAD_ONE, (seq,)).fetchone()
    if job is None:
        job = jobs.alloc(conn, 1)
    conn.execute(sql.RESTORE_TO_INBOX, (ch, pri, idb, job, body, hdrs, origin, deliver_at))
    conn.execute(sql.DEAD_DELETE, (seq,))
    return ch, job


def dead_if_spent(conn: sqlite3.Connection, ch: int, row: Sequence[Any], now: int, max_attempts: int,
                  trace: bool = False) -> bool:
    """Dead-letter a ready row (a ``LEASE_SELECT`` row) whose TTL passed or whose attempts are used up."""
    pri, idb, attempts, expires = row[0], row[1], row[2], row[6]
    if expires is not None and expires <= now:
        inbox_to_dead(conn, ch, pri, idb, "expired", "ttl passed before delivery", now, trace)
        return True
    if attempts >= max_attempts:
        inbox_to_dead(conn, ch, pri, idb, "max_attempts", f"leased {attempts} times without an ack", now, trace)
        return True
    return False


def expired_leases(conn: sqlite3.Connection, ch: int, rows: Sequence[Sequence[Any]], now: int) -> list[Any]:
    """Events for ready rows (``LEASE_SELECT`` rows) that are ready because their last lease ran out:
    a row leased before whose ``lease_until`` is set (an ack, nack or release would have cleared it)."""
    ev: list[Any] = []
    for r in rows:
        if r[2]:  # leased before: ready again by expiry, or by a nack/release (lease_until 0)
            st = conn.execute(sql.LEASE_STATE, (ch, r[0], r[1])).fetchone()
            if st is not None and st[1] > 0:
                ev += (r[1], st[1], "lease_expired", f'{{"attempt":{int(r[2])}}}')
    return ev


def next_due(conn: sqlite3.Connection, ch: int, now: int) -> int | None:
    """When something in channel ``ch`` may become ready: a delayed message or an expiring lease (ms)."""
    nxt = None
    row = conn.execute(sql.NEXT_DELAYED, (ch,)).fetchone()
    if row is not None:
        nxt = row[0]
    row = conn.execute(sql.NEXT_LEASE_END, (ch, now)).fetchone()
    if row is not None and row[0] is not None:
        nxt = row[0] if nxt is None else min(nxt, row[0])
    return nxt


def _idle(conn: sqlite3.Connection, ch: int, now: int) -> tuple[bool, int | None]:
    """Whether a lease of channel ``ch`` has nothing to do at ``now``; if so, also :func:`next_due`."""
    if conn.execute(sql.READY_OR_DUE, (ch, now)).fetchone()[0]:
        return False, None
    return True, next_due(conn, ch, now)


class Inbox:
    """Leasing, finishing leases, dead letters and upkeep for one spool object."""

    def __init__(self, db: Database, names: Names, jobs: JobNumbers, bells: _bell.Bells,
                 clock: Callable[[], float], make_lease: MakeLease, seen_retention_ms: int,
                 tracing: TraceSetting | None = None) -> None:
        self.db = db
        self.tracing = tracing or TraceSetting(None, False)
        self.names = names
        self.jobs = jobs
        self.bells = bells
        self.clock = clock
        self.make_lease = make_lease
        self.seen_retention_ms = seen_retention_ms


    @property
    def trace(self) -> bool:
        """Whether to write events (store/events.py): the spool's setting, re-read now and then."""
        return self.tracing.on

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- leasing ------------------------------------------------------------------------------

    def lease_once(self, ch: int, channel: str, n: int, vis_ms: int) -> tuple[list[Any], int | None]:
        """Lease up to ``n`` ready messages of channel ``ch``; with none, also say when to look again (ms)."""
        max_attempts = self.names.max_attempts(ch)
        make = self.make_lease
        self.tracing.refresh()
        trace = self.tracing.on
        if n == 1 and not trace:  # the common case in one statement, no BEGIN/COMMIT round trips
            now = self.now_ms()
            until = now + vis_ms
            got = self.db.fetch_write(self.db.move, sql.LEASE_ONE, (until, ch, now, max_attempts))
            if got:
                pri, idb, attempts, job, body, hdrs, expires, origin, deliver_at = got[0]
                return [make(ch, channel, pri, idb, attempts, job, body, hdrs, expires, origin, deliver_at,
                             until)], None
            # Nothing leased: usually nothing is ready. Say so from a read, without a second write
            # transaction (each takes the spool's write lock from the senders and the receiver, issue 15);
            # a row that is spent or a due delayed message still takes the general path below.
            idle, nxt = self.db.read(lambda c: _idle(c, ch, now))
            if idle:
                return [], nxt

        def lease(conn: sqlite3.Connection) -> tuple[list[Any], int | None]:
            now = self.now_ms()
            row = conn.execute(sql.NEXT_DELAYED, (ch,)).fetchone()
            if row is not None and row[0] <= now:
                promote_due(conn, ch, now)
            until = now + vis_ms
            leases: list[Any] = []
            while True:
                rows = conn.execute(sql.LEASE_SELECT, (ch, now, n - len(leases))).fetchall()
                if not rows:
                    break
                if trace:
                    record(conn, expired_leases(conn, ch, rows, now))
                dead = False
                for r in rows:
                    if dead_if_spent(conn, ch, r, now, max_attempts, trace):
                        dead = True
                        continue
                    pri, idb, attempts, job, body, hdrs, expires, origin, deliver_at = r
                    leases.append(make(ch, channel, pri, idb, attempts + 1, job, body, hdrs, expires, origin,
                                       deliver_at, until))
                if not dead or len(leases) >= n:
                    break
            if len(leases) == 1:
                x = leases[0]
                conn.execute(sql.LEASE_UPDATE, (until, ch, x.priority, x.key[2]))
            elif leases:
                # ids as bytearray: a bytes parameter costs an adapter lookup (see commit.py, issue 15)
                conn.executemany(sql.LEASE_UPDATE, [(until, ch, x.priority, bytearray(x.key[2])) for x in leases])
            if trace and leases:
                ev: list[Any] = []
                blocks: list[tuple[str, tuple[Any, ...]]] = []
                by_attempt: dict[int, list[bytes]] = {}
                for x in leases:
                    by_attempt.setdefault(x.key[3], []).append(x.key[2])
                for attempt, ids in by_attempt.items():  # many ids: one row per run (events.runs)
                    event_runs(ids, now, "leased", f'{{"until":{until / 1000.0},"attempt":{attempt}}}', ev, blocks)
                record(conn, ev, blocks)
            return leases, (None if leases else next_due(conn, ch, now))

        return self.db.txn(self.db.move, lease)

    # -- ending leases ------------------------------------------------------------------------

    def lease_error(self, conn: sqlite3.Connection, lease: LeaseKey, now: int) -> LeaseExpired | LeaseLost:
        ch, pri, idb, attempts = lease.key
        row = conn.execute(sql.LEASE_STATE, (ch, pri, idb)).fetchone()
        if row is not None and row[0] == attempts and row[1] <= now:
            return LeaseExpired(
                f"the lease on message {lease.id} in {lease.channel!r} expired; the message is ready again",
                hint="raise visibility, or call lease.touch() while processing",
            )
        return LeaseLost(
            f"message {lease.id} in {lease.channel!r} is not leased by this lease any more "
            "(acked, nacked, re-leased after expiry, or removed)",
            hint="the message was or will be delivered again; make processing idempotent",
        )

    def _check_held(self, conn: sqlite3.Connection, lease: LeaseKey, now: int) -> None:
        ch, pri, idb, attempts = lease.key
        row = conn.execute(sql.LEASE_STATE, (ch, pri, idb)).fetchone()
        if row is None or row[0] != attempts or row[1] <= now:
            raise self.lease_error(conn, lease, now)

    def ack(self, lease: LeaseKey) -> None:
        now = self.now_ms()
        if self.trace:
            def ack(conn: sqlite3.Connection) -> bool:
                if conn.execute(sql.ACK, (*lease.key, now)).rowcount != 1:
                    return False
                record(conn, [lease.key[2], now, "acked", "{}"])
                return True

            if self.db.txn(self.db.move, ack):
                return
        elif self.db.execute_write(self.db.move, sql.ACK, (*lease.key, now)) == 1:
            return
        raise self.db.read(lambda c: self.lease_error(c, lease, now))

    def ack_many(self, leases: Sequence[LeaseKey]) -> None:
        now = self.now_ms()

        def ack(conn: sqlite3.Connection) -> None:
            before = conn.total_changes
            # ids as bytearray: a bytes parameter costs an adapter lookup (see commit.py, issue 15)
            conn.executemany(sql.ACK, [(ch, pri, bytearray(idb), attempts, now)
                                       for ch, pri, idb, attempts in (x.key for x in leases)])
            if conn.total_changes - before != len(leases):
                raise Rollback()  # some lease is not held: undo the others too
            if self.trace:
                ev: list[Any] = []
                blocks: list[tuple[str, tuple[Any, ...]]] = []
                event_runs([x.key[2] for x in leases], now, "acked", "{}", ev, blocks)  # one row per run
                record(conn, ev, blocks)

        try:
            self.db.txn(self.db.move, ack)
        except Rollback:
            def diagnose(c: sqlite3.Connection) -> LeaseExpired | LeaseLost:
                seen: set[tuple[int, int, bytes]] = set()
                for x in leases:
                    ch, pri, idb, attempts = x.key
                    row = c.execute(sql.LEASE_STATE, (ch, pri, idb)).fetchone()
                    if (ch, pri, idb) in seen or row is None or row[0] != attempts or row[1] <= now:
                        return self.lease_error(c, x, now)
                    seen.add((ch, pri, idb))
                return LeaseLost("some leases could not be acked", hint="retry ack_many")

            raise self.db.read(diagnose) from None

    def forward(self, lease: LeaseKey, peers: Sequence[int], names: Sequence[str]) -> None:
        """Hand a leased message on to ``peers`` (outbox rows with the same id) and ack it, in one
        transaction: a relay node passes messages along under their end-to-end id."""
        now = self.now_ms()
        ch, pri, idb, attempts = lease.key

        def forward(conn: sqlite3.Connection) -> bool:
            for p in peers:
                conn.execute(sql.LEASED_TO_OUTBOX, (p, ch, pri, idb, attempts, now))
            if conn.execute(sql.ACK, (*lease.key, now)).rowcount != 1:
                raise Rollback()
            if self.trace:
                ev: list[Any] = []
                for name in names:
                    ev += (idb, now, "relayed", event_detail(to=name))
                record(conn, ev)
            return True

        try:
            self.db.txn(self.db.move, forward)
        except Rollback:
            raise self.db.read(lambda c: self.lease_error(c, lease, now)) from None
        self.bells.ring(_bell.OUTBOX)

    def release(self, leases: Sequence[LeaseKey]) -> int:
        """Give held leases back uncounted (ready at once, attempts as before); returns how many were
        still held. One transaction; leases no longer held are skipped."""

        def release(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany(sql.RELEASE_UNCOUNTED, [x.key for x in leases])
            return conn.total_changes - before

        n = self.db.txn(self.db.move, release)
        if n:
            for channel in {x.channel for x in leases}:
                self.bells.ring(_bell.channel_bell(channel))
        return n

    def touch(self, lease: LeaseKey, vis_ms: int) -> int:
        """Extend the lease to ``vis_ms`` from now; returns the new deadline (ms)."""
        now = self.now_ms()
        until = now + vis_ms
        ch, pri, idb, attempts = lease.key
        if self.db.execute_write(self.db.move, sql.TOUCH, (until, ch, pri, idb, attempts, now)) != 1:
            raise self.db.read(lambda c: self.lease_error(c, lease, now))
        return until

    def nack(self, lease: LeaseKey, delay_ms: int, priority: int | None, reason: str | None = None) -> bool:
        """Ready again after ``delay_ms`` (with a new ``priority``), or dead once attempts are used up.

        Returns whether it will be delivered again."""
        ch, pri, idb, attempts = lease.key
        max_attempts = self.names.max_attempts(ch)
        now = self.now_ms()
        new_pri = pri if priority is None else priority

        def nack(conn: sqlite3.Connection) -> bool:
            self._check_held(conn, lease, now)
            if self.trace:
                record(conn, [idb, now, "nacked", event_detail(delay=delay_ms / 1000.0, reason=reason,
                                                               attempt=attempts)])
            if attempts >= max_attempts:
                inbox_to_dead(conn, ch, pri, idb, "max_attempts", f"nacked after {attempts} attempts", now,
                              self.trace)
                return False
            if delay_ms <= 0 and new_pri == pri:
                conn.execute(sql.RELEASE, (ch, pri, idb))
            elif delay_ms <= 0:  # re-key with the new priority, ready at once
                conn.execute(sql.REKEY_READY, (new_pri, ch, pri, idb))
                conn.execute(sql.INBOX_DELETE, (ch, pri, idb))
            else:
                conn.execute(sql.INBOX_TO_DELAYED, (now + delay_ms, new_pri, ch, pri, idb))
                conn.execute(sql.INBOX_DELETE, (ch, pri, idb))
            return True

        requeued = self.db.txn(self.db.move, nack)
        self.bells.ring(_bell.channel_bell(lease.channel))
        return requeued

    def dead(self, lease: LeaseKey, reason: str, detail: str, priority: int | None) -> None:
        ch, pri, idb, _attempts = lease.key
        now = self.now_ms()

        def kill(conn: sqlite3.Connection) -> None:
            self._check_held(conn, lease, now)
            inbox_to_dead(conn, ch, pri, idb, reason, detail, now, self.trace, priority)

        self.db.txn(self.db.move, kill)

    # -- dead letters -------------------------------------------------------------------------

    def dead_from_row(self, r: Sequence[Any]) -> DeadLetter:
        _seq, idb, ch, peer, pri, attempts, job, body, hdrs, expires, origin, deliver_at, reason, detail, died = r
        msg = Message(
            id=id_text_from_bytes(idb),
            channel=self.names.channel_name(ch),
            body=body,
            headers=decode_headers(hdrs),
            priority=pri,
            created_at=_ms_of(idb) / 1000.0,
            deliver_at=deliver_at / 1000.0 if deliver_at else None,
            expires_at=expires / 1000.0 if expires else None,
            attempts=attempts,
            origin=self.names.origin_name(origin),
            job=job,
            state="dead",
        )
        return DeadLetter(message=msg, reason=reason, detail=detail, died_at=died / 1000.0,
                          peer=self.names.peer_name(peer) if peer is not None else None)

    def dead_where(self, channel: str | None, reason: str | None, older_ms: int | None, newer_ms: int | None,
                   ids: Sequence[str] | None = None) -> tuple[str, list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        if channel is not None:
            ch = self.names.channel(channel, create=False)
            where.append("channel=?")
            args.append(ch if ch is not None else -1)
        if reason is not None:
            where.append("reason=?")
            args.append(reason)
        now = self.now_ms()
        if older_ms is not None:
            where.append("died_at<=?")
            args.append(now - older_ms)
        if newer_ms is not None:
            where.append("died_at>=?")
            args.append(now - newer_ms)
        if ids is not None:
            idbs = [id_bytes(i) for i in ids]
            where.append("id IN (" + ",".join("?" * len(idbs)) + ")")
            args.extend(idbs)
        return (" WHERE " + " AND ".join(where)) if where else "", args

    def dead_letters(self, where: str, args: list[Any], limit: int | None) -> list[DeadLetter]:
        statement = sql.dead_select(where)
        if limit is not None:
            statement += f" LIMIT {int(limit)}"
        rows = self.db.read(lambda c: c.execute(statement, args).fetchall())
        return [self.dead_from_row(r) for r in rows]

    def dead_letter(self, message_id: str) -> DeadLetter:
        idb = id_bytes(message_id)
        row = self.db.read(lambda c: c.execute(sql.DEAD_BY_ID, (idb,)).fetchone())
        if row is None:
            raise NotFound(f"no dead letter with id {message_id}",
                           hint="list them with spool.dead_letters() or `spoolq dead ls`")
        return self.dead_from_row(row)

    def retry_dead(self, where: str, args: list[Any], dry_run: bool) -> list[DeadLetter]:
        def retry(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            rows = conn.execute(sql.dead_select(where), args).fetchall()
            if dry_run or not rows:
                return rows
            missing_jobs = sum(1 for r in rows if r[6] is None and r[3] is None)
            job = self.jobs.alloc(conn, missing_jobs) if missing_jobs else 0
            for r in rows:
                seq, idb, ch, peer, pri, _att, jb, body, hdrs, _exp, origin, deliver_at, *_ = r
                if peer is None:
                    if jb is None:
                        jb, job = job, job + 1
                    conn.execute(sql.RESTORE_TO_INBOX, (ch, pri, idb, jb, body, hdrs, origin, deliver_at))
                else:
                    conn.execute(sql.RESTORE_TO_OUTBOX, (peer, pri, idb, ch, body, hdrs, None, origin, deliver_at))
                conn.execute(sql.DEAD_DELETE, (seq,))
            if self.trace:
                ev: list[Any] = []
                for r in rows:
                    ev += (r[1], now, "retried", "{}")
                record(conn, ev)
            return rows

        now = self.now_ms()
        rows = self.db.txn(self.db.move, retry)
        out = [self.dead_from_row(r) for r in rows]
        if not dry_run:
            for d in out:
                self.bells.ring(_bell.OUTBOX if d.peer else _bell.channel_bell(d.channel))
        return out

    def purge_dead(self, where: str, args: list[Any], dry_run: bool) -> int:
        if dry_run:
            return int(self.db.read(lambda c: c.execute(sql.dead_count(where), args).fetchone()[0]))
        return int(self.db.txn(self.db.move, lambda c: c.execute(sql.dead_purge(where), args).rowcount))

    # -- inspection ---------------------------------------------------------------------------

    def peek(self, ch: int, channel: str, limit: int) -> list[Message]:
        now = self.now_ms()
        rows = self.db.read(lambda c: c.execute(sql.PEEK_READY, (ch, now, int(limit))).fetchall())
        return [
            Message(id=id_text_from_bytes(idb), channel=channel, body=body, headers=decode_headers(h), priority=pri,
                    created_at=_ms_of(idb) / 1000.0, deliver_at=da / 1000.0 if da else None,
                    expires_at=ex / 1000.0 if ex else None, attempts=att, origin=self.names.origin_name(orig),
                    job=job)
            for pri, idb, att, job, body, h, ex, orig, da in rows
        ]

    def stats(self) -> Stats:
        now = self.now_ms()

        def collect(c: sqlite3.Connection) -> tuple[list[Any], ...]:
            return (
                c.execute(sql.STATS_INBOX, (now, now)).fetchall(),
                c.execute(sql.STATS_DELAYED).fetchall(),
                c.execute(sql.STATS_DEAD).fetchall(),
                c.execute(sql.STATS_OUTBOX, (now,)).fetchall(),
                c.execute(sql.STATS_PEER_DEAD).fetchall(),
                c.execute(sql.ALL_CHANNELS).fetchall(),
                c.execute(sql.ALL_PEERS).fetchall(),
                c.execute(sql.STATS_HELD).fetchall() if v2 else [],
                c.execute(sql.STATS_PEER_HELD).fetchall() if v2 else [],
            )

        v2 = self.db.version >= 2  # a v1 spool opened read-only has no hold queue
        inbox, delayed, dead, outbox, pdead, chans, peers, held, pheld = self.db.read(collect)
        names = dict(chans)
        pnames = dict(peers)
        acc: dict[int, dict[str, Any]] = {i: {} for i in names}
        for ch, total, leased, oldest, urgent in inbox:
            acc.setdefault(ch, {}).update(ready=total - leased, leased=leased, urgent=urgent,
                                          oldest_age=_max(0.0, (now - _ms_of(oldest)) / 1000.0))
        for ch, total in delayed:
            acc.setdefault(ch, {})["delayed"] = total
        for ch, total in dead:
            acc.setdefault(ch, {})["dead"] = total
        for ch, total in held:
            acc.setdefault(ch, {})["held"] = total
        channels = {names.get(ch, f"#{ch}"): ChannelStats(**v)
                    for ch, v in sorted(acc.items(), key=lambda kv: names.get(kv[0], ""))}
        pacc: dict[int, dict[str, Any]] = {i: {} for i in pnames}
        for p, total, inflight, oldest in outbox:
            pacc.setdefault(p, {}).update(outbox=total, in_flight=inflight,
                                          oldest_age=_max(0.0, (now - _ms_of(oldest)) / 1000.0))
        for p, total in pdead:
            pacc.setdefault(p, {})["dead"] = total
        for p, total in pheld:
            pacc.setdefault(p, {})["held"] = total
        return Stats(channels=channels, peers={pnames.get(p, f"#{p}"): PeerStats(**v) for p, v in sorted(pacc.items())})

    # -- upkeep -------------------------------------------------------------------------------

    def sweep(self) -> dict[str, int]:
        now = self.now_ms()

        def scan(c: sqlite3.Connection) -> tuple[list[Any], ...]:
            return (
                [(ch,) for (ch,) in c.execute(sql.CHANNEL_IDS)
                 if (r := c.execute(sql.NEXT_DELAYED, (ch,)).fetchone()) and r[0] <= now],
                # the partial indexes on expires make these cost what has a TTL, not the queue's size
                c.execute(sql.EXPIRED_INBOX, (now, now)).fetchall(),
                c.execute(sql.EXPIRED_DELAYED, (now,)).fetchall(),
                c.execute(sql.EXPIRED_OUTBOX, (now, now)).fetchall(),
            )

        due_chans, exp_inbox, exp_delayed, exp_outbox = self.db.read(scan)
        retention = self.seen_retention_ms
        cutoff = ((now - retention) << 80).to_bytes(16, "big") if now > retention else b""

        def work(c: sqlite3.Connection) -> dict[str, int]:
            expired = 0
            for ch, due, idb in exp_delayed:  # first, so nothing expired is promoted
                if c.execute(sql.DELAYED_TO_DEAD, ("expired", "ttl passed while delayed", now, ch, due, idb)).rowcount:
                    c.execute(sql.DELAYED_DELETE, (ch, due, idb))
                    expired += 1
                    if self.trace:
                        record(c, [idb, now, "dead", event_detail(reason="expired", detail="ttl passed while delayed")])
            promoted = 0
            for (ch,) in due_chans:
                promoted += promote_due(c, ch, now)
            for ch, pri, idb in exp_inbox:
                # re-check inside the write transaction: it may have been leased or acked since the scan
                if c.execute(sql.STILL_EXPIRED_INBOX, (ch, pri, idb, now, now)).fetchone():
                    inbox_to_dead(c, ch, pri, idb, "expired", "ttl passed before delivery", now, self.trace)
                    expired += 1
            for p, pri, idb in exp_outbox:
                if c.execute(sql.STILL_IN_OUTBOX, (p, pri, idb, now)).fetchone():
                    c.execute(sql.OUTBOX_TO_DEAD, ("expired", "ttl passed before it could be forwarded", now,
                                                   p, pri, idb))
                    c.execute(sql.OUTBOX_DELETE, (p, pri, idb))
                    expired += 1
                    if self.trace:
                        record(c, [idb, now, "dead", event_detail(
                            reason="expired", detail="ttl passed before it could be forwarded",
                            peer=self.names.peer_name(p))])
            forgotten = c.execute(sql.FORGET_SEEN, (cutoff, now)).rowcount if cutoff else 0
            return {"promoted": promoted, "expired": expired, "forgotten": forgotten}

        result = self.db.txn(self.db.move, work)
        self.db.ensure_reserve()
        if result["promoted"]:
            for (ch,) in due_chans:
                self.bells.ring(_bell.channel_bell(self.names.channel_name(ch)))
        return result
