"""Group commit: the one way a message is created in the spool.

Theory of operation
===================

Every write that creates messages (send, receive from a peer, a beanstalkd put,
a retried dead letter going back through the outbox excepted) is a
:class:`WriteRequest` handed to :meth:`GroupCommit.submit` — from a plain
thread, from many threads at once, or (through :meth:`GroupCommit.wait`) from
an asyncio task. Requests are built by :class:`RequestBuilder` methods on this
module's side; callers above the store never hold one.

Concurrent requests share one transaction and one sync. The first caller in
becomes the leader and commits inline; callers who arrive while a commit is
running queue up, and a dedicated writer thread then commits the queue batch
after batch until it stays empty for ``LINGER`` seconds (``LOOP_LINGER`` after
a group from an event loop). A lone caller never waits for anyone: a single
plain message is one autocommitted INSERT.

An asyncio caller's requests of one event-loop turn are handed to the writer
thread as one group (one hand-off, one sync); the loop goes on serving while
the sync runs, and is woken when it is done. The loop then rings the group's
bells itself, so the writer thread goes straight on to the next group. Plain
single messages of one turn (:meth:`GroupCommit.wait_row`, the HTTP API's
usual send) share one request. A small batch received from a peer
(:meth:`GroupCommit.wait_now`) is written by the loop itself when that needs no
wait for a lock, and only its sync goes to a thread, shared by the batches
waiting for one (``loopsync``; issue 15: latency).

Row layouts of a request (the message id is always at index 2):
  inbox plain:    (channel, priority, id, body)
  inbox received: (channel, priority, id, body, origin)
  inbox full:     (channel, priority, id, body, headers, expires, origin, attempts, deliver_at)
  delayed:        (channel, due, id, priority, body, headers, expires, origin, attempts)
  outbox:         (peer, priority, id, channel, body, headers, expires, origin, deliver_at)
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, Literal

from .. import _bell
from ..errors import LeaseLost, SpoolqError
from . import sql
from .db import Database
from .events import ACTOR, TraceSetting, detail, record, statement_base
from .events import runs as event_runs
from .loopsync import LoopSync
from .names import JobNumbers, Names

__all__ = ["WriteRequest", "GroupCommit"]

LINGER: Final = 0.0005  # how long the writer thread waits for more senders before it stops
GATHER: Final = 0.0005  # at most this long it waits for the senders it just woke to send again
_COPY_MAX: Final = 4096  # bodies up to this size are bound as bytearray by send_one
# ... after a group from an event loop: a loop hands over a group per turn, and waking a waiting writer
# (a notify) costs the loop less than starting it again through the executor. Issue 9: at 3 ms, one group
# in four of a busy node's HTTP sends (32 connections, a shared 2-core box) found the writer gone and paid
# for the executor again (ThreadPoolExecutor.submit on the loop); a thread that waits costs nothing, and
# close() wakes it
LOOP_LINGER: Final = 0.05
# batches of plain rows written as one autocommitted statement (one distinct statement per size: the
# connections cache 256)
_PLAIN_SIZES: Final = frozenset(range(1, 65))

Layout = Literal["plain", "received", "full"]


class WriteRequest:
    """One caller's rows, waiting for the group commit (see the module docstring for the layouts)."""

    __slots__ = (
        "ack_leases",
        "acks",
        "actor",
        "bells",
        "block",
        "callback",
        "chain",
        "dedup",
        "delayed",
        "done",
        "dups",
        "error",
        "inbox",
        "jobs",
        "layout",
        "loop_bells",
        "outbox",
        "probe",
        "route",
        "sender",
        "waiter",
    )

    def __init__(self) -> None:
        self.inbox: list[tuple[Any, ...]] = []
        self.layout: Layout = "plain"
        self.delayed: list[tuple[Any, ...]] = []
        self.outbox: list[tuple[Any, ...]] = []
        self.dedup = False  # record the ids in `seen`; ids seen before are dropped (see `dups`)
        self.probe = True  # with dedup: also look for ids this spool made itself and still holds
        self.jobs: list[int] | None = None  # filled with the rows' job numbers when not None
        self.bells: set[str] = set()
        self.dups: set[bytes] = set()
        self.error: BaseException | None = None
        self.done = False
        self.waiter: threading.Lock | None = None
        self.chain: threading.Lock | None = None  # the next waiter of its batch: woken by this one's sender
        self.callback: Callable[[], None] | None = None
        self.loop_bells = False  # its bells are rung by the event loop that waits for it, not the writer
        self.acks: list[tuple[int, int, bytes, int]] = []  # lease keys to end in the same transaction
        self.ack_leases: list[Any] = []  # the leases themselves, for the error when one is not held
        self.actor = ACTOR.get()  # who sends, for the event log: (by, client address)
        self.sender: str | None = None  # a batch received from this peer node (the event log says so)
        self.route: str | None = None  # the route (channel glob) that sent the outbox rows, if one did
        self.block = 0  # its rows are one block of this many consecutive new ids (one channel and priority)

    def is_plain(self) -> bool:
        return self.layout == "plain" and not (self.dedup or self.delayed or self.outbox or self.acks)


class GroupCommit:
    """Commits write requests for one spool object (see the module docstring)."""

    def __init__(self, db: Database, bells: _bell.Bells, clock: Callable[[], float], seen_retention_ms: int,
                 names: Names | None = None, tracing: TraceSetting | None = None) -> None:
        self.db = db
        self.names = names
        # write events (store/events.py) with every commit, when the spool's setting says so
        self.tracing = tracing if tracing is not None and names is not None else TraceSetting(None, False)
        self._details: dict[tuple[Any, ...], str] = {}  # event details by (channel, peer, actor[, route])
        self.bells = bells
        self.clock = clock
        self.seen_retention_ms = seen_retention_ms
        self.jobs = JobNumbers()
        db.on_rollback = self.jobs.forget
        self._mu = threading.Lock()
        self._cv = threading.Condition(self._mu)
        self._lingering = False
        self._closing = False  # close() was called: the writer thread no longer lingers
        self._want = 0  # while the writer thread gathers: the queue length that wakes it
        self._queue: list[WriteRequest] = []
        self._leading = False
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._turns: dict[asyncio.AbstractEventLoop, _Turn] = {}
        self._loop_sync = LoopSync(lambda: self.db.sync_created())  # the syncs of wait_now's writes
        self._traced_view: bool | None = None  # sql.SEND_TRACED_VIEW made on db.create (None: not yet tried)
        self.commits = 0  # transactions written by group commit, and the requests in them
        self.requests = 0

    # -- the entrance ---------------------------------------------------------------------------

    def submit(self, writes: Sequence[WriteRequest], on_done: Callable[[], None] | None = None) -> None:
        """Commit ``writes``.

        Without ``on_done``: now, in this thread (joining a group commit if one
        is running); raises the first request's error (nothing of it is
        written). With ``on_done``: queue them for the writer thread and return
        at once; ``on_done()`` runs in the writer thread when all are committed
        or failed (see each request's ``error``).
        """
        if not writes:
            if on_done is not None:
                on_done()
            return
        self.tracing.refresh()
        if on_done is not None:
            writes[-1].callback = on_done  # a group is taken from the queue whole, so the last is done last
            self._enqueue(writes)
            return
        if len(writes) == 1 and writes[0].jobs is None and len(writes[0].inbox) == 1 and writes[0].is_plain():
            if self._write_one(writes[0]):
                return
        own = writes[-1]
        mu = self._mu
        mu.acquire()
        if self._leading:
            lk = threading.Lock()
            lk.acquire()
            own.waiter = lk
            self._queue.extend(writes)
            if self._lingering and len(self._queue) >= self._want:
                self._cv.notify()
            mu.release()
            _wait_turn(own, lk)
            if not own.done:
                self._lead(own)
        else:
            self._leading = True
            self._queue.extend(writes)
            mu.release()
            self._lead(own)
        for w in writes:
            if w.error is not None:
                raise w.error

    def send_one(self, ch: int, priority: int, idb: bytes, body: bytes, bell: str) -> None:
        """Commit one plain message (an inbox row with no options), now, in this thread.

        The most common call of all (``Spool.send``): when no other send of this
        object is in progress and the event log is off, the row is written by
        the caller with one autocommitted INSERT, without building a request
        (issue 9: per-call cost). Otherwise it goes through :meth:`submit`.
        """
        tracing = self.tracing
        tracing.refresh()
        mu = self._mu
        mu.acquire()
        if self._leading:
            # Another send is in progress: queue for its group commit, as submit() would, with fewer
            # calls (under concurrency every µs of Python here delays the next batch: issue 9)
            w = WriteRequest()
            w.inbox.append((ch, priority, idb, body))
            w.bells.add(bell)
            lk = threading.Lock()
            lk.acquire()
            w.waiter = lk
            queue = self._queue
            queue.append(w)
            if self._lingering and len(queue) >= self._want:
                self._cv.notify()
            mu.release()
            _wait_turn(w, lk)
            if not w.done:
                self._lead(w)
            if w.error is not None:
                raise w.error
            return
        if tracing.on:
            mu.release()
        else:
            # This thread writes (senders arriving meanwhile queue for the writer), here rather than in a
            # method of its own: every Python call is ~500 instructions of a ~70k send (issue 9)
            self._leading = True
            mu.release()
            db = self.db
            gate = db.gate
            inline = False
            try:
                with gate:
                    jobs = self.jobs
                    job = jobs.next
                    if jobs.end <= job:  # a new block must be reserved, in a transaction: the general path
                        job = -1
                    else:
                        jobs.next = job + 1
                        # Alone, and no other process writing: let SQLite sync inside the commit, which
                        # measured faster than syncing after it (issue 9). While other processes write, the
                        # sync runs outside the gate (issue 15), so that they do not queue behind it.
                        inline = db.sync_creates and not gate.contended()
                        # bytearray, not bytes: the sqlite3 module looks for an adapter for every bytes
                        # parameter (a failed attribute lookup that formats an AttributeError, ~2.5k
                        # instructions each); a large body is not copied for that
                        small = body if len(body) > _COPY_MAX else bytearray(body)
                        db.insert_created(sql.INSERT_ONE, (ch, priority, bytearray(idb), job, small), inline)
                if job >= 0:
                    if inline:
                        db.check_created()  # a removed spool raises, as with the sync below
                    elif db.sync_creates:
                        db.sync_created()  # outside the gate: other writers go on meanwhile
            finally:
                self._end_lead()
            if job >= 0:
                self.bells.ring(bell)
                return
        w = WriteRequest()
        w.inbox.append((ch, priority, idb, body))
        w.bells.add(bell)
        self.submit([w])

    async def wait(self, writes: Sequence[WriteRequest]) -> None:
        """:meth:`submit` for asyncio: the requests of one loop turn go to the writer thread as one group."""
        self.tracing.refresh()  # never waits (see TraceSetting)
        turn = self._turn()
        fut = turn.loop.create_future()
        turn.writes += writes
        turn.futures.append(fut)
        await fut
        for w in writes:
            if w.error is not None:
                raise w.error

    async def wait_row(self, ch: int, priority: int, idb: bytes, body: bytes, bell: str) -> None:
        """Commit one plain message (an inbox row with no options) for asyncio: :meth:`wait` of one row.

        The HTTP API's usual send. The rows of one loop turn from one sender
        (``ACTOR``: who and from where, as the event log records it) share one
        request: one object for the writer thread to go through, not one per
        message. Each caller still waits on a future of its own, so a cancelled
        caller cancels nobody else's wait.
        """
        self.tracing.refresh()  # never waits (see TraceSetting)
        turn = self._turn()
        fut = turn.loop.create_future()
        actor = ACTOR.get()
        shared = turn.plain.get(actor)
        if shared is None:
            shared = turn.plain[actor] = WriteRequest()
            turn.writes.append(shared)
        shared.inbox.append((ch, priority, idb, body))
        shared.bells.add(bell)
        turn.futures.append(fut)
        await fut
        if shared.error is not None:
            raise shared.error

    async def wait_now(self, w: WriteRequest) -> None:
        """:meth:`wait` for one small request that may be written on the event loop (a batch received
        from a peer, issue 15): when no request is queued for the writer thread and the write needs no
        wait (the gate free, SQLite not busy), it is written here and now, its bells are rung, and only
        the sync goes to a thread. Otherwise it goes as :meth:`wait`.

        The hand-off to the writer thread cost a thread wake-up between the request and the consumer's
        bell: 0.15 ms at the median and 1 ms at p90 on a busy two-core machine, for a write of 0.2 ms.
        """
        if not self._write_now(w):
            await self.wait([w])
            return
        if w.error is None and self.db.sync_creates:
            try:
                await self._loop_sync.wait()  # shared with the batches of other tasks (see loopsync)
            except BaseException as e:
                w.error = e
        if w.error is not None:
            raise w.error

    def _write_now(self, w: WriteRequest) -> bool:
        """Write ``w`` in this thread if that needs no wait; ``False``: nothing was done.

        It does not take the lead: the gate alone keeps writers of this object apart (the lead
        organises the queue). So a writer thread lingering for more requests, which holds the lead
        but not the gate, does not send the batch through its queue.
        """
        if self._queue:  # requests are waiting for the writer thread: do not overtake them
            return False
        self.tracing.refresh()  # never waits (see TraceSetting)
        try:
            if not self._write_batch([w], nowait=True):
                return False
        except BaseException as e:  # raised by wait_now; nothing of it was written
            w.error = e
        self.commits += 1
        self.requests += 1
        w.done = True
        if w.error is None:
            # rung before the sync, as _commit rings a received batch's bells (see there)
            bells, w.bells = w.bells, set()
            for b in bells:
                self.bells.ring(b)
        return True

    def _turn(self) -> _Turn:
        """The requests of this loop turn (the first one schedules their hand-off, at the turn's end)."""
        loop = asyncio.get_running_loop()
        turn = self._turns.get(loop)
        if turn is None:
            turn = self._turns[loop] = _Turn(loop)
            loop.call_soon(self._flush_turn, loop)
        return turn

    def _flush_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        turn = self._turns.pop(loop, None)
        if turn is None:
            return
        writes, futures = turn.writes, turn.futures
        for w in writes:
            w.loop_bells = True

        def ring() -> None:
            bells: set[str] = set()
            for w in writes:
                if w.error is None:
                    bells |= w.bells
            for b in bells:
                self.bells.ring(b)

        def resolve() -> None:  # on the loop: wake the senders, then ring (the writer thread is not held up)
            for fut in futures:
                if not fut.done():
                    fut.set_result(None)
            ring()

        def done() -> None:  # in the writer thread
            try:
                loop.call_soon_threadsafe(resolve)
            except RuntimeError:  # the loop was closed meanwhile: nobody is waiting, but others may be
                ring()

        self.submit(writes, done)

    # -- leading --------------------------------------------------------------------------------

    def own(self, last: int) -> None:
        """The caller owns the spool (see ``sql.OWNED_BLOCK``): note its blocks, and the numbers its
        connections take out of the tables. ``last``: the highest number that may have been shown."""
        self.jobs.own(last)
        for conn in (self.db.create, self.db.move):
            conn.create_function("spoolq_last_job", 0, self.jobs.last_job)
            for statement in sql.JOB_HW_TRIGGERS:
                self.db.retry(lambda c=conn, st=statement: c.execute(st))  # type: ignore[misc]

    def put_job(self, ch: int, priority: int, idb: bytes, body: bytes, bell: str) -> int | None:
        """:meth:`send_one` that returns the message's job number (a beanstalkd put): one autocommitted
        INSERT with a number reserved before, when no other send is in progress and the event log is
        off. None: nothing was written (the caller takes the general path)."""
        tracing = self.tracing
        tracing.refresh()
        if tracing.on:
            return None
        mu = self._mu
        mu.acquire()
        if self._leading:
            mu.release()
            return None
        self._leading = True
        mu.release()
        db = self.db
        try:
            with db.gate:
                job = self.jobs.take_reserved(1)
                if job is None:  # a new block must be reserved, in a transaction: the general path
                    return None
                db.insert_created(sql.INSERT_ONE, (ch, priority, idb, job, body))  # (its kept cursor)
            db.sync_created()  # outside the gate: other writers go on meanwhile
        finally:
            self._end_lead()
        self.bells.ring(bell)
        return job

    def _write_one(self, w: WriteRequest) -> bool:
        """One plain message, written by the caller itself when no other send is in progress."""
        mu = self._mu
        mu.acquire()
        if self._leading:  # others are sending: join their group commit
            mu.release()
            return False
        self._leading = True
        mu.release()
        try:
            with self.db.gate:
                job = self.jobs.take_reserved(1)
                if job is not None and not self.tracing.on:
                    # one autocommitted INSERT is one transaction: no BEGIN/COMMIT round trips
                    ch, pri, idb, body = w.inbox[0]
                    self.db.execute_gated(self.db.create, sql.INSERT_ONE, (ch, pri, idb, job, body))
                elif job is not None:  # with its event: still no list, dedup or batch machinery
                    ch, pri, idb, body = w.inbox[0]
                    ev = [idb, int(self.clock() * 1000), "created", self._created(ch, None, w)]

                    def write(conn: sqlite3.Connection) -> None:
                        conn.execute(sql.INSERT_ONE, (ch, pri, idb, job, body))
                        record(conn, ev)

                    self.db.txn(self.db.create, write)  # a rollback forgets the reserved block (on_rollback)
                else:
                    self._write_batch([w])
            self.db.sync_created()  # outside the gate: other writers go on meanwhile
        finally:
            self._end_lead()
        w.done = True
        for b in w.bells:
            self.bells.ring(b)
        return True

    def _enqueue(self, writes: Sequence[WriteRequest]) -> None:
        with self._mu:
            self._queue.extend(writes)
            if self._leading:
                if self._lingering and len(self._queue) >= self._want:
                    self._cv.notify()
                return
            self._leading = True
        self._writer().submit(self._lead, None)

    def _end_lead(self) -> None:
        """A caller that led (wrote itself) is done: the lead passes to the writer thread when others
        queued meanwhile (:meth:`_hand_over`), else nobody leads."""
        with self._mu:
            if self._queue:
                self._hand_over()
            else:
                self._leading = False

    def _hand_over(self) -> None:
        """Pass the lead to the writer thread. Called with ``_mu`` held.

        Senders are queueing behind us, so this process has concurrent senders:
        a dedicated writer thread now commits for them, batch after batch,
        until the queue stays empty (see ``_lead``). Waking one follower to lead
        instead costs an extra thread hop between every two commits.
        """
        self._writer().submit(self._lead, None)

    def _writer(self) -> ThreadPoolExecutor:
        if self._executor is None:
            with self._executor_lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(1, thread_name_prefix="spoolq-writer")
        return self._executor

    def _lead(self, own: WriteRequest | None) -> None:
        """Commit queued writes until ``own`` is done, then hand the lead on."""
        mu = self._mu
        want = 0  # requests to gather before the next batch: the senders just woken and those queued
        gather = 0.0
        skip = False
        linger = LINGER
        while True:
            with mu:
                if own is None and len(self._queue) < want:
                    # The writer thread, gathering: the senders of the last batch were just woken and
                    # usually send again at once. Taking the queue before they are in splits the senders
                    # into two groups that take turns, each syncing half of them (issue 9).
                    self._want = want
                    self._lingering = True
                    gathered = self._cv.wait(gather)
                    self._lingering = False
                    self._want = 0
                    skip = not gathered  # a sender who did not come back in time: do not wait next round
                if own is None and not self._queue and not self._closing:
                    # The writer thread: senders were here a moment ago. Wait briefly for the
                    # next one before giving up the lead, so a steady stream of senders keeps
                    # one thread committing for them (a cold start costs a thread hop).
                    # Senders notify; nobody polls (on 2 cores a polling thread steals the CPU
                    # the senders need). close() notifies too.
                    self._lingering = True
                    self._cv.wait(linger)
                    self._lingering = False
                batch = self._queue
                self._queue = []
                if not batch:
                    self._leading = False
                    return
            # the last request of an event loop's group carries its callback (see submit)
            linger = LOOP_LINGER if batch[-1].callback is not None else LINGER
            started = time.perf_counter()
            bells = self._commit(batch)
            took = time.perf_counter() - started
            self.commits += 1
            self.requests += len(batch)
            woken = 0
            first: threading.Lock | None = None  # the senders are woken one after the other (see _wait_turn)
            last: WriteRequest | None = None
            for w in batch:
                w.done = True
                if w is own:
                    continue
                if w.waiter is not None:
                    if last is None:
                        first = w.waiter
                    else:
                        last.chain = w.waiter
                    last = w
                    woken += 1
                elif w.callback is not None:
                    # dropped first: the callback's closure holds the group's requests (this one
                    # included), a reference cycle that would leave the group to the garbage collector
                    callback, w.callback = w.callback, None
                    callback()
            if first is not None:
                first.release()
            if skip or own is not None:
                want, skip = 0, False
            else:
                with mu:
                    want = woken + len(self._queue)
                # never wait longer than a commit takes: without a sync (durability normal) that is short
                gather = min(GATHER, took)
            # after the senders are woken: each system call gives up the GIL, and retaking it behind
            # running senders would hold up the next batch (this thread is its writer)
            for b in bells:
                self.bells.ring(b)
            if own is None:
                continue
            self._end_lead()
            return

    def close(self) -> None:
        """Let queued writes finish and stop the writer thread."""
        with self._mu:
            self._closing = True  # a lingering writer stops waiting for more
            self._cv.notify_all()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._loop_sync.close()

    # -- writing --------------------------------------------------------------------------------

    def _commit(self, batch: list[WriteRequest]) -> set[str]:
        """Write and sync ``batch`` (each request gets its ``error``, if any); returns the bells to ring."""
        try:
            self._write_batch(batch)
        except BaseException as e:
            if len(batch) == 1:
                batch[0].error = e
                return set()
            for w in batch:  # one bad request must not fail the others
                try:
                    self._write_batch([w])
                except BaseException as e2:
                    w.error = e2
            if all(w.error is not None for w in batch):
                return set()
        early: set[str] = set()
        if self.db.sync_creates:
            for w in batch:
                if w.error is not None:
                    continue
                # what is rung here is taken out of the request's bells: neither the writer nor the
                # event loop that waits for the request (loop_bells) rings it a second time
                if w.sender is not None:
                    early |= w.bells
                    w.bells = set()
                elif w.outbox and _bell.OUTBOX in w.bells:
                    early.add(_bell.OUTBOX)
                    w.bells = w.bells - {_bell.OUTBOX}
            # Messages on their way between nodes are announced before the sync, so that the next step
            # (the forwarder's read and POST; a consumer's lease of a received batch) overlaps it instead
            # of waiting for it (issue 15: the syncs were the largest steps of the A -> B path). What
            # the bell announces is committed and readable; the promises are about answers: send()
            # still returns, and a received batch is still acknowledged, only after the sync. A power
            # cut before it can leave a copy at the next hop of a message whose send() never returned
            # (which could already happen: a crash after the sync, before the return) or make the
            # sender of a batch send it again (at-least-once; dedup by id keeps each inbox exactly-once).
            for b in early:
                self.bells.ring(b)
        try:
            self.db.sync_created()  # outside the gate: other writers go on meanwhile
        except BaseException as e:
            for w in batch:
                if w.error is None:
                    w.error = e
            return set()
        bells: set[str] = set()
        for w in batch:
            if w.error is None and not w.loop_bells:
                bells |= w.bells
        return bells - early  # (a local send's bell may have been rung already for a received batch)

    def _write_batch(self, batch: list[WriteRequest], nowait: bool = False) -> bool:
        """Write ``batch`` in one transaction (without its sync). ``nowait``: only if that needs no wait
        for a lock (see ``Database.txn_nowait``); ``False`` when it would have waited (nothing written)."""
        if not nowait and self._write_plain(batch):
            return True

        def write(conn: sqlite3.Connection) -> None:
            plain: list[Any] = []
            received: list[Any] = []
            full: list[Any] = []
            delayed: list[Any] = []
            outbox: list[Any] = []
            dedup = [w for w in batch if w.dedup]
            if dedup:
                self._dedup(conn, dedup)
            kept = []
            njobs = 0
            for w in batch:
                dups = w.dups if w.dedup else None
                ib = [r for r in w.inbox if r[2] not in dups] if dups else w.inbox
                dl = [r for r in w.delayed if r[2] not in dups] if dups else w.delayed
                ob = [r for r in w.outbox if r[2] not in dups] if dups else w.outbox
                kept.append((w, ib, dl, ob))
                njobs += len(ib) + len(dl) + (len(ob) if w.jobs is not None else 0)
            job = self.jobs.alloc(conn, njobs) if njobs else 0
            unkept = 0  # one past the last number shown for outbox rows
            # Ids and bodies up to _COPY_MAX are bound as bytearray, not bytes: the sqlite3 module looks
            # for an adapter for every bytes parameter, a failed attribute lookup that formats an
            # AttributeError (~2k instructions; two per received message were ~6% of the forwarding
            # path's instructions, issue 15). Copying them costs far less.
            copy = _COPY_MAX
            for w, ib, dl, ob in kept:
                jobs = w.jobs
                if w.layout == "full":
                    for r in ib:
                        body = r[3]
                        full += (r[0], r[1], bytearray(r[2]), job, body if len(body) > copy else bytearray(body),
                                 r[4], r[5], r[6], r[7], r[8])
                        if jobs is not None:
                            jobs.append(job)
                        job += 1
                elif w.layout == "received":
                    for ch, pri, idb, body, origin in ib:
                        received += (ch, pri, bytearray(idb), job, body if len(body) > copy else bytearray(body),
                                     origin)
                        job += 1
                else:
                    for ch, pri, idb, body in ib:
                        plain += (ch, pri, bytearray(idb), job, body if len(body) > copy else bytearray(body))
                        if jobs is not None:
                            jobs.append(job)
                        job += 1
                for r in dl:
                    delayed += (r[0], r[1], r[2], job, r[3], r[4], r[5], r[6], r[7], r[8])
                    if jobs is not None:
                        jobs.append(job)
                    job += 1
                for r in ob:
                    outbox += r
                    if jobs is not None:  # a number to show the caller; the outbox does not keep it
                        jobs.append(job)
                        job += 1
                        unkept = job
            if unkept and self.jobs.owned:  # so that the next owner does not show them again
                conn.execute(sql.JOB_HW_RAISE, (unkept,))
            if plain:
                sql.insert_many(conn, "inbox", sql.INBOX_SIMPLE_COLS, 5, plain)
            if received:
                sql.insert_many(conn, "inbox", sql.INBOX_RECEIVED_COLS, 6, received)
            if full:
                sql.insert_many(conn, "inbox", sql.INBOX_FULL_COLS, 10, full)
            if delayed:
                sql.insert_many(conn, "delayed", sql.DELAYED_COLS, 10, delayed)
            if outbox:
                sql.insert_many(conn, "outbox", sql.OUTBOX_COLS, 9, outbox)
            now = int(self.clock() * 1000)
            if self.tracing.on:
                blocks: list[tuple[str, tuple[Any, ...]]] = []
                record(conn, self._events(kept, now, blocks), blocks)
            for w in batch:
                for i, key in enumerate(w.acks):
                    if conn.execute(sql.ACK, (*key, now)).rowcount != 1:
                        lease = w.ack_leases[i] if i < len(w.ack_leases) else None
                        raise LeaseLost(
                            f"message {getattr(lease, 'id', '?')} is not leased by this lease any more "
                            "(acked, nacked, expired or removed); nothing of the transaction happened",
                            hint="the message was or will be delivered again; make processing idempotent",
                        )

        if nowait:
            return self.db.txn_nowait(self.db.create, write)[0]
        self.db.txn(self.db.create, write)
        return True

    def _events(self, kept: list[tuple[WriteRequest, list[Any], list[Any], list[Any]]], now: int,
                blocks: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """The event rows of a batch (flat, see ``events.record``): created, received, acked; the
        ``created`` events of a block of new ids are added to ``blocks`` instead (one statement).

        One detail string per (channel, peer, actor) in the batch, reused for its rows."""
        assert self.names is not None
        names = self.names
        ev: list[Any] = []
        details = self._details
        if len(details) > 4096:
            details.clear()
        for w, ib, dl, ob in kept:
            by, client = w.actor
            sender = w.sender
            if sender is not None:
                for rows, result in ((ib, "new"), (dl, "new"), (_dup_rows(w), "duplicate")):
                    by_channel: dict[int, list[bytes]] = {}
                    for r in rows:
                        ids = by_channel.get(r[0])
                        if ids is None:
                            ids = by_channel[r[0]] = []
                        ids.append(r[2])
                    for ch, ids in by_channel.items():
                        rkey: tuple[Any, ...] = (ch, sender, result)
                        d = details.get(rkey)
                        if d is None:
                            d = details[rkey] = detail(channel=names.channel_name(ch), result=result,
                                                      **{"from": sender})
                        event_runs(ids, now, "received", d, ev, blocks)  # a peer's batch: one row per run
                continue
            if w.block > 1 and not w.dedup:
                self._block(w, ib, dl, ob, now, blocks)
                ib, dl, ob = [], [], []
            for rows in (ib, dl):
                for r in rows:
                    key: tuple[Any, ...] = (r[0], None, by, client)
                    d = details.get(key)
                    if d is None:
                        d = self._created(r[0], None, w)
                    ev += (r[2], now, "created", d)
            for r in ob:
                key = (r[3], r[0], by, client, w.route)
                d = details.get(key)
                if d is None:
                    d = self._created(r[3], r[0], w)
                ev += (r[2], now, "created", d)
            for ack in w.acks:
                ev += (ack[2], now, "acked", "{}")
        return ev

    def _created(self, ch: int, peer: int | None, w: WriteRequest) -> str:
        """The detail of a ``created`` event (cached: the same few strings serve every send)."""
        by, client = w.actor
        key = (ch, None, by, client) if peer is None else (ch, peer, by, client, w.route)
        d = self._details.get(key)
        if d is None:
            assert self.names is not None
            if len(self._details) > 4096:
                self._details.clear()
            if peer is None:
                d = detail(channel=self.names.channel_name(ch), by=by, client=client)
            else:
                d = detail(channel=self.names.channel_name(ch), by=by, client=client,
                           to=self.names.peer_name(peer), route=w.route)
            self._details[key] = d
        return d

    def _block(self, w: WriteRequest, ib: list[Any], dl: list[Any], ob: list[Any], now: int,
               blocks: list[tuple[str, tuple[Any, ...]]]) -> None:
        """The ``created`` events of a request whose rows are one block of consecutive new ids (of one
        channel and priority; one copy per peer for the outbox), as range statements."""
        assert self.names is not None
        by, client = w.actor
        if ib or dl:
            rows, statement = (ib, sql.EVENTS_OF_INBOX_BLOCK) if ib else (dl, sql.EVENTS_OF_DELAYED_BLOCK)
            d = detail(channel=self.names.channel_name(rows[0][0]), by=by, client=client)
            blocks.append((statement, (now, d, rows[0][0], rows[0][1], rows[0][2], rows[-1][2])))
            return
        n = w.block
        for i in range(0, len(ob), n):  # the block once per peer
            first, last = ob[i], ob[i + n - 1]
            d = detail(channel=self.names.channel_name(first[3]), by=by, client=client,
                       to=self.names.peer_name(first[0]), route=w.route)
            blocks.append((sql.EVENTS_OF_OUTBOX_BLOCK, (now, d, first[0], first[1], first[2], last[2])))

    def _write_plain(self, batch: list[WriteRequest]) -> bool:
        """Write a batch of plain messages as ONE autocommitted statement, if it is one.

        The common case under concurrency. Each ``execute`` gives up and retakes
        the GIL, and retaking it while other senders run Python costs tens of
        microseconds, so BEGIN/INSERT/COMMIT would cost three of those per sync.
        With the event log on, the rows and their ``created`` events are one
        statement too, through the create connection's TEMP view (issue 9:
        BEGIN, two INSERTs and COMMIT were four hand-offs of the GIL per group).
        """
        traced = self.tracing.on
        if traced and self._traced_view is False:
            return False
        n = 0
        for w in batch:
            if not w.is_plain():
                return False
            n += len(w.inbox)
        if n not in _PLAIN_SIZES:
            return False
        db = self.db
        with db.gate:
            if traced and self._traced_view is None and not self._install_traced_view():
                return False
            job = self.jobs.take_reserved(n)
            if job is None:
                return False
            params: list[Any] = []
            # ids and small bodies bound as bytearray, as in _write_batch: a bytes parameter costs the
            # sqlite3 module a failed adapter lookup (an AttributeError formatted and dropped), ~1.4 µs a
            # row (issue 9: the HTTP API's sends come this way)
            copy = _COPY_MAX
            if traced:
                last = -1
                d = ""
                for w in batch:
                    jobs = w.jobs
                    for ch, pri, idb, body in w.inbox:
                        if ch != last:
                            d, last = self._created(ch, None, w), ch
                        params += (ch, pri, bytearray(idb), job, body if len(body) > copy else bytearray(body), d)
                        if jobs is not None:
                            jobs.append(job)
                        job += 1
                    last = -1  # the next request may have another sender
                params += (statement_base(), int(self.clock() * 1000))
                statement = sql.insert_traced(n)
            else:
                for w in batch:
                    jobs = w.jobs
                    for ch, pri, idb, body in w.inbox:
                        params += (ch, pri, bytearray(idb), job, body if len(body) > copy else bytearray(body))
                        if jobs is not None:
                            jobs.append(job)
                        job += 1
                statement = sql.insert_rows("inbox", sql.INBOX_SIMPLE_COLS, 5, n)
            db.execute_gated(db.create, statement, params)
        return True

    def _install_traced_view(self) -> bool:
        """Create ``sql.SEND_TRACED_VIEW`` on the create connection (once; called under the gate). False,
        and never tried again, when SQLite refuses: the general path writes the events then."""
        try:
            for statement in sql.SEND_TRACED_VIEW:
                self.db.execute_gated(self.db.create, statement, ())
        except SpoolqError:
            self._traced_view = False
            return False
        self._traced_view = True
        return True

    def _dedup(self, conn: sqlite3.Connection, dedup: list[WriteRequest]) -> None:
        """Record the ids of dedup requests in ``seen``; rows whose id was already there are dups.

        Usually none was seen: one upsert of all the ids says so (``_all_new``). Otherwise
        one upsert per chunk does the check and the record: ``RETURNING`` names
        the ids that were new (or whose entry had expired), the rest are
        duplicates. Requests are handled in order, so a second request with the
        same id in one batch is a duplicate of the first.
        """
        now = int(self.clock() * 1000)
        until = now + self.seen_retention_ms
        for w in dedup:
            ids = list(dict.fromkeys(r[2] for rows in (w.inbox, w.delayed, w.outbox) for r in rows))
            if _all_new(conn, ids, until, now):
                if not w.probe:
                    w.dups = set()
                    continue
                accepted = set(ids)
            else:
                accepted = set()
                for i in range(0, len(ids), 256):
                    chunk = ids[i:i + 256]
                    params: list[Any] = []
                    for idb in chunk:
                        params += (idb, until)
                    params.append(now)
                    accepted.update(r[0] for r in conn.execute(sql.upsert_seen(len(chunk)), params))
            if w.probe:
                # Ids this spool made itself are not in `seen` (that would double the cost of every
                # send); while such a message is still stored, find it by its key instead.
                found = set()
                for r in w.inbox:
                    if r[2] in accepted and conn.execute(sql.INBOX_HAS, (r[0], r[1], r[2])).fetchone():
                        found.add(r[2])
                for r in w.delayed:
                    if r[2] in accepted and conn.execute(sql.DELAYED_HAS, (r[0], r[2])).fetchone():
                        found.add(r[2])
                for r in w.outbox:
                    if r[2] in accepted and conn.execute(sql.OUTBOX_HAS, (r[0], r[1], r[2])).fetchone():
                        found.add(r[2])
                accepted -= found
            w.dups = set(ids) - accepted


def _wait_turn(w: WriteRequest, lk: threading.Lock) -> None:
    """Wait until ``lk`` is released (``w`` committed), then wake the next sender of its batch (issue 9: woken
    all at once, a batch's senders queued for the GIL and each needed a second wake-up; in a chain, each
    finds the GIL free)."""
    try:
        lk.acquire()
    except BaseException:
        # Interrupted (a signal's handler raised): the senders after this one wait for it to pass its turn
        # on, so it still waits for its turn (the commit is under way) before the error goes up
        while True:
            try:
                lk.acquire()
                break
            except BaseException:
                continue
        raise
    finally:
        nxt = w.chain
        if nxt is not None:
            nxt.release()


class _Turn:
    """The write requests of one event-loop turn, handed to the writer thread together at its end."""

    __slots__ = ("futures", "loop", "plain", "writes")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.writes: list[WriteRequest] = []
        self.futures: list[asyncio.Future[None]] = []
        self.plain: dict[tuple[str, str | None], WriteRequest] = {}  # wait_row's shared requests, by sender


def _all_new(conn: sqlite3.Connection, ids: list[bytes], until: int, now: int) -> bool:
    """Record many ``ids`` in ``seen`` with one statement when none of them was seen (the usual
    case); ``False``, with nothing recorded, when that cannot be done or some were seen: then the
    caller finds which with ``RETURNING`` (which costs more per id than the whole upsert here)."""
    blob = sql.ids_blob(ids)
    if blob is None:
        return False
    conn.execute("SAVEPOINT seen")
    before = conn.total_changes
    conn.execute(sql.SEEN_UPSERT_IDS, (blob, until, now))
    if conn.total_changes - before == len(ids):  # every id was new (or its entry had expired)
        conn.execute("RELEASE seen")
        return True
    conn.execute("ROLLBACK TO seen")
    conn.execute("RELEASE seen")
    return False


def _dup_rows(w: WriteRequest) -> list[Any]:
    """The rows of ``w`` that were dropped as duplicates (ready or delayed)."""
    if not w.dups:
        return []
    return [r for rows in (w.inbox, w.delayed) for r in rows if r[2] in w.dups]
