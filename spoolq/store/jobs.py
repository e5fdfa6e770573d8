"""Messages addressed by their job number (for the beanstalkd front-end and admin tools).

A job number is node-local and never reused (see ``names.JobNumbers``). There
is no index on it in the inbox (it would cost every send a second b-tree
write), so finding a ready or leased message by number scans the inbox.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import _bell
from ..message import _ms_of, decode_headers, id_bytes, id_text_from_bytes
from . import sql
from .commit import GroupCommit, WriteRequest
from .db import Database
from .events import record
from .inbox import Inbox, dead_if_spent, expired_leases, next_due, promote_due, promote_one, restore_dead
from .names import Names

__all__ = ["Job", "Jobs"]


@dataclass(frozen=True, slots=True)
class Job:
    """A message found by its job number.

    ``state`` is ``ready``, ``reserved`` (leased), ``delayed`` or ``buried``
    (a dead letter of its channel). ``due``: when a delayed message becomes
    ready, or when a lease ends (Unix seconds).
    """

    job: int
    id: str
    channel: str
    state: str
    priority: int
    body: bytes
    headers: dict[str, str]
    created_at: float
    due: float | None
    attempts: int


VisibilityFor = Callable[[bytes | None], float | None]


class Jobs:
    """Job-number operations of one spool object."""

    def __init__(self, db: Database, names: Names, inbox: Inbox, commit: GroupCommit, bells: _bell.Bells) -> None:
        self.db = db
        self.names = names
        self.inbox = inbox
        self.commit = commit
        self.bells = bells

    def _channel(self, name: str) -> int | None:
        return self.names.channels.get(name) or self.names.channel(name, create=False)

    def _job(self, state: str, channel: str, r: Sequence[Any]) -> Job:
        job, pri, idb, due, att, body, hdrs = r
        return Job(job, id_text_from_bytes(idb), channel, state, pri, body, decode_headers(hdrs),
                   _ms_of(idb) / 1000.0, due / 1000.0 if due is not None else None, att)

    def put(self, writes: list[WriteRequest]) -> list[int]:
        """Commit prepared writes in one transaction now; returns each one's first job number."""
        for w in writes:
            w.jobs = []
        self.commit.submit(writes)
        for w in writes:
            if w.jobs:
                self.commit.jobs.shown(w.jobs[-1])
        return [w.jobs[0] for w in writes]  # type: ignore[index]

    def promote_due(self, channels: Sequence[str]) -> int:
        """Make the delayed messages of ``channels`` whose time has come ready now. Returns how many."""
        chs = [(c, n) for n in channels if (c := self._channel(n))]
        if not chs:
            return 0
        now = self.inbox.now_ms()
        due = self.db.read(lambda c: [(ch, n) for ch, n in chs
                                      if (r := c.execute(sql.NEXT_DELAYED, (ch,)).fetchone()) and r[0] <= now])
        if not due:
            return 0
        n = self.db.txn(self.db.move, lambda c: sum(promote_due(c, ch, now) for ch, _ in due))
        for _ch, name in due:
            self.bells.ring(_bell.channel_bell(name))
        return n

    def lease_any(self, channels: Sequence[str], vis_ms: int,
                  visibility_for: VisibilityFor | None = None) -> tuple[Any | None, float | None]:
        """Lease the most urgent ready message of any of ``channels`` (priority, then id).

        Returns ``(lease, None)``, or ``(None, when)`` where ``when`` is the Unix
        time something may become ready, or ``None`` if nothing is pending.
        """
        chs = []
        for name in channels:
            ch = self._channel(name)
            if ch is not None:
                chs.append((ch, name, self.names.max_attempts(ch)))
        if not chs:
            return None, None
        make = self.inbox.make_lease

        self.inbox.tracing.refresh()
        if len(chs) == 1 and not self.inbox.trace:
            got = self._lease_one(*chs[0], vis_ms, visibility_for)
            if got is not None:
                return got, None

        def lease(conn: sqlite3.Connection) -> tuple[Any | None, float | None]:
            now = self.inbox.now_ms()
            best: tuple[Any, ...] | None = None
            for ch, name, max_attempts in chs:
                row = conn.execute(sql.NEXT_DELAYED, (ch,)).fetchone()
                if row is not None and row[0] <= now:
                    promote_due(conn, ch, now)
                while True:
                    r = conn.execute(sql.LEASE_SELECT, (ch, now, 1)).fetchone()
                    if r is None or not dead_if_spent(conn, ch, r, now, max_attempts, self.inbox.trace):
                        break
                if r is not None and (best is None or (r[0], r[1]) < (best[1][0], best[1][1])):
                    best = (ch, r, name)
            if best is not None:
                ch, r, name = best
                pri, idb, attempts, job, body, hdrs, expires, origin, deliver_at = r
                own = visibility_for(hdrs) if visibility_for is not None else None
                until = now + (max(1, int(own * 1000)) if own is not None else vis_ms)
                self._leased(conn, ch, r, now, until)  # before the update: it reads the last lease's end
                conn.execute(sql.LEASE_UPDATE, (until, ch, pri, idb))
                return make(ch, name, pri, idb, attempts + 1, job, body, hdrs, expires, origin, deliver_at,
                            until), None
            nxt: int | None = None
            for ch, _name, _m in chs:
                d = next_due(conn, ch, now)
                if d is not None:
                    nxt = d if nxt is None else min(nxt, d)
            return None, (nxt / 1000.0 if nxt is not None else None)

        return self.db.txn(self.db.move, lease)

    def _lease_one(self, ch: int, name: str, max_attempts: int, vis_ms: int,
                   visibility_for: VisibilityFor | None) -> Any | None:
        """The common reserve in one autocommitted statement (``sql.LEASE_ONE``, as ``Spool.lease``
        does), or None: then the general transaction decides (a spent front row, due delayed
        messages, nothing ready).

        A message with its own lease length (a beanstalkd TTR other than the default, kept in its
        headers) gets it by a second statement right after. Should the process die between the two,
        the lease runs for ``vis_ms`` instead; a standalone beanstalkd server makes every lease of
        its predecessor ready at start anyway, as beanstalkd does."""
        db = self.db
        now = self.inbox.now_ms()
        until = now + vis_ms
        got = db.fetch_write(db.move, sql.LEASE_ONE, (until, ch, now, max_attempts))
        if not got:
            return None
        pri, idb, attempts, job, body, hdrs, expires, origin, deliver_at = got[0]
        if hdrs is not None and visibility_for is not None:
            own = visibility_for(hdrs)
            if own is not None:
                mine = now + max(1, int(own * 1000))
                if mine != until and db.execute_write(db.move, sql.TOUCH, (mine, ch, pri, idb, attempts, now)):
                    until = mine
        return self.inbox.make_lease(ch, name, pri, idb, attempts, job, body, hdrs, expires, origin, deliver_at,
                                     until)

    def find(self, job: int) -> Job | None:
        """The message with job number ``job`` wherever it is (ready, reserved, delayed, buried)."""
        now = self.inbox.now_ms()

        def find(c: sqlite3.Connection) -> tuple[str, tuple[Any, ...]] | None:
            r = c.execute(sql.JOB_IN_INBOX, (job,)).fetchone()
            if r is not None:
                return ("reserved" if r[3] > now else "ready"), r
            r = c.execute(sql.JOB_IN_DELAYED, (job,)).fetchone()
            if r is not None:
                return "delayed", r
            r = c.execute(sql.JOB_IN_DEAD, (job,)).fetchone()
            return ("buried", r) if r is not None else None

        found = self.db.read(find)  # names are looked up outside the read (it holds the reader)
        if found is None:
            return None
        state, (ch, pri, idb, due, att, body, hdrs) = found
        return self._job(state, self.names.channel_name(ch), (job, pri, idb,
                         due if state in ("reserved", "delayed") else None, att, body, hdrs))

    def _leased(self, conn: sqlite3.Connection, ch: int, r: Sequence[Any], now: int, until: int) -> None:
        """The events of a beanstalkd reserve: the last lease's expiry, if it ran out, and this lease."""
        if self.inbox.trace:
            ev = expired_leases(conn, ch, [r], now)
            ev += (r[1], now, "leased", f'{{"until":{until / 1000.0},"attempt":{int(r[2]) + 1}}}')
            record(conn, ev)

    def lease(self, job: int, vis_ms: int, visibility_for: VisibilityFor | None = None) -> Any | None:
        """Lease the message with job number ``job`` if it is ready, delayed or buried (not leased)."""
        now = self.inbox.now_ms()
        make = self.inbox.make_lease

        def lease(c: sqlite3.Connection) -> Any | None:
            r = c.execute(sql.JOB_DELAYED_KEY, (job,)).fetchone()
            if r is not None:  # bring it in
                promote_one(c, *r)
            else:
                d = c.execute(sql.JOB_DEAD_SEQ, (job,)).fetchone()
                if d is not None:
                    restore_dead(c, d[0], self.commit.jobs)
            r = c.execute(sql.JOB_LEASE_ROW, (job,)).fetchone()
            if r is None or r[3] > now:
                return None
            ch, pri, idb, _u, att, body, hdrs, expires, origin, deliver_at = r
            own = visibility_for(hdrs) if visibility_for is not None else None
            until = now + (max(1, int(own * 1000)) if own is not None else vis_ms)
            self._leased(c, ch, (pri, idb, att), now, until)  # before the update (see lease_any)
            c.execute(sql.LEASE_UPDATE, (until, ch, pri, idb))
            return make(ch, self.names.channel_name(ch), pri, idb, att + 1, job, body, hdrs, expires, origin,
                        deliver_at, until)

        return self.db.txn(self.db.move, lease)

    def delete(self, job: int, found: Job | None = None) -> bool:
        """Delete the message with job number ``job`` if it is ready, delayed or buried (not leased).

        ``found``: what :meth:`find` said of it. Then only its table is written, by its key (ready,
        delayed) or the dead letters' job index, not scanned while the write lock is held; if it moved
        meanwhile, every table is looked at as without it."""
        now = self.inbox.now_ms()
        ch = self.names.channels.get(found.channel) if found is not None else None
        key = id_bytes(found.id) if found is not None else b""

        def delete(c: sqlite3.Connection) -> bool:
            if found is not None:
                if found.state == "buried":
                    hit = c.execute(sql.JOB_DELETE_DEAD, (job,)).rowcount
                elif found.state == "ready" and ch is not None:
                    hit = c.execute(sql.JOB_DELETE_READY_KEY, (ch, found.priority, key, job, now)).rowcount
                elif found.state == "delayed" and ch is not None and found.due is not None:
                    due = round(found.due * 1000)
                    hit = c.execute(sql.JOB_DELETE_DELAYED_KEY, (ch, due, key, job)).rowcount
                else:
                    hit = 0
                if hit:
                    return True
            return bool(c.execute(sql.JOB_DELETE_READY, (job, now)).rowcount
                        or c.execute(sql.JOB_DELETE_DELAYED, (job,)).rowcount
                        or c.execute(sql.JOB_DELETE_DEAD, (job,)).rowcount)

        return self.db.txn(self.db.move, delete)

    def kick(self, channel: str, bound: int) -> list[int]:
        """Make up to ``bound`` dead letters of ``channel`` ready (oldest first); if it has none, up to
        ``bound`` delayed messages ready now. Returns the job numbers made ready."""
        ch = self.names.channel(channel, create=False)
        if ch is None or bound <= 0:
            return []
        now = self.inbox.now_ms()

        def kick(c: sqlite3.Connection) -> list[int]:
            dead = c.execute(sql.KICK_DEAD, (ch, bound)).fetchall()
            if dead:
                return [restore_dead(c, seq, self.commit.jobs)[1] for seq, _job in dead]
            rows = c.execute(sql.KICK_DELAYED, (ch, bound)).fetchall()
            for due, idb, _job in rows:
                promote_one(c, ch, due, idb)
            if rows:
                c.execute(sql.kicked_deliver_at(len(rows)), (now, ch, *[r[1] for r in rows]))
            return [job for _d, _i, job in rows]

        jobs = self.db.txn(self.db.move, kick)
        if jobs:
            self.bells.ring(_bell.channel_bell(channel))
        return jobs

    def kick_one(self, job: int) -> bool:
        """Make the buried (dead) or delayed message with job number ``job`` ready now."""

        def kick(c: sqlite3.Connection) -> int | None:
            d = c.execute(sql.JOB_DEAD_SEQ, (job,)).fetchone()
            if d is not None:
                return restore_dead(c, d[0], self.commit.jobs)[0]
            r = c.execute(sql.JOB_DELAYED_KEY, (job,)).fetchone()
            if r is None:
                return None
            promote_one(c, *r)
            return int(r[0])

        ch = self.db.txn(self.db.move, kick)
        if ch is not None:
            self.bells.ring(_bell.channel_bell(self.names.channel_name(ch)))
        return ch is not None

    def load_stats(self) -> dict[int, tuple[int, int, int, int, int, int]]:
        """The saved per-job counters (delay, reserves, timeouts, releases, buries, kicks) of the jobs that
        still exist; rows of jobs gone meanwhile are removed."""

        def load(c: sqlite3.Connection) -> list[Any]:
            c.execute(sql.JOB_STATS_PRUNE)
            return c.execute(sql.JOB_STATS_ALL).fetchall()

        return {int(j): (int(d), int(r), int(t), int(rl), int(b), int(k))
                for j, d, r, t, rl, b, k in self.db.txn(self.db.move, load)}

    def save_stats(self, rows: Sequence[tuple[int, int, int, int, int, int, int]], gone: Sequence[int]) -> None:
        """Store per-job counters (job first) and forget those of ``gone`` jobs, in one transaction."""

        def save(c: sqlite3.Connection) -> None:
            if rows:
                c.executemany(sql.JOB_STATS_PUT, rows)
            if gone:
                c.executemany(sql.JOB_STATS_DELETE, [(j,) for j in gone])

        self.db.txn(self.db.move, save)

    def put_plain(self, ch: int, priority: int, idb: bytes, body: bytes, bell: str) -> int | None:
        """One plain message written now, alone (see ``GroupCommit.put_job``); its job number, or None
        when it could not go this way (nothing was written)."""
        job = self.commit.put_job(ch, priority, idb, body, bell)
        if job is not None:
            self.commit.jobs.shown(job)
        return job

    def own(self) -> int:
        """The caller owns the spool: job numbers go on at the last one it may have shown plus one
        (see ``sql.OWNED_BLOCK``), and leases of earlier owners are ready now. Returns how many."""
        now = self.inbox.now_ms()

        def own(c: sqlite3.Connection) -> tuple[int, int]:
            c.execute(sql.JOB_HW_INIT)
            st = {k: int(v) for k, v in c.execute(sql.OWNED_STATE).fetchall()}
            nxt = st["next_job"]
            if "owned_end" in st and nxt == st["owned_end"]:  # nobody reserved numbers after the last owner
                top = c.execute(sql.MAX_JOB).fetchone()[0]
                back = max(st["owned_start"], (top or 0) + 1, st["job_hw"])
                if back < nxt:
                    c.execute(sql.SET_NEXT_JOB, (back,))
                    nxt = back
            return nxt, int(c.execute(sql.RELEASE_ALL_LEASES, (now,)).rowcount)

        nxt, released = self.db.txn(self.db.move, own)
        self.commit.own(nxt - 1)
        return released

    def peek_delayed(self, channel: str) -> Job | None:
        """The delayed message of ``channel`` that becomes ready first."""
        return self._peek(channel, "delayed", sql.PEEK_DELAYED)

    def holds_any(self, channel: str) -> bool:
        """Whether ``channel`` holds any message: ready, leased, delayed or dead."""
        ch = self.names.channel(channel, create=False)
        return ch is not None and bool(self.db.read(lambda c: c.execute(sql.HOLDS_ANY, (ch,)).fetchone()[0]))

    def peek_buried(self, channel: str) -> Job | None:
        """The oldest dead letter of ``channel`` (beanstalkd: the next buried job)."""
        return self._peek(channel, "buried", sql.PEEK_BURIED)

    def _peek(self, channel: str, state: str, statement: str) -> Job | None:
        ch = self.names.channel(channel, create=False)
        if ch is None:
            return None
        r = self.db.read(lambda c: c.execute(statement, (ch,)).fetchone())
        return self._job(state, channel, r) if r is not None else None
