"""beanstalkd protocol front-end: every beanstalkd client becomes a spoolq client.

Theory of operation
===================

A thin translator from the beanstalkd text protocol (1.12/1.13,
``doc/protocol.txt``) onto the spool. Run it standalone (``spoolq-beanstalkd``,
which takes beanstalkd's own flags) or inside ``spoolq node --beanstalk``.

Mapping
-------

==================  =========================================================
beanstalkd          spoolq
==================  =========================================================
tube                channel (names outside ``[A-Za-z0-9._-]`` are escaped, see
                    :func:`tube_channel`)
job id              the message's ``job`` number (unique in the node, never
                    reused; a fresh spool starts at 1)
put                 send (``ttr`` other than 60 is kept in the header
                    ``beanstalk-ttr``); jobs of a tube routed to a peer are
                    forwarded like any message
reserve             lease with visibility = the job's TTR
delete              ack (a reserved job) or delete (ready, delayed, buried)
release             nack with the given priority and delay
bury                dead letter with reason ``buried``
buried jobs         the dead letters of the channel, *whatever* killed them:
                    messages that used up ``max_attempts`` or their TTL show up
                    as buried jobs, and ``kick`` retries them. Releasing a job
                    that has used up its attempts answers ``BURIED``.
touch               touch (extend the lease by the TTR)
==================  =========================================================

Connections process commands strictly in order. A ``put`` is not answered at
once: every put that arrives in one event-loop turn, from any connection, is
written in **one** transaction (one sync under ``full`` durability) at the
start of the next turn, then answered. A lone client pays one sync per put,
like ``beanstalkd -f 0``; concurrent clients share them.

Leases, acks and nacks are quick, synchronous SQLite writes on the event
loop. Without a spool (``spoolq-beanstalkd`` without ``-b``) the jobs live in
memory only (:mod:`.memory`), as beanstalkd's do without ``-b``. Reserved jobs
of a connection that closes are released at once; those of a server that dies
come back when their TTR runs out. A client that
half-closes its connection gets the answers to everything it sent (a reserve
with no job ready answers ``TIMED_OUT`` at once), then the server closes it.

The spool makes a delayed message ready lazily (when its channel is leased
from, or by the periodic sweep); before stats, ``stats-job``, peeks and
``kick`` look, due delayed jobs are moved to ready, so that they show as
beanstalkd shows them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from .._bell import BellHub
from ..errors import LeaseError, SpoolqError, StorageError, StorageFull
from ..message import MAX_SECONDS
from . import stats, wire
from .counting import Counting
from .jobs import (
    DEFAULT_TTR,
    DELAY_HEADER,
    NOT_EARLY,
    TTR_HEADER,
    JobCounts,
    JobStore,
    PerJob,
    lease_ttr,
    refused_put,
    spool_seconds,
)
from .names import channel_tube, tube_channel, unwatch
from .tubes import Tubes
from .wire import DEFAULT_MAX_JOB_SIZE, yaml_list

if TYPE_CHECKING:
    from ..lease import Lease
    from ..spool import Job, Spool, Stats
    from .early import EarlyConn
    from .memory import MemLease, MemoryStore

    Reservation = Lease | MemLease

__all__ = ["Server", "channel_tube", "tube_channel"]

log = logging.getLogger("spoolq.beanstalk")

SAFETY_MARGIN: Final = 1.0
PAUSE_READING_AT: Final = 1 << 16  # bytes buffered behind a pending reply before reading pauses


# -- the server -------------------------------------------------------------------------------


class Server:
    """A beanstalkd-compatible server on top of one spool (runs in an asyncio loop)."""

    def __init__(self, spool: Spool | None, *, max_job_size: int = DEFAULT_MAX_JOB_SIZE,
                 memory: MemoryStore | None = None) -> None:
        """Serve ``spool``; or, with ``spool=None``, the jobs of ``memory`` (a server without ``-b``)."""
        self.spool = spool
        if (spool is None) == (memory is None):
            raise ValueError("serve either a spool or a memory store")
        self.store: JobStore | MemoryStore = JobStore(spool) if spool is not None else memory  # type: ignore[assignment]
        self._memory = memory
        # in memory, no other process can reach the jobs (no bells), and per-job counters are not saved
        self.hub = BellHub(spool.path / "bells") if spool is not None else None
        self._wake = self.hub.subscribe("*") if self.hub is not None else asyncio.Event()
        self._persist = spool is not None
        self.max_job_size = max_job_size
        self.conns: set[Conn] = set()
        self.waiting: set[Conn] = set()
        # plain dicts, not Counters: a Counter's "+= 1" costs three times a dict's, on every command
        self.cmds: dict[str, int] = dict.fromkeys(wire.COMMAND_NAMES.values(), 0)
        self.total_jobs = 0
        self.job_timeouts = 0
        self.total_connections = 0
        self.tube = Tubes(self.store.holds_jobs, self.tubes)
        self.counting = Counting(self.store, spool is not None, self.expire_all)  # stats: off the loop
        t = self.tube  # (its tables, under the names stats.py reads)
        self.tube_jobs, self.tube_deletes, self.tube_pauses, self.paused = t.jobs, t.deletes, t.pauses, t.paused
        self.per_job = PerJob(self.store.save_stats if spool is not None else None)
        self.jobs: dict[int, JobCounts] = self.per_job.jobs
        self.counts, self.reserved_job = self.per_job.counts, self.per_job.reserved
        self.deleted_job = self.per_job.deleted
        self.draining = False
        self.started = time.time()
        self.instance_id = os.urandom(8).hex()
        self._servers: list[asyncio.AbstractServer] = []
        self._puts: list[tuple[Conn, bytes, str, int, int, int, float]] = []
        self._flush_handle: asyncio.Handle | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    # -- life cycle ----------------------------------------------------------------------

    async def adopt(self, conns: Iterable[EarlyConn]) -> None:
        """Serve connections accepted before the server was ready (see :mod:`.early`), their early
        bytes first, as if just read; a ``reserve-with-timeout`` among them counts from its arrival."""
        loop = asyncio.get_running_loop()
        for ec in conns:
            try:
                await loop.connect_accepted_socket(functools.partial(conn_class(), self, ec.chunks), sock=ec.sock)
            except OSError:
                ec.sock.close()

    async def listen(self, sock: socket.socket) -> None:
        """Serve connections on an already bound and listening socket."""
        loop = asyncio.get_running_loop()
        cls = conn_class()
        if sock.family == socket.AF_UNIX:
            srv = await loop.create_unix_server(lambda: cls(self), sock=sock)
        else:
            srv = await loop.create_server(lambda: cls(self), sock=sock)
        self._servers.append(srv)
        if not self._tasks:
            try:
                saved = self.store.load_stats()
            except SpoolqError as e:
                log.error("the saved per-job counters could not be read (stats-job shows them from 0): %s", e)
                saved = {}
            self.per_job.load(saved)
            self._tasks = [asyncio.create_task(self._tick_loop(), name="beanstalk-ticks")]
            if self.hub is not None:
                self.hub.start()
                self.hub.listen(False)  # until a reserve waits (see add_waiter)
                self._tasks.append(asyncio.create_task(self._bell_loop(), name="beanstalk-bells"))

    async def close(self) -> None:
        """Stop serving; release the jobs reserved by connected clients."""
        for srv in self._servers:
            srv.close()
        for conn in list(self.conns):
            conn.release_all()
            if conn.transport is not None:
                conn.transport.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 2)
        if self.hub is not None:
            self.hub.close()

    async def _bell_loop(self) -> None:
        """Another process made something ready: let the waiting reservers look again."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            self.wake_waiters()

    async def _tick_loop(self) -> None:
        """Notice reservations that ran out (timeouts) and let waiters re-check twice a second."""
        while True:
            await asyncio.sleep(0.5)
            self.tick()

    def tick(self) -> None:
        """Expire reservations that ran out and pauses that ended, and let the waiters look again."""
        self.expire_all()
        if self.paused:  # (reserves take their fast path again once no pause is left)
            self.tube.end_pauses(time.monotonic())
        self.wake_waiters()

    # -- helpers ----------------------------------------------------------------------------

    def channel(self, tube: str) -> str | None:
        return self.tube.channel(tube)

    def add_waiter(self, conn: Conn) -> None:
        """``conn`` waits in a reserve. Listen to bells while anyone waits: other processes' sends
        wake it. Nobody waiting, nobody listens (this server's own puts would wake it for nothing)."""
        self.waiting.add(conn)
        if self.hub is not None:
            self.hub.listen(True)

    def remove_waiter(self, conn: Conn) -> None:
        self.waiting.discard(conn)
        if not self.waiting and self.hub is not None:
            self.hub.listen(False)

    def wake_waiters(self) -> None:
        for conn in list(self.waiting):
            conn.try_reserve()

    def tubes(self, counted: Stats | None = None) -> list[str]:
        """Existing tubes: those holding jobs, those in use by a connection, and default.

        In creation order, as beanstalkd lists them: a tube that stops existing (no job, nobody
        using or watching it) is forgotten, and comes last when it is made again. Tubes found
        only in the spool (jobs sent by other processes) are added in name order.
        """
        names = {"default", *self.tube.refs}  # (the tubes connections use or watch)
        for ch, st in (counted or self.store.stats()).channels.items():
            if st.ready + st.delayed + st.leased + st.dead:
                names.add(channel_tube(ch))
        # the counters and pauses of tubes that no longer exist go too (bounded memory: a client can
        # name any number of tubes; beanstalkd frees a tube, and its counters, the same way)
        return self.tube.prune(names)

    # -- puts: one transaction per loop turn ----------------------------------------------------

    def queue_put(self, conn: Conn, body: bytes, tube: str, pri: int, delay: int, ttr: int, age: float = 0.0) -> bool:
        """Queue a put; returns whether a flush is scheduled (if not, the caller flushes inline). ``age``:
        how long ago the put arrived, when the server read it late (while starting): its delay runs
        from its arrival."""
        self._puts.append((conn, body, tube, pri, delay, ttr, age))
        # With one client connected there is nothing to share a commit with: the parser flushes
        # at once (see Conn.process). With more, flush at the start of the next loop turn.
        if self._flush_handle is None and len(self.conns) > 1:
            self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)
        return self._flush_handle is not None

    def flush(self, inline: Conn | None = None) -> None:
        """Commit the queued puts in one transaction and answer them.

        ``inline``: called from that connection's own parsing loop, which goes
        on by itself (no ``resume``, so a long pipeline does not recurse).
        """
        self._flush_handle = None
        puts, self._puts = self._puts, []
        results = self._send([self._item(body, tube, pri, delay, ttr, age)
                              for _conn, body, tube, pri, delay, ttr, age in puts])
        for (conn, _b, tube, _p, _d, _t, _a), r in zip(puts, results, strict=True):
            self._answer_put(conn, tube, r)
            if conn is inline:
                conn.busy = False
            else:
                conn.resume()
        self.wake_waiters()

    def put_one(self, conn: Conn, body: bytes, tube: str, pri: int, delay: int, ttr: int, age: float) -> None:
        """A put with no other connection to share its commit with: written and answered now (flush's
        work for one put, without its queue)."""
        r: Any
        if delay or ttr != DEFAULT_TTR:
            r = self._send([self._item(body, tube, pri, delay, ttr, age)])[0]
        else:  # (what _item makes of it; in memory it cannot fail)
            try:
                r = self.store.put_plain(body, self.channel(tube) or "default", pri)
            except StorageError as e:
                r = refused_put(e)
        if type(r) is int:  # (_answer_put's first case)
            self.total_jobs += 1
            self.tube_jobs[tube] = self.tube_jobs.get(tube, 0) + 1
            conn.reply(b"INSERTED %d\r\n" % r)
        else:
            self._answer_put(conn, tube, r)
        if self.waiting:
            self.wake_waiters()

    def _item(self, body: bytes, tube: str, pri: int, delay: int, ttr: int,
              age: float) -> tuple[bytes, str, int, float, dict[str, str] | None]:
        """A put as the store takes it: (body, channel, priority, seconds to wait, headers)."""
        headers = {TTR_HEADER: str(ttr)} if ttr != DEFAULT_TTR else None
        if delay:
            headers = {**(headers or {}), DELAY_HEADER: str(delay)}
        wait = max(0.0, spool_seconds(delay) - age) if delay else 0.0
        return (body, self.channel(tube) or "default", pri, wait, headers)

    def _send(self, items: list[tuple[bytes, str, int, float, dict[str, str] | None]]) -> list[Any]:
        """Write the puts in one transaction: per put, its job number, an error, or the reply's word."""
        try:
            return self.store.send_jobs(items)
        except StorageError as e:
            return [refused_put(e)] * len(items)

    def _answer_put(self, conn: Conn, tube: str, r: Any) -> None:
        if isinstance(r, int):
            self.total_jobs += 1
            self.tube_jobs[tube] = self.tube_jobs.get(tube, 0) + 1
            conn.reply(wire.inserted(r))
        elif isinstance(r, SpoolqError):
            log.error("put refused: %s", r)
            conn.reply(wire.INTERNAL_ERROR)
        else:
            conn.reply(f"{r}\r\n".encode())

    # -- stats -------------------------------------------------------------------------------

    def expire_all(self) -> None:
        """Count the reservations that ran out as timeouts now (the tick would, within half a second)."""
        now = time.time()
        for conn in list(self.conns):
            conn.expire(now)

    def promote_due(self, channels: Iterable[str | None]) -> bool:
        """Make the delayed jobs of ``channels`` whose time has come ready, if there are any.

        The spool moves them lazily (on a lease from their channel, or the periodic sweep);
        beanstalkd's stats and peeks show a job ready the moment its delay is over. Returns
        whether anything was due.
        """
        try:
            return self.store.promote_due([ch for ch in channels if ch]) > 0
        except SpoolqError as e:
            log.error("moving due delayed jobs failed: %s", e)
            return False

# -- one connection ---------------------------------------------------------------------------


class Conn(asyncio.BufferedProtocol):
    """One client connection: decodes commands in order (see :mod:`.wire`) and answers them in order.

    A buffered protocol: the transport receives into one reused buffer. (A plain
    ``Protocol`` gets a fresh 256 KiB bytes object per ``recv``, which costs an
    mmap, an mremap and an munmap per command.)
    """

    def __init__(self, server: Server, early: list[tuple[float, bytes]] | None = None) -> None:
        self.server = server
        self.store = server.store
        self._early = early  # (time.monotonic() of arrival, bytes) read before the server was ready
        self._arrived: float | None = None  # arrival of the early bytes being decoded
        self.transport: asyncio.Transport | None = None
        self.decoder = wire.Decoder(server.max_job_size)
        # the decoder holds bytes or a frame under way (not decoder.idle, a property: a call per read);
        # set where the decoder's state changes, after _received's and process's work
        self._mid = False
        self._rxview = memoryview(bytearray(65536))
        self.use = "default"
        self.watch: list[str] = ["default"]
        self._watched: list[str] | None = None  # the channels of watch (while no tube is paused), kept
        self.reserved: dict[int, Reservation] = {}
        self.producer = False
        self.worker = False
        self.busy = False  # a reply is pending (a put being written, a reserve waiting)
        self.closed = False
        self._wait_until: float | None = None  # time.monotonic() at which a reserve-with-timeout gives up
        self._timer: asyncio.TimerHandle | None = None
        self._eof = False  # the client half-closed: answer what it sent, then close
        self._paused = False  # reading paused while a reply is pending and much is buffered

    # -- transport ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.conns.add(self)
        self.server.tube.ref("default")  # used
        self.server.tube.ref("default")  # and watched
        self.server.total_connections += 1
        early, self._early = self._early, None
        for arrived, data in early or ():  # before the transport reads anything new (it starts after this)
            self._arrived = arrived
            self._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        srv = self.server
        if self in srv.conns:  # (once)
            srv.conns.discard(self)
            for tube in (self.use, *self.watch):
                srv.tube.unref(tube)
        self.server.remove_waiter(self)
        if self._timer is not None:
            self._timer.cancel()
        self.release_all()

    def release_all(self) -> None:
        """Give the reserved jobs back at once (the client is gone)."""
        for lease in list(self.reserved.values()):
            with contextlib.suppress(SpoolqError):
                lease.nack(0)
        if self.reserved:
            self.reserved.clear()
            self.server.wake_waiters()

    def reply(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._rxview

    def buffer_updated(self, nbytes: int) -> None:
        """Bytes read into the buffer (asyncio's loop; under uvloop, see :class:`StreamConn`)."""
        self._arrived = None
        if self.busy or self._mid:
            self._received(self._rxview[:nbytes])
            return
        data = bytes(self._rxview[:nbytes])
        if not self._fast(data):
            self._received(data)

    def data_received(self, data: bytes) -> None:  # type: ignore[override]
        """Bytes read (uvloop calls this of a plain protocol, :class:`StreamConn`, with a bytes object)."""
        self._arrived = None
        if self.busy or self._mid or not self._fast(data):
            self._received(data)

    def _fast(self, data: bytes) -> bool:
        """One whole put, reserve or delete read on its own (what a client waiting for each answer sends),
        without the decoder or the event objects, by the same handlers (see wire.fast_command, which
        takes the same frames). False: not one of those, nothing done."""
        srv = self.server
        first = data[:1]
        try:
            if first == b"p":
                m = _FAST_PUT(data)
                if m is None:
                    return False
                start = m.end()
                size = int(m[4])
                if size > srv.max_job_size or len(data) != start + size + 2 or data[-2:] != b"\r\n":
                    return False
                srv.cmds["put"] += 1
                self.producer = True
                ttr = int(m[3])
                if srv.draining or srv._puts or (srv._persist and len(srv.conns) > 1):
                    self._put(data[start:start + size], int(m[1]), int(m[2]), ttr if ttr > 0 else 1)
                else:  # what _put does with it (read now: no age)
                    srv.put_one(self, data[start:start + size], self.use, int(m[1]), int(m[2]), ttr if ttr > 0 else 1,
                                0.0)
            elif first == b"r":
                if data != b"reserve\r\n":
                    return False
                srv.cmds["reserve"] += 1
                self._start_wait(None)
            elif data[:7] == b"delete " and 9 < len(data) < 28 and data[-2:] == b"\r\n" and data[7:-2].isdigit():
                srv.cmds["delete"] += 1  # (at most 18 digits: a job number the spool can hold)
                self._delete(int(data[7:-2]))
            else:
                return False
        except SpoolqError as e:  # as in _process
            log.error("beanstalk command %r failed: %s", data[:40], e)
            self.reply(wire.OUT_OF_MEMORY if isinstance(e, StorageFull) else wire.INTERNAL_ERROR)
            self.busy = False
        return True

    def _received(self, data: bytes | memoryview) -> None:
        """Bytes read, through the decoder."""
        try:
            self.decoder.receive_data(data)
        except wire.WireError as e:  # cannot happen while reading pauses below; never grow without bound
            log.error("beanstalk connection dropped: %s", e)
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            return
        if not self.busy:
            self.process()
        else:
            self._mid = not self.decoder.idle
            if self.decoder.buffered > PAUSE_READING_AT and self.transport is not None:
                self.transport.pause_reading()  # a reply is pending: do not buffer without bound
                self._paused = True

    def eof_received(self) -> bool | None:
        """The client sent all it will: answer every command it sent (in order), then close."""
        self._eof = True
        if self.busy and self in self.server.waiting:  # half-closed while waiting: TIMED_OUT
            self._finish_wait(wire.TIMED_OUT)
        elif not self.busy:
            self.process()
        return True  # keep the transport open for the replies; process() closes it when all are sent

    def resume(self) -> None:
        self.busy = False
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()
        if (self.decoder.buffered or self._eof) and not self.closed:
            self.process()

    # -- dispatch ----------------------------------------------------------------------

    def process(self) -> None:
        self._process()
        self._mid = not self.decoder.idle
        if self._eof and not self.busy and not self.closed and self.transport is not None:
            self.closed = True  # nothing more will come: what is left in the buffer is an incomplete command
            self.transport.close()  # (the replies already written are sent first)

    def _process(self) -> None:
        decoder = self.decoder
        while not self.busy and not self.closed:
            ev = decoder.next_event()
            if ev is None:
                return
            try:
                self.handle(ev)
            except SpoolqError as e:  # the spool failed under us: tell the client, keep serving
                log.error("beanstalk command %r failed: %s", ev, e)
                self.reply(wire.OUT_OF_MEMORY if isinstance(e, StorageFull) else wire.INTERNAL_ERROR)
                self.busy = False

    def handle(self, ev: wire.Event) -> None:
        """Carry out one decoded command."""
        name = ev.counted if isinstance(ev, wire.BadFormat) else wire.COMMAND_NAMES.get(type(ev))
        if name:
            cmds = self.server.cmds
            cmds[name] = cmds.get(name, 0) + 1
        handler = _HANDLERS.get(type(ev))
        if handler is not None:
            handler(self, ev)
        else:
            self.reply(wire.ERROR_REPLIES[type(ev)])

    # -- producer commands --------------------------------------------------------------

    def c_put_start(self, ev: wire.PutStart) -> None:
        if not ev.too_big:
            self.producer = True

    def c_put(self, ev: wire.Put) -> None:
        self._put(ev.body, ev.pri, ev.delay, ev.ttr)

    def _put(self, body: bytes, pri: int, delay: int, ttr: int) -> None:
        srv = self.server
        if srv.draining:
            self.reply(wire.DRAINING)
            return
        age = 0.0 if self._arrived is None else max(0.0, time.monotonic() - self._arrived)
        if not srv._puts and (not srv._persist or len(srv.conns) <= 1):  # no commit to share: now
            srv.put_one(self, body, self.use, pri, delay, ttr, age)
            return
        self.busy = True
        if not srv.queue_put(self, body, self.use, pri, delay, ttr, age):
            srv.flush(inline=self)  # alone on the server: commit and answer now, then go on

    def c_use(self, ev: wire.Use) -> None:
        if ev.tube != self.use:
            self.server.tube.ref(ev.tube)
            self.server.tube.unref(self.use)
        self.use = ev.tube
        self.reply(wire.using(ev.tube))

    # -- worker commands -----------------------------------------------------------------

    def c_reserve(self, ev: wire.Reserve) -> None:
        self._start_wait(None)

    def c_reserve_with_timeout(self, ev: wire.ReserveWithTimeout) -> None:
        self._start_wait(float(min(ev.timeout, MAX_SECONDS)) if ev.timeout >= 0 else None)

    def _start_wait(self, timeout: float | None) -> None:
        self.worker = True
        if not self.reserved and not self.server.paused:  # a job at once: none of the wait's bookkeeping
            lease, _ = self.store.lease_any(self._watched or self._channels())  # (with reservations,
            if lease is not None:                                              # deadlines matter first)
                job = lease.job
                self.reserved[job] = lease
                if job in self.server.jobs:
                    self.server.reserved_job(job)
                if self.transport is not None and not self.closed:
                    self.transport.write(b"RESERVED %d %d\r\n%s\r\n" % (job, len(lease.body), lease.body))
                return
        self.busy = True
        if timeout is None:
            self._wait_until = None
        else:
            # not loop.time(): uvloop's is whole ms from the loop's wake-up, so the wait could end ~1 ms early
            start = time.monotonic()
            if self._arrived is not None:  # read before the server was ready: count from its arrival
                start = min(start, self._arrived)
            self._wait_until = start + timeout
        # A first look without listening to bells (turning that on and off costs system calls); only
        # if nothing is there, listen, then look again, so that no ring is missed.
        self.server.waiting.add(self)
        self.try_reserve()
        if self in self.server.waiting:
            self.server.add_waiter(self)
            self.try_reserve()

    def _got(self, lease: Reservation) -> bytes:
        """Hold ``lease`` (a reserve found its job); the reply that says so."""
        self.reserved[lease.job] = lease
        self.server.reserved_job(lease.job)
        return wire.reserved(lease.job, lease.body)

    def _channels(self) -> list[str]:
        srv = self.server
        paused = srv.paused
        if not paused:
            chans = self._watched
            if chans is None:
                chans = self._watched = [ch for ch in map(srv.channel, self.watch) if ch is not None]
            return chans
        now = time.monotonic()
        out = []
        for tube in self.watch:
            if paused and paused.get(tube, (0.0, 0))[0] > now:
                continue
            ch = srv.channel(tube)
            if ch is not None:
                out.append(ch)
        return out

    def try_reserve(self) -> None:
        """Look for a job for a waiting reserve; answer, or sleep until something may change."""
        if self not in self.server.waiting or self.closed:
            return
        now = time.time()
        self.expire(now)
        lease, when = self.store.lease_any(self._channels())
        if lease is not None:
            self._finish_wait(self._got(lease))
            return
        soonest = min((x.deadline for x in self.reserved.values()), default=None)
        if soonest is not None:  # the deadline the client was given: a spool's lease ends NOT_EARLY after it
            soonest -= SAFETY_MARGIN + (NOT_EARLY if self.server.spool is not None else 0.0)
        if soonest is not None and now >= soonest:
            self._finish_wait(wire.DEADLINE_SOON)
            return
        loop = asyncio.get_running_loop()
        if self._eof or (self._wait_until is not None and time.monotonic() >= self._wait_until):
            self._finish_wait(wire.TIMED_OUT)
            return
        # sleep until the earliest moment the answer could change
        at: list[float] = []
        if when is not None:
            at.append(loop.time() + max(0.0, when - time.time()))
        if soonest is not None:
            at.append(loop.time() + max(0.0, soonest - time.time()))
        if self._wait_until is not None:  # (a timer that fires early finds it not yet due, and sleeps again)
            at.append(loop.time() + (self._wait_until - time.monotonic()))
        mono = time.monotonic()
        for tube in self.watch:
            until = self.server.paused.get(tube, (0.0, 0))[0]
            if until > mono:
                at.append(loop.time() + (until - mono))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if at:
            self._timer = loop.call_at(min(at) + 0.0005, self.try_reserve)

    def _finish_wait(self, reply: bytes) -> None:
        self.server.remove_waiter(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.reply(reply)
        self.resume()

    def expire(self, now: float) -> None:
        """Forget reservations whose TTR ran out: they timed out (the job is ready again)."""
        if not self.reserved:
            return
        for job, lease in list(self.reserved.items()):
            if lease.deadline <= now:
                del self.reserved[job]
                self.server.job_timeouts += 1
                self.server.counts(job, lease.attempts).timeouts += 1

    def _held(self, job: int) -> Reservation | None:
        self.expire(time.time())
        return self.reserved.get(job)

    def _take(self, job: int) -> Reservation | None:
        """This connection's reservation of ``job``, taken out of its table (NOT_FOUND if none)."""
        lease = self._held(job)
        if lease is None:
            self.reply(wire.NOT_FOUND)
            return None
        del self.reserved[job]
        return lease

    def c_reserve_job(self, ev: wire.ReserveJob) -> None:
        job = ev.job
        if job in self.reserved:
            self.reply(wire.NOT_FOUND)
            return
        lease = self.store.lease_job(job)
        if lease is None:
            self.reply(wire.NOT_FOUND)
            return
        self.worker = True
        self.reply(self._got(lease))

    def c_delete(self, ev: wire.Delete) -> None:
        self._delete(ev.job)

    def _delete(self, job: int) -> None:
        reserved = self.reserved
        if reserved:
            self.expire(time.time())
        lease = reserved.get(job)
        tube = None
        if lease is not None:
            try:
                lease.ack()
                tube = channel_tube(lease.channel)
            except LeaseError:
                pass
            del self.reserved[job]
        else:  # looked up off the loop (a scan), then deleted by its key

            def delete(found: Job | None) -> None:
                ok = found is not None and found.state != "reserved" and self.store.delete_job(job, found)
                self._deleted(job, channel_tube(found.channel) if ok and found is not None else None)

            self._in_thread(lambda: self.store.find_job(job), delete)
            return
        self._deleted(job, tube)

    def _deleted(self, job: int, tube: str | None) -> None:
        if tube is None:
            self.reply(wire.NOT_FOUND)
            return
        srv = self.server
        srv.tube_deletes[tube] = srv.tube_deletes.get(tube, 0) + 1
        if job in srv.jobs:
            srv.deleted_job(job)
        self.reply(wire.DELETED)

    def c_release(self, ev: wire.Release) -> None:
        job, pri, delay = ev.job, ev.pri, ev.delay
        lease = self._take(job)
        if lease is None:
            return
        try:
            requeued = lease.nack(spool_seconds(delay), priority=pri)
        except LeaseError:
            self.reply(wire.NOT_FOUND)
            return
        counts = self.server.counts(job, lease.attempts)
        counts.releases += 1
        counts.delay = delay
        if requeued:
            self.reply(wire.RELEASED)
        else:  # attempts used up: it is a dead letter now, which is a buried job
            counts.buries += 1
            self.reply(wire.BURIED)
        self.server.wake_waiters()

    def c_bury(self, ev: wire.Bury) -> None:
        job, pri = ev.job, ev.pri
        lease = self._take(job)
        if lease is None:
            return
        try:
            lease.dead("buried by a beanstalkd client", reason="buried", priority=pri)
        except LeaseError:
            self.reply(wire.NOT_FOUND)
            return
        self.server.counts(job, lease.attempts).buries += 1
        self.reply(wire.BURIED)

    def c_touch(self, ev: wire.Touch) -> None:
        job = ev.job
        lease = self._held(job)
        if lease is None:
            self.reply(wire.NOT_FOUND)
            return
        try:
            lease.touch(min(lease_ttr(lease), MAX_SECONDS))
        except LeaseError:
            del self.reserved[job]
            self.reply(wire.NOT_FOUND)
            return
        self.reply(wire.TOUCHED)

    def c_watch(self, ev: wire.Watch) -> None:
        name = ev.tube
        if name not in self.watch:
            self.server.tube.ref(name)
            self.watch.append(name)
            self._watched = None
        self.reply(wire.watching(len(self.watch)))

    def c_ignore(self, ev: wire.Ignore) -> None:
        name = ev.tube
        if name in self.watch:
            if len(self.watch) == 1:
                self.reply(wire.NOT_IGNORED)
                return
            unwatch(self.watch, name)
            self.server.tube.unref(name)
            self._watched = None
        self.reply(wire.watching(len(self.watch)))

    # -- other commands ------------------------------------------------------------------

    def _found(self, job: Job | None) -> None:
        if job is None:
            self.reply(wire.NOT_FOUND)
        else:
            self.reply(wire.found(job.job, job.body))

    def c_peek(self, ev: wire.Peek) -> None:
        self._in_thread(lambda: self.store.find_job(ev.job), self._found)

    def _in_thread(self, work: Callable[[], Any], answer: Callable[[Any], None]) -> None:
        """``answer(work())``, with ``work`` (a look-up by job number: it scans the spool, its time grows
        with the queue) in a worker thread; this connection's later commands wait, the others do not."""
        if self.server.spool is None:  # in memory: a dict look-up
            answer(work())
            return
        self.busy = True

        def done(fut: asyncio.Future[Any]) -> None:
            if self.closed or fut.cancelled():
                return
            try:
                answer(fut.result())  # (its own write, a delete's, may fail too)
            except SpoolqError as e:
                log.error("beanstalk look-up failed: %s", e)
                self.reply(wire.OUT_OF_MEMORY if isinstance(e, StorageFull) else wire.INTERNAL_ERROR)
            self.resume()

        asyncio.get_running_loop().run_in_executor(None, work).add_done_callback(done)

    def c_peek_ready(self, ev: wire.PeekReady) -> None:
        ch = self.server.channel(self.use)
        self.server.promote_due([ch])
        got = self.store.peek_ready(ch) if ch else None
        if got is None:
            self.reply(wire.NOT_FOUND)
            return
        self.reply(wire.found(*got))

    def c_peek_delayed(self, ev: wire.PeekDelayed) -> None:
        ch = self.server.channel(self.use)
        self.server.promote_due([ch])
        self._found(self.store.peek_delayed(ch) if ch else None)

    def c_peek_buried(self, ev: wire.PeekBuried) -> None:
        ch = self.server.channel(self.use)
        self._found(self.store.peek_buried(ch) if ch else None)

    def c_kick(self, ev: wire.Kick) -> None:
        bound = ev.bound
        ch = self.server.channel(self.use)
        if not ch or not bound:
            self.reply(wire.kicked(0))
            return
        self.server.promote_due([ch])  # a job whose delay is over is ready: not kicked
        jobs = self.store.kick_jobs(ch, bound)
        for job in jobs:
            self.server.counts(job).kicks += 1
        self.reply(wire.kicked(len(jobs)))
        if jobs:
            self.server.wake_waiters()

    def c_kick_job(self, ev: wire.KickJob) -> None:
        job = ev.job
        if self.store.kick_job(job):
            self.server.counts(job).kicks += 1
            self.reply(wire.KICKED)
            self.server.wake_waiters()
        else:
            self.reply(wire.NOT_FOUND)

    def c_stats_job(self, ev: wire.StatsJob) -> None:
        job = ev.job
        self.server.expire_all()

        def work() -> Job | None:
            found = self.store.find_job(job)
            if found is not None and found.state == "delayed" and self.server.promote_due([found.channel]):
                found = self.store.find_job(job)
            return found

        self._in_thread(work, lambda found: self._ok(stats.job_yaml(self.server, found)) if found is not None
                        else self.reply(wire.NOT_FOUND))

    def _counted(self, answer: Callable[[Stats], None]) -> None:
        """Answer with the spool's counts, taken off the event loop (see :mod:`.counting`); this
        connection's later commands wait, the other connections do not. In memory: answered at once
        (no busy and resume: a pipeline of them would nest a call per command)."""
        if self.server.spool is not None:
            self.busy = True

        def done(counted: Stats | None) -> None:
            if not self.closed:
                if counted is None:
                    self.reply(wire.INTERNAL_ERROR)
                else:
                    answer(counted)
                if self.busy:
                    self.resume()

        self.server.counting.then(done)

    def c_stats_tube(self, ev: wire.StatsTube) -> None:
        def answer(counted: Stats) -> None:
            data = stats.tube_yaml(self.server, ev.tube, counted)
            self.reply(wire.NOT_FOUND) if data is None else self._ok(data)

        self._counted(answer)

    def c_stats(self, ev: wire.Stats) -> None:
        self._counted(lambda counted: self._ok(stats.server_yaml(self.server, counted)))

    def c_list_tubes(self, ev: wire.ListTubes) -> None:
        self._counted(lambda counted: self._ok(yaml_list(self.server.tubes(counted))))

    def c_list_tube_used(self, ev: wire.ListTubeUsed) -> None:
        self.reply(wire.using(self.use))

    def c_list_tubes_watched(self, ev: wire.ListTubesWatched) -> None:
        self._ok(yaml_list(self.watch))

    def c_pause_tube(self, ev: wire.PauseTube) -> None:
        name, delay = ev.tube, ev.delay
        srv = self.server

        def answer(counted: Stats) -> None:
            if name not in srv.tubes(counted):
                self.reply(wire.NOT_FOUND)
                return
            srv.paused[name] = (time.monotonic() + delay, delay)
            srv.tube_pauses[name] = srv.tube_pauses.get(name, 0) + 1
            self.reply(wire.PAUSED)
            srv.wake_waiters()  # waiters re-plan their sleep around the pause

        self._counted(answer)

    def c_quit(self, ev: wire.Quit) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- helpers ---------------------------------------------------------------------------

    def _ok(self, data: bytes) -> None:
        self.reply(wire.ok(data))


class StreamConn(Conn, asyncio.Protocol):
    """A :class:`Conn` that uvloop treats as a plain protocol: it reads into its own buffer and hands
    ``data_received`` a bytes object of what was read (one call from the loop per read, where a
    buffered protocol costs two, ``get_buffer`` and ``buffer_updated``, and a copy out of the view).
    asyncio's own loop would allocate 256 KiB per read for a plain protocol: it gets :class:`Conn`."""


def conn_class() -> type[Conn]:
    """The connection class for the running loop (see :class:`StreamConn`)."""
    return StreamConn if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else Conn


_FAST_PUT: Final = wire.FAST_PUT.match

_HANDLERS: Final[dict[type, Callable[[Conn, Any], None]]] = {
    wire.PutStart: Conn.c_put_start, wire.Put: Conn.c_put, wire.Use: Conn.c_use,
    wire.Reserve: Conn.c_reserve, wire.ReserveWithTimeout: Conn.c_reserve_with_timeout,
    wire.ReserveJob: Conn.c_reserve_job, wire.Delete: Conn.c_delete, wire.Release: Conn.c_release,
    wire.Bury: Conn.c_bury, wire.Touch: Conn.c_touch, wire.Watch: Conn.c_watch, wire.Ignore: Conn.c_ignore,
    wire.Peek: Conn.c_peek, wire.PeekReady: Conn.c_peek_ready, wire.PeekDelayed: Conn.c_peek_delayed,
    wire.PeekBuried: Conn.c_peek_buried, wire.Kick: Conn.c_kick, wire.KickJob: Conn.c_kick_job,
    wire.StatsJob: Conn.c_stats_job, wire.StatsTube: Conn.c_stats_tube, wire.Stats: Conn.c_stats,
    wire.ListTubes: Conn.c_list_tubes, wire.ListTubeUsed: Conn.c_list_tube_used,
    wire.ListTubesWatched: Conn.c_list_tubes_watched, wire.PauseTube: Conn.c_pause_tube, wire.Quit: Conn.c_quit,
}
