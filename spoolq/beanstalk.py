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
loop. Reserved jobs of a connection that closes are released at once; those
of a server that dies come back when their TTR runs out. A client that
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
import logging
import os
import platform
import re
import resource
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from ._bell import BellHub
from .errors import LeaseError, SpoolqError, StorageError, StorageFull
from .message import CHANNEL_RE, MAX_SECONDS

if TYPE_CHECKING:
    from .lease import Lease
    from .spool import Job, Spool

__all__ = ["Server", "tube_channel", "channel_tube", "run_standalone"]

log = logging.getLogger("spoolq.beanstalk")

LINE_MAX: Final = 224  # beanstalkd's command buffer, "\r\n" included
NAME_MAX: Final = 200
DEFAULT_TTR: Final = 60
DEFAULT_MAX_JOB_SIZE: Final = (1 << 16) - 1
TTR_HEADER: Final = "beanstalk-ttr"
SAFETY_MARGIN: Final = 1.0
U32: Final = (1 << 32) - 1
U64: Final = (1 << 64) - 1
I64: Final = (1 << 63) - 1  # the largest job number SQLite can hold
INT_MAX: Final = (1 << 31) - 1
NAME_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+/;.$_()")
ESCAPE_PREFIX: Final = "bt_"

_hdr_dec = msgspec.msgpack.Decoder(dict[str, str])
_PUT = re.compile(r" *([0-9]+) +([0-9]+) +([0-9]+) +([0-9]+)")


# -- names ---------------------------------------------------------------------------------


def valid_tube(name: str) -> bool:
    return 0 < len(name) <= NAME_MAX and name[0] != "-" and all(c in NAME_CHARS for c in name)


def tube_channel(tube: str) -> str | None:
    """The channel holding a tube's jobs, or ``None`` if it cannot be named.

    Tube names that are channel names are used as they are. Others (with
    ``+ / ; $ ( )``) become ``bt_`` followed by the name with each such
    character written ``_XX`` (hex); a plain channel whose name looks like
    that would be shown as the decoded tube.
    """
    if CHANNEL_RE.fullmatch(tube):
        return tube
    out = ESCAPE_PREFIX + "".join(c if c.isalnum() or c in ".-" else f"_{ord(c):02x}" for c in tube)
    return out if len(out) <= NAME_MAX else None


def channel_tube(channel: str) -> str:
    """The tube name a channel is shown as (the inverse of :func:`tube_channel`)."""
    if not channel.startswith(ESCAPE_PREFIX):
        return channel
    rest = channel[len(ESCAPE_PREFIX):]
    out = []
    i = 0
    try:
        while i < len(rest):
            if rest[i] == "_":
                out.append(chr(int(rest[i + 1:i + 3], 16)))
                i += 3
            else:
                out.append(rest[i])
                i += 1
    except ValueError:
        return channel
    tube = "".join(out)
    # only what tube_channel would have made decodes; anything else is a plain channel name
    return tube if valid_tube(tube) and tube_channel(tube) == channel else channel


# -- numbers, the way beanstalkd reads them ------------------------------------------------


def _num(s: str, limit: int, *, last: bool) -> tuple[int, str]:
    """Read a decimal after optional spaces. ``last``: nothing may follow. Raises ValueError."""
    i = 0
    while i < len(s) and s[i] == " ":
        i += 1
    j = i
    while j < len(s) and "0" <= s[j] <= "9":
        j += 1
    if j == i:
        raise ValueError
    v = int(s[i:j])
    if v > limit or (last and j != len(s)):
        raise ValueError
    return v, s[j:]


def _job_id(s: str, *, last: bool) -> tuple[int, str]:
    """A job id (u64). Ids beyond what the spool can store belong to no job: they read as 0 (never a job)."""
    job, rest = _num(s, U64, last=last)
    return (job if job <= I64 else 0), rest


def _seconds(n: int) -> float:
    """A beanstalkd duration (u32 seconds) as the spool takes it (at most MAX_SECONDS, about 30 years)."""
    return float(min(n, MAX_SECONDS))


def _ttr_of(headers: bytes | None) -> float | None:
    if not headers:
        return None
    try:
        v = _hdr_dec.decode(headers).get(TTR_HEADER)
        return float(v) if v is not None else None
    except (msgspec.DecodeError, ValueError):
        return None


def _yaml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _JobCounts:
    __slots__ = ("buries", "delay", "kicks", "releases", "timeouts")

    def __init__(self) -> None:
        self.releases = self.buries = self.kicks = self.timeouts = 0
        self.delay = -1  # -1: the delay given at put (not known here)


# -- the server -------------------------------------------------------------------------------


class Server:
    """A beanstalkd-compatible server on top of one spool (runs in an asyncio loop)."""

    def __init__(self, spool: Spool, *, max_job_size: int = DEFAULT_MAX_JOB_SIZE) -> None:
        self.spool = spool
        self.max_job_size = max_job_size
        self.conns: set[Conn] = set()
        self.waiting: set[Conn] = set()
        self.cmds: Counter[str] = Counter()
        self.total_jobs = 0
        self.job_timeouts = 0
        self.total_connections = 0
        self.tube_jobs: Counter[str] = Counter()
        self.tube_deletes: Counter[str] = Counter()
        self.tube_pauses: Counter[str] = Counter()
        self.paused: dict[str, tuple[float, int]] = {}  # tube -> (until, seconds)
        self.jobs: dict[int, _JobCounts] = {}
        self.draining = False
        self.started = time.time()
        self.instance_id = os.urandom(8).hex()
        self.hub = BellHub(spool.path / "bells")
        self._wake = self.hub.subscribe("*")
        self._servers: list[asyncio.AbstractServer] = []
        self._puts: list[tuple[Conn, bytes, str, int, int, int]] = []
        self._flush_handle: asyncio.Handle | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._channels: dict[str, str | None] = {}

    # -- life cycle ----------------------------------------------------------------------

    async def listen(self, sock: socket.socket) -> None:
        """Serve connections on an already bound and listening socket."""
        loop = asyncio.get_running_loop()
        if sock.family == socket.AF_UNIX:
            srv = await loop.create_unix_server(lambda: Conn(self), sock=sock)
        else:
            srv = await loop.create_server(lambda: Conn(self), sock=sock)
        self._servers.append(srv)
        if not self._tasks:
            self.hub.start()
            self.hub.listen(False)  # until a reserve waits (see add_waiter)
            self._tasks = [asyncio.create_task(self._bell_loop(), name="beanstalk-bells"),
                           asyncio.create_task(self._tick_loop(), name="beanstalk-ticks")]

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
            now = time.time()
            for conn in list(self.conns):
                conn.expire(now)
            self.wake_waiters()

    # -- helpers ----------------------------------------------------------------------------

    def channel(self, tube: str) -> str | None:
        ch = self._channels.get(tube, "")
        if ch == "":
            ch = self._channels[tube] = tube_channel(tube)
        return ch

    def counts(self, job: int) -> _JobCounts:
        c = self.jobs.get(job)
        if c is None:
            c = self.jobs[job] = _JobCounts()
        return c

    def add_waiter(self, conn: Conn) -> None:
        """``conn`` waits in a reserve. Listen to bells while anyone waits: other processes' sends
        wake it. Nobody waiting, nobody listens (this server's own puts would wake it for nothing)."""
        self.waiting.add(conn)
        self.hub.listen(True)

    def remove_waiter(self, conn: Conn) -> None:
        self.waiting.discard(conn)
        if not self.waiting:
            self.hub.listen(False)

    def wake_waiters(self) -> None:
        for conn in list(self.waiting):
            conn.try_reserve()

    def tubes(self) -> list[str]:
        """Existing tubes: those holding jobs, those in use by a connection, and default."""
        names = {"default"}
        for conn in self.conns:
            names.add(conn.use)
            names.update(conn.watch)
        for ch, st in self.spool.stats().channels.items():
            if st.ready + st.delayed + st.leased + st.dead:
                names.add(channel_tube(ch))
        return sorted(names)

    # -- puts: one transaction per loop turn ----------------------------------------------------

    def queue_put(self, conn: Conn, body: bytes, tube: str, pri: int, delay: int, ttr: int) -> None:
        self._puts.append((conn, body, tube, pri, delay, ttr))
        # With one client connected there is nothing to share a commit with: the parser flushes
        # at once (see _process). With more, flush at the start of the next loop turn.
        if self._flush_handle is None and len(self.conns) > 1:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self, inline: Conn | None = None) -> None:
        """Commit the queued puts in one transaction and answer them.

        ``inline``: called from that connection's own parsing loop, which goes
        on by itself (no ``resume``, so a long pipeline does not recurse).
        """
        self._flush_handle = None
        puts, self._puts = self._puts, []
        items = []
        for _conn, body, tube, pri, delay, ttr in puts:
            headers = {TTR_HEADER: str(ttr)} if ttr != DEFAULT_TTR else None
            items.append((body, self.channel(tube) or "default", pri, _seconds(delay), headers))
        try:
            results: list[Any] = self.spool.jobs.put(items)
        except StorageFull as e:
            log.error("put refused: %s", e)
            results = ["OUT_OF_MEMORY"] * len(puts)
        except StorageError as e:
            log.error("put failed: %s", e)
            results = ["INTERNAL_ERROR"] * len(puts)
        for (conn, _b, tube, _p, delay, _t), r in zip(puts, results, strict=True):
            if isinstance(r, int):
                job = r
                self.total_jobs += 1
                self.tube_jobs[tube] += 1
                if delay:
                    self.counts(job).delay = delay
                conn.reply(f"INSERTED {job}\r\n".encode())
            elif isinstance(r, SpoolqError):
                log.error("put refused: %s", r)
                conn.reply(b"INTERNAL_ERROR\r\n")
            else:
                conn.reply(f"{r}\r\n".encode())
            if conn is inline:
                conn.busy = False
            else:
                conn.resume()
        self.wake_waiters()

    # -- stats -------------------------------------------------------------------------------

    def expire_all(self) -> None:
        """Count the reservations that ran out as timeouts now (the tick would, within half a second)."""
        now = time.time()
        for conn in self.conns:
            conn.expire(now)

    def promote_due(self, channels: Iterable[str | None]) -> bool:
        """Make the delayed jobs of ``channels`` whose time has come ready, if there are any.

        The spool moves them lazily (on a lease from their channel, or the periodic sweep);
        beanstalkd's stats and peeks show a job ready the moment its delay is over. Returns
        whether anything was due.
        """
        try:
            return self.spool.jobs.promote_due([ch for ch in channels if ch]) > 0
        except SpoolqError as e:
            log.error("moving due delayed jobs failed: %s", e)
            return False

    def stats_yaml(self) -> bytes:
        self.expire_all()
        st = self.spool.stats().channels
        if self.promote_due(ch for ch, x in st.items() if x.delayed):
            st = self.spool.stats().channels
        ru = resource.getrusage(resource.RUSAGE_SELF)
        uname = platform.uname()
        c = self.cmds
        total = {k: sum(getattr(x, k) for x in st.values()) for k in ("urgent", "ready", "leased", "delayed", "dead")}
        lines = [
            ("current-jobs-urgent", total["urgent"]), ("current-jobs-ready", total["ready"]),
            ("current-jobs-reserved", total["leased"]), ("current-jobs-delayed", total["delayed"]),
            ("current-jobs-buried", total["dead"]),
            *((f"cmd-{k}", c[k]) for k in (
                "put", "peek", "peek-ready", "peek-delayed", "peek-buried", "reserve", "reserve-with-timeout",
                "delete", "release", "use", "watch", "ignore", "bury", "kick", "touch", "stats", "stats-job",
                "stats-tube", "list-tubes", "list-tube-used", "list-tubes-watched", "pause-tube")),
            ("job-timeouts", self.job_timeouts), ("total-jobs", self.total_jobs),
            ("max-job-size", self.max_job_size), ("current-tubes", len(self.tubes())),
            ("current-connections", len(self.conns)),
            ("current-producers", sum(1 for x in self.conns if x.producer)),
            ("current-workers", sum(1 for x in self.conns if x.worker)),
            ("current-waiting", len(self.waiting)), ("total-connections", self.total_connections),
            ("pid", os.getpid()), ("version", _yaml_str(f"1.13+spoolq.{_version()}")),
            ("rusage-utime", f"{ru.ru_utime:.6f}"), ("rusage-stime", f"{ru.ru_stime:.6f}"),
            ("uptime", int(time.time() - self.started)),
            ("binlog-oldest-index", 0), ("binlog-current-index", 0), ("binlog-records-migrated", 0),
            ("binlog-records-written", 0), ("binlog-max-size", 10485760),
            ("draining", "true" if self.draining else "false"), ("id", self.instance_id),
            ("hostname", _yaml_str(uname.node)), ("os", _yaml_str(uname.release)),
            ("platform", _yaml_str(uname.machine)),
        ]
        return _yaml(lines)

    def stats_tube_yaml(self, tube: str) -> bytes | None:
        if tube not in self.tubes():
            return None
        ch = self.channel(tube)
        self.expire_all()
        self.promote_due([ch])
        st = self.spool.stats().channels.get(ch or "")
        now = time.monotonic()
        until, secs = self.paused.get(tube, (0.0, 0))
        paused = until > now
        left = int(until - now) if paused else 0
        lines = [
            ("name", _yaml_str(tube)),
            ("current-jobs-urgent", st.urgent if st else 0), ("current-jobs-ready", st.ready if st else 0),
            ("current-jobs-reserved", st.leased if st else 0), ("current-jobs-delayed", st.delayed if st else 0),
            ("current-jobs-buried", st.dead if st else 0), ("total-jobs", self.tube_jobs[tube]),
            ("current-using", sum(1 for x in self.conns if x.use == tube)),
            ("current-watching", sum(1 for x in self.conns if tube in x.watch)),
            ("current-waiting", sum(1 for x in self.waiting if tube in x.watch)),
            ("cmd-delete", self.tube_deletes[tube]), ("cmd-pause-tube", self.tube_pauses[tube]),
            ("pause", secs if paused else 0), ("pause-time-left", left),
        ]
        return _yaml(lines)

    def stats_job_yaml(self, job: Job) -> bytes:
        now = time.time()
        counts = self.jobs.get(job.job) or _JobCounts()
        ttr = _ttr_of_job(job)
        if job.state in ("reserved", "delayed") and job.due is not None:
            left = max(0, int(job.due - now))
        else:
            left = 0
        delay = counts.delay if counts.delay >= 0 else 0
        lines = [
            ("id", job.job), ("tube", _yaml_str(channel_tube(job.channel))), ("state", job.state),
            ("pri", job.priority), ("age", max(0, int(now - job.created_at))), ("delay", delay), ("ttr", ttr),
            ("time-left", left), ("file", 0), ("reserves", job.attempts), ("timeouts", counts.timeouts),
            ("releases", counts.releases), ("buries", counts.buries), ("kicks", counts.kicks),
        ]
        return _yaml(lines)


def _ttr_of_job(job: Job) -> int:
    v = job.headers.get(TTR_HEADER)
    try:
        return int(v) if v is not None else DEFAULT_TTR
    except ValueError:
        return DEFAULT_TTR


def _yaml(pairs: list[tuple[str, Any]]) -> bytes:
    return ("---\n" + "".join(f"{k}: {v}\n" for k, v in pairs)).encode()


def _yaml_list(items: list[str]) -> bytes:
    return ("---\n" + "".join(f"- {x}\n" for x in items)).encode()


def _version() -> str:
    from . import __version__

    return __version__


# -- one connection ---------------------------------------------------------------------------


class Conn(asyncio.BufferedProtocol):
    """One client connection: parses commands in order and answers them in order.

    A buffered protocol: the transport receives into one reused buffer. (A plain
    ``Protocol`` gets a fresh 256 KiB bytes object per ``recv``, which costs an
    mmap, an mremap and an munmap per command.)
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self._rxview = memoryview(bytearray(65536))
        self.use = "default"
        self.watch: list[str] = ["default"]
        self.reserved: dict[int, Lease] = {}
        self.producer = False
        self.worker = False
        self.busy = False  # a reply is pending (a put being written, a reserve waiting)
        self.closed = False
        self._body: tuple[int, int, int, int] | None = None  # (pri, delay, ttr, size) of a put
        self._skip = 0  # body bytes still to throw away (JOB_TOO_BIG)
        self._skip_reply = b""
        self._discard_line = False
        self._wait_until: float | None = None  # loop time a reserve-with-timeout gives up
        self._timer: asyncio.TimerHandle | None = None
        self._eof = False  # the client half-closed: answer what it sent, then close

    # -- transport ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.conns.add(self)
        self.server.total_connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.conns.discard(self)
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
        self.data_received(self._rxview[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        self.buf += data
        if not self.busy:
            self.process()


    def eof_received(self) -> bool | None:
        """The client sent all it will: answer every command it sent (in order), then close."""
        self._eof = True
        if self.busy and self in self.server.waiting:  # half-closed while waiting: TIMED_OUT
            self._finish_wait(b"TIMED_OUT\r\n")
        elif not self.busy:
            self.process()
        return True  # keep the transport open for the replies; process() closes it when all are sent

    def resume(self) -> None:
        self.busy = False
        if (self.buf or self._eof) and not self.closed:
            self.process()

    # -- parsing -----------------------------------------------------------------------

    def process(self) -> None:
        self._process()
        if self._eof and not self.busy and not self.closed and self.transport is not None:
            self.closed = True  # nothing more will come: what is left in the buffer is an incomplete command
            self.transport.close()  # (the replies already written are sent first)

    def _process(self) -> None:
        buf = self.buf
        while not self.busy and not self.closed:
            if self._skip:
                n = min(self._skip, len(buf))
                del buf[:n]
                self._skip -= n
                if self._skip:
                    return
                self.reply(self._skip_reply)
                continue
            if self._body is not None:
                pri, delay, ttr, size = self._body
                if len(buf) < size + 2:
                    return
                body = bytes(buf[:size])
                crlf = bytes(buf[size:size + 2])
                del buf[:size + 2]
                self._body = None
                if crlf != b"\r\n":
                    self.reply(b"EXPECTED_CRLF\r\n")
                elif self.server.draining:
                    self.reply(b"DRAINING\r\n")
                else:
                    self.busy = True
                    srv = self.server
                    srv.queue_put(self, body, self.use, pri, delay, ttr)
                    if srv._flush_handle is None:  # alone on the server: commit and answer now, then go on
                        srv._flush(inline=self)
                continue
            end = buf.find(b"\r\n")
            if self._discard_line:
                if end < 0:
                    if len(buf) > 1:
                        del buf[:-1]  # keep a trailing "\r"
                    return
                del buf[:end + 2]
                self._discard_line = False
                self.reply(b"BAD_FORMAT\r\n")
                continue
            if end < 0 or end + 2 > LINE_MAX:
                if end < 0 and len(buf) < LINE_MAX:
                    return  # wait for the rest of the line
                self._discard_line = True  # overlong: throw it away up to its end
                if end >= 0:
                    continue
                del buf[:-1]
                return
            line = bytes(buf[:end])
            del buf[:end + 2]
            try:
                self.command(line)
            except SpoolqError as e:  # the spool failed under us: tell the client, keep serving
                log.error("beanstalk command %r failed: %s", line[:40], e)
                self.reply(b"OUT_OF_MEMORY\r\n" if isinstance(e, StorageFull) else b"INTERNAL_ERROR\r\n")
                self.busy = False

    def command(self, raw: bytes) -> None:
        if b"\0" in raw:
            self.reply(b"BAD_FORMAT\r\n")
            return
        line = raw.decode("latin-1")
        for prefix, handler in _COMMANDS:
            if line.startswith(prefix):
                rest = line[len(prefix):]
                try:
                    handler(self, rest)
                except ValueError:
                    self.reply(b"BAD_FORMAT\r\n")
                return
        self.reply(b"UNKNOWN_COMMAND\r\n")

    # -- producer commands --------------------------------------------------------------

    def c_put(self, rest: str) -> None:
        m = _PUT.fullmatch(rest)  # the common, well-formed case; anything else takes the careful path
        if m is not None and all(len(g) < 10 for g in m.groups()):
            pri, delay, ttr, size = map(int, m.groups())
            rest = ""
        else:
            pri, rest = _num(rest, U32, last=False)
            delay, rest = _num(rest, U32, last=False)
            ttr, rest = _num(rest, U32, last=False)
            size, rest = _num(rest, U32, last=False)
        self.server.cmds["put"] += 1
        if size > self.server.max_job_size:
            self._skip = size + 2
            self._skip_reply = b"JOB_TOO_BIG\r\n"
            return
        if rest:
            raise ValueError
        self.producer = True
        self._body = (pri, delay, max(1, ttr), size)

    def c_use(self, rest: str) -> None:
        name = self._name(rest)
        self.server.cmds["use"] += 1
        self.use = name
        self.reply(f"USING {name}\r\n".encode())

    # -- worker commands -----------------------------------------------------------------

    def c_reserve(self, rest: str) -> None:
        if rest:
            raise ValueError
        self.server.cmds["reserve"] += 1
        self._start_wait(None)

    def c_reserve_with_timeout(self, rest: str) -> None:
        timeout, _ = _num(rest, U32, last=True)
        if timeout > INT_MAX:
            raise ValueError
        self.server.cmds["reserve-with-timeout"] += 1
        self._start_wait(float(timeout))

    def _start_wait(self, timeout: float | None) -> None:
        self.worker = True
        self.busy = True
        loop = asyncio.get_running_loop()
        self._wait_until = None if timeout is None else loop.time() + timeout
        self.server.add_waiter(self)  # listening before the first look: no ring is missed
        self.try_reserve()

    def _channels(self) -> list[str]:
        now = time.monotonic()
        out = []
        for tube in self.watch:
            until = self.server.paused.get(tube, (0.0, 0))[0]
            if until > now:
                continue
            ch = self.server.channel(tube)
            if ch is not None:
                out.append(ch)
        return out

    def try_reserve(self) -> None:
        """Look for a job for a waiting reserve; answer, or sleep until something may change."""
        if self not in self.server.waiting or self.closed:
            return
        now = time.time()
        self.expire(now)
        lease, when = self.server.spool.jobs.lease_any(self._channels(), visibility=DEFAULT_TTR, visibility_for=_ttr_of)
        if lease is not None:
            self.reserved[lease.job] = lease
            self._finish_wait(b"RESERVED %d %d\r\n%s\r\n" % (lease.job, len(lease.body), lease.body))
            return
        soonest = min((x.deadline for x in self.reserved.values()), default=None)
        if soonest is not None and now >= soonest - SAFETY_MARGIN:
            self._finish_wait(b"DEADLINE_SOON\r\n")
            return
        loop = asyncio.get_running_loop()
        if self._eof or (self._wait_until is not None and loop.time() >= self._wait_until):
            self._finish_wait(b"TIMED_OUT\r\n")
            return
        # sleep until the earliest moment the answer could change
        at: list[float] = []
        if when is not None:
            at.append(loop.time() + max(0.0, when - time.time()))
        if soonest is not None:
            at.append(loop.time() + max(0.0, soonest - SAFETY_MARGIN - time.time()))
        if self._wait_until is not None:
            at.append(self._wait_until)
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
        for job, lease in list(self.reserved.items()):
            if lease.deadline <= now:
                del self.reserved[job]
                self.server.job_timeouts += 1
                self.server.counts(job).timeouts += 1

    def _held(self, job: int) -> Lease | None:
        self.expire(time.time())
        return self.reserved.get(job)

    def _take(self, job: int) -> Lease | None:
        """This connection's reservation of ``job``, taken out of its table (NOT_FOUND if none)."""
        lease = self._held(job)
        if lease is None:
            self.reply(b"NOT_FOUND\r\n")
            return None
        del self.reserved[job]
        return lease

    def c_reserve_job(self, rest: str) -> None:
        job, _ = _job_id(rest, last=True)
        self.server.cmds["reserve-job"] += 1
        if job in self.reserved:
            self.reply(b"NOT_FOUND\r\n")
            return
        lease = self.server.spool.jobs.lease(job, visibility=DEFAULT_TTR, visibility_for=_ttr_of)
        if lease is None:
            self.reply(b"NOT_FOUND\r\n")
            return
        self.worker = True
        self.reserved[job] = lease
        self.reply(b"RESERVED %d %d\r\n%s\r\n" % (job, len(lease.body), lease.body))

    def c_delete(self, rest: str) -> None:
        job, _ = _job_id(rest, last=True)
        self.server.cmds["delete"] += 1
        lease = self._held(job)
        tube = None
        if lease is not None:
            try:
                lease.ack()
                tube = channel_tube(lease.channel)
            except LeaseError:
                pass
            del self.reserved[job]
        else:
            found = self.server.spool.jobs.find(job)
            if found is not None and found.state != "reserved" and self.server.spool.jobs.delete(job):
                tube = channel_tube(found.channel)
        if tube is None:
            self.reply(b"NOT_FOUND\r\n")
            return
        self.server.tube_deletes[tube] += 1
        self.server.jobs.pop(job, None)
        self.reply(b"DELETED\r\n")

    def c_release(self, rest: str) -> None:
        job, rest = _job_id(rest, last=False)
        pri, rest = _num(rest, U32, last=False)
        delay, _ = _num(rest, U32, last=True)
        self.server.cmds["release"] += 1
        lease = self._take(job)
        if lease is None:
            return
        try:
            requeued = lease.nack(_seconds(delay), priority=pri)
        except LeaseError:
            self.reply(b"NOT_FOUND\r\n")
            return
        counts = self.server.counts(job)
        counts.releases += 1
        counts.delay = delay
        if requeued:
            self.reply(b"RELEASED\r\n")
        else:  # attempts used up: it is a dead letter now, which is a buried job
            counts.buries += 1
            self.reply(b"BURIED\r\n")
        self.server.wake_waiters()

    def c_bury(self, rest: str) -> None:
        job, rest = _job_id(rest, last=False)
        pri, _ = _num(rest, U32, last=True)
        self.server.cmds["bury"] += 1
        lease = self._take(job)
        if lease is None:
            return
        try:
            lease.dead("buried by a beanstalkd client", reason="buried", priority=pri)
        except LeaseError:
            self.reply(b"NOT_FOUND\r\n")
            return
        self.server.counts(job).buries += 1
        self.reply(b"BURIED\r\n")

    def c_touch(self, rest: str) -> None:
        job, _ = _job_id(rest, last=True)
        self.server.cmds["touch"] += 1
        lease = self._held(job)
        if lease is None:
            self.reply(b"NOT_FOUND\r\n")
            return
        try:
            lease.touch(min(_ttr_of(lease._hdrs) or DEFAULT_TTR, MAX_SECONDS))
        except LeaseError:
            del self.reserved[job]
            self.reply(b"NOT_FOUND\r\n")
            return
        self.reply(b"TOUCHED\r\n")

    def c_watch(self, rest: str) -> None:
        name = self._name(rest)
        self.server.cmds["watch"] += 1
        if name not in self.watch:
            self.watch.append(name)
        self.reply(f"WATCHING {len(self.watch)}\r\n".encode())

    def c_ignore(self, rest: str) -> None:
        name = self._name(rest)
        self.server.cmds["ignore"] += 1
        if name in self.watch:
            if len(self.watch) == 1:
                self.reply(b"NOT_IGNORED\r\n")
                return
            self.watch.remove(name)
        self.reply(f"WATCHING {len(self.watch)}\r\n".encode())

    # -- other commands ------------------------------------------------------------------

    def _found(self, job: Job | None) -> None:
        if job is None:
            self.reply(b"NOT_FOUND\r\n")
        else:
            self.reply(b"FOUND %d %d\r\n%s\r\n" % (job.job, len(job.body), job.body))

    def c_peek(self, rest: str) -> None:
        job, _ = _job_id(rest, last=True)
        self.server.cmds["peek"] += 1
        self._found(self.server.spool.jobs.find(job))

    def c_peek_ready(self, rest: str) -> None:
        if rest:
            raise ValueError
        self.server.cmds["peek-ready"] += 1
        ch = self.server.channel(self.use)
        self.server.promote_due([ch])
        msgs = self.server.spool.peek(ch, limit=1) if ch else []
        job = msgs[0].job if msgs else None
        if job is None:
            self.reply(b"NOT_FOUND\r\n")
            return
        self.reply(b"FOUND %d %d\r\n%s\r\n" % (job, len(msgs[0].body), msgs[0].body))

    def c_peek_delayed(self, rest: str) -> None:
        if rest:
            raise ValueError
        self.server.cmds["peek-delayed"] += 1
        ch = self.server.channel(self.use)
        self.server.promote_due([ch])
        self._found(self.server.spool.jobs.peek_delayed(ch) if ch else None)

    def c_peek_buried(self, rest: str) -> None:
        if rest:
            raise ValueError
        self.server.cmds["peek-buried"] += 1
        ch = self.server.channel(self.use)
        self._found(self.server.spool.jobs.peek_buried(ch) if ch else None)

    def c_kick(self, rest: str) -> None:
        bound, _ = _num(rest, U32, last=True)
        self.server.cmds["kick"] += 1
        ch = self.server.channel(self.use)
        if not ch or not bound:
            self.reply(b"KICKED 0\r\n")
            return
        self.server.promote_due([ch])  # a job whose delay is over is ready: not kicked
        jobs = self.server.spool.jobs.kick(ch, bound)
        for job in jobs:
            self.server.counts(job).kicks += 1
        self.reply(f"KICKED {len(jobs)}\r\n".encode())
        if jobs:
            self.server.wake_waiters()

    def c_kick_job(self, rest: str) -> None:
        job, _ = _job_id(rest, last=True)
        self.server.cmds["kick-job"] += 1
        if self.server.spool.jobs.kick_one(job):
            self.server.counts(job).kicks += 1
            self.reply(b"KICKED\r\n")
            self.server.wake_waiters()
        else:
            self.reply(b"NOT_FOUND\r\n")

    def c_stats_job(self, rest: str) -> None:
        job, _ = _job_id(rest, last=True)
        self.server.cmds["stats-job"] += 1
        self.server.expire_all()
        found = self.server.spool.jobs.find(job)
        if found is not None and found.state == "delayed" and self.server.promote_due([found.channel]):
            found = self.server.spool.jobs.find(job)
        if found is None:
            self.reply(b"NOT_FOUND\r\n")
            return
        self._ok(self.server.stats_job_yaml(found))

    def c_stats_tube(self, rest: str) -> None:
        name = self._name(rest)
        self.server.cmds["stats-tube"] += 1
        data = self.server.stats_tube_yaml(name)
        if data is None:
            self.reply(b"NOT_FOUND\r\n")
        else:
            self._ok(data)

    def c_stats(self, rest: str) -> None:
        if rest:
            raise ValueError
        self.server.cmds["stats"] += 1
        self._ok(self.server.stats_yaml())

    def c_list_tubes(self, rest: str) -> None:
        if rest:
            raise ValueError
        self.server.cmds["list-tubes"] += 1
        self._ok(_yaml_list(self.server.tubes()))

    def c_list_tube_used(self, rest: str) -> None:
        if rest:
            raise ValueError
        self.server.cmds["list-tube-used"] += 1
        self.reply(f"USING {self.use}\r\n".encode())

    def c_list_tubes_watched(self, rest: str) -> None:
        if rest:
            raise ValueError
        self.server.cmds["list-tubes-watched"] += 1
        self._ok(_yaml_list(self.watch))

    def c_pause_tube(self, rest: str) -> None:
        if not rest.startswith(" "):
            raise ValueError
        name, _, num = rest.lstrip(" ").partition(" ")
        if not valid_tube(name) or self.server.channel(name) is None:
            raise ValueError
        delay, _ = _num(num, U32, last=True)
        self.server.cmds["pause-tube"] += 1
        if name not in self.server.tubes():
            self.reply(b"NOT_FOUND\r\n")
            return
        self.server.paused[name] = (time.monotonic() + delay, delay)
        self.server.tube_pauses[name] += 1
        self.reply(b"PAUSED\r\n")
        self.server.wake_waiters()  # waiters re-plan their sleep around the pause

    def c_quit(self, rest: str) -> None:
        if rest:
            raise ValueError
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- helpers ---------------------------------------------------------------------------

    def _name(self, rest: str) -> str:
        name = rest  # right after the command's one space: "use  x" is BAD_FORMAT, as in beanstalkd
        if not valid_tube(name) or self.server.channel(name) is None:
            raise ValueError
        return name

    def _ok(self, data: bytes) -> None:
        self.reply(b"OK %d\r\n%s\r\n" % (len(data), data))


# Checked in this order, as beanstalkd does: longer names that share a prefix come first.
_COMMANDS: list[tuple[str, Callable[[Conn, str], None]]] = [
    ("put ", Conn.c_put),
    ("peek ", Conn.c_peek),
    ("peek-ready", Conn.c_peek_ready),
    ("peek-delayed", Conn.c_peek_delayed),
    ("peek-buried", Conn.c_peek_buried),
    ("reserve-with-timeout ", Conn.c_reserve_with_timeout),
    ("reserve-job ", Conn.c_reserve_job),
    ("reserve", Conn.c_reserve),
    ("delete ", Conn.c_delete),
    ("release ", Conn.c_release),
    ("bury ", Conn.c_bury),
    ("kick ", Conn.c_kick),
    ("kick-job ", Conn.c_kick_job),
    ("touch ", Conn.c_touch),
    ("stats-job ", Conn.c_stats_job),
    ("stats-tube ", Conn.c_stats_tube),
    ("stats", Conn.c_stats),
    ("use ", Conn.c_use),
    ("watch ", Conn.c_watch),
    ("ignore ", Conn.c_ignore),
    ("list-tubes-watched", Conn.c_list_tubes_watched),
    ("list-tube-used", Conn.c_list_tube_used),
    ("list-tubes", Conn.c_list_tubes),
    ("quit", Conn.c_quit),
    ("pause-tube", Conn.c_pause_tube),
]


# -- the standalone server ----------------------------------------------------------------------


def run_standalone(opts: dict[str, Any], sock: socket.socket) -> int:
    """Run the standalone server (see ``spoolq._bsmain``) on an already listening socket."""
    import signal
    import sys
    import tempfile

    from .spool import Spool

    logging.basicConfig(level=logging.WARNING - 10 * min(2, opts["verbose"]),
                        format="spoolq-beanstalkd: %(levelname)s %(message)s")
    tmp = None
    path: str
    durability: Literal["full", "normal"]
    sync_ms: int | None
    if opts["dir"] is None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        tmp = tempfile.mkdtemp(prefix="spoolq-beanstalkd-", dir=base)
        path, durability, sync_ms = tmp, "normal", None
    elif opts["never_sync"]:
        path, durability, sync_ms = opts["dir"], "normal", None
    elif opts["fsync_ms"] == 0:
        path, durability, sync_ms = opts["dir"], "full", None
    else:
        path, durability, sync_ms = opts["dir"], "normal", opts["fsync_ms"]
    try:
        spool = Spool(path, durability=durability, max_message_size=max(1 << 20, opts["max_job_size"] + 4096))
    except SpoolqError as e:
        print(f"spoolq-beanstalkd: {e}", file=sys.stderr)
        return 1

    async def run() -> None:
        server = Server(spool, max_job_size=opts["max_job_size"])
        await server.listen(sock)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)

        def drain() -> None:
            server.draining = True
            log.warning("entering drain mode: puts are refused")

        loop.add_signal_handler(signal.SIGUSR1, drain)
        chores = [asyncio.create_task(_sweeper(spool))]
        if sync_ms:
            chores.append(asyncio.create_task(_syncer(spool, sync_ms / 1000.0)))
        log.info("serving the beanstalkd protocol (spool %s, durability %s)", path, durability)
        await stop.wait()
        for c in chores:
            c.cancel()
        await server.close()

    try:
        asyncio.run(run())
    finally:
        spool.close()
        if opts["addr"].startswith("unix:"):
            with contextlib.suppress(OSError):
                os.unlink(opts["addr"][5:])
        if tmp is not None:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return 0


async def _sweeper(spool: Spool) -> None:
    while True:
        await asyncio.sleep(5.0)
        with contextlib.suppress(SpoolqError):
            await asyncio.to_thread(spool.sweep)


async def _syncer(spool: Spool, every: float) -> None:
    """beanstalkd's ``-f MS``: under durability normal, sync the spool at most every MS."""
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(spool.sync)


