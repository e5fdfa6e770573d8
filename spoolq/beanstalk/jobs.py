"""The beanstalkd front-end's side of the spool: every spool call it makes (``JobStore``), the
TTR and delay a job carries in its headers, and the per-job counters of ``stats-job`` (``JobCounts``),
which are saved in the spool so that they survive a restart (see docs/design.md)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec

from ..errors import SpoolqError, StorageError, StorageFull
from ..message import MAX_SECONDS

if TYPE_CHECKING:
    from ..lease import Lease
    from ..spool import Job, Spool, Stats

class _HasHeaders(Protocol):
    """A reservation of either store (a spool's Lease, or memory.MemLease)."""

    @property
    def headers(self) -> dict[str, str]: ...


DEFAULT_TTR: Final = 60
TTR_HEADER: Final = "beanstalk-ttr"
DELAY_HEADER: Final = "beanstalk-delay"  # the delay given at put, for stats-job (after a restart too)

_hdr_dec = msgspec.msgpack.Decoder(dict[str, str])
log = logging.getLogger("spoolq.beanstalk")


# -- helpers -------------------------------------------------------------------------------


# The spool keeps times in whole milliseconds, taken from a clock floored to the millisecond, so a
# deadline it computes may fall up to 1 ms before the exact one. beanstalkd's delays and TTRs never end
# early (clients time them: greenstalk's suite asserts "at least n seconds"), so they get this much more.
NOT_EARLY: Final = 0.002


def spool_seconds(n: int) -> float:
    """A beanstalkd duration (u32 seconds) as the spool takes it: never ending before ``n`` seconds
    (see NOT_EARLY), at most MAX_SECONDS (about 30 years)."""
    return min(n + NOT_EARLY, MAX_SECONDS) if n > 0 else 0.0


def ttr_of(headers: bytes | None) -> float | None:
    """The TTR kept in a job's encoded headers (the spool calls this when it leases)."""
    if not headers:
        return None
    try:
        v = _hdr_dec.decode(headers).get(TTR_HEADER)
        return float(v) + NOT_EARLY if v is not None else None
    except (msgspec.DecodeError, ValueError):
        return None


def lease_ttr(lease: _HasHeaders) -> float:
    """The TTR a touch renews (see NOT_EARLY)."""
    try:
        return float(lease.headers.get(TTR_HEADER) or DEFAULT_TTR) + NOT_EARLY
    except ValueError:
        return DEFAULT_TTR + NOT_EARLY


class JobCounts:
    """stats-job counters of a job that was released, buried, kicked or timed out (others need none:
    their reserves are the spool's attempts). Saved in the spool, so they survive a restart."""

    __slots__ = ("buries", "delay", "kicks", "releases", "reserves", "timeouts")

    def __init__(self, reserves: int = 0) -> None:
        self.releases = self.buries = self.kicks = self.timeouts = 0
        self.reserves = reserves  # a kick resets the spool's attempts, not this
        self.delay = -1  # -1: the delay given at put (in the job's headers)

    def row(self, job: int) -> tuple[int, int, int, int, int, int, int]:
        return (job, self.delay, self.reserves, self.timeouts, self.releases, self.buries, self.kicks)

    @classmethod
    def of_row(cls, row: tuple[int, int, int, int, int, int]) -> JobCounts:
        c = cls()
        c.delay, c.reserves, c.timeouts, c.releases, c.buries, c.kicks = row
        return c


CountsRow = tuple[int, int, int, int, int, int, int]  # job, delay, reserves, timeouts, releases, buries, kicks


class PerJob:
    """The stats-job counters of a server's jobs (:class:`JobCounts`, made when a job first needs them),
    saved in the spool by ``save`` (None: in memory, nothing is saved) at the end of the event-loop turn
    they changed in: every change of one turn in one transaction."""

    def __init__(self, save: Callable[[list[CountsRow], list[int]], None] | None) -> None:
        self.jobs: dict[int, JobCounts] = {}
        self._save = save
        self._dirty: set[int] = set()  # jobs whose counters changed since they were last saved
        self._gone: set[int] = set()  # jobs deleted whose saved counters are to be removed
        self._handle: asyncio.Handle | None = None

    def load(self, saved: dict[int, tuple[int, int, int, int, int, int]]) -> None:
        for job, row in saved.items():
            self.jobs.setdefault(job, JobCounts.of_row(row))

    def counts(self, job: int, attempts: int = 0) -> JobCounts:
        """The counters of ``job`` (with ``attempts`` reserves so far when new), to be changed now."""
        c = self.jobs.get(job)
        if c is None:
            c = self.jobs[job] = JobCounts(attempts)
        self._changed(job)
        return c

    def reserved(self, job: int) -> None:
        """``job`` was reserved: count it where the spool's attempts would not (after a kick)."""
        c = self.jobs.get(job)
        if c is not None:
            c.reserves += 1
            self._changed(job)

    def deleted(self, job: int) -> None:
        if self.jobs.pop(job, None) is not None and self._save is not None:
            self._dirty.discard(job)
            self._gone.add(job)
            self._schedule()

    def _changed(self, job: int) -> None:
        if self._save is not None:
            self._dirty.add(job)
            self._schedule()

    def _schedule(self) -> None:
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_soon(self.save)

    def save(self) -> None:
        """Save the changed counters in one transaction."""
        self._handle = None
        rows = [self.jobs[j].row(j) for j in self._dirty if j in self.jobs]
        gone = list(self._gone)
        self._dirty.clear()
        self._gone.clear()
        if (rows or gone) and self._save is not None:
            try:
                self._save(rows, gone)
            except SpoolqError as e:
                log.error("per-job counters not saved (stats-job may show older ones after a restart): %s", e)


class JobStore:
    """Every spool call the front-end makes, in one place.

    The job-number operations live on the :class:`Spool` facade today and are
    moving to a store object; only this adapter needs to follow them.
    """

    __slots__ = ("spool",)

    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    def send_jobs(self, items: list[tuple[bytes, str, int, float, dict[str, str] | None]]) -> list[Any]:
        return self.spool.jobs.put(items)

    def put_plain(self, body: bytes, channel: str, pri: int) -> Any:
        """A put alone with no delay and the default TTR: :meth:`send_jobs` of it, without its lists when
        it can (one INSERT, see ``JobOps.put_plain``)."""
        job = self.spool.jobs.put_plain(body, channel, pri)
        return job if job is not None else self.send_jobs([(body, channel, pri, 0.0, None)])[0]

    def promote_due(self, channels: list[str]) -> int:
        return self.spool.jobs.promote_due(channels)

    def lease_any(self, channels: list[str]) -> tuple[Lease | None, float | None]:
        return self.spool.jobs.lease_any(channels, visibility=DEFAULT_TTR + NOT_EARLY, visibility_for=ttr_of)

    def lease_job(self, job: int) -> Lease | None:
        return self.spool.jobs.lease(job, visibility=DEFAULT_TTR + NOT_EARLY, visibility_for=ttr_of)

    def find_job(self, job: int) -> Job | None:
        return self.spool.jobs.find(job)

    def delete_job(self, job: int, found: Job | None = None) -> bool:
        return self.spool.jobs.delete(job, found)

    def kick_jobs(self, channel: str, bound: int) -> list[int]:
        return self.spool.jobs.kick(channel, bound)

    def kick_job(self, job: int) -> bool:
        return self.spool.jobs.kick_one(job)

    def peek_ready(self, channel: str) -> tuple[int, bytes] | None:
        msgs = self.spool.peek(channel, limit=1)
        job = msgs[0].job if msgs else None
        return None if job is None else (job, msgs[0].body)

    def peek_delayed(self, channel: str) -> Job | None:
        return self.spool.jobs.peek_delayed(channel)

    def peek_buried(self, channel: str) -> Job | None:
        return self.spool.jobs.peek_buried(channel)

    def holds_jobs(self, channel: str) -> bool:
        return self.spool.jobs.holds_any(channel)

    def stats(self) -> Stats:
        return self.spool.stats()

    def sync(self) -> None:
        self.spool.sync()

    def load_stats(self) -> dict[int, tuple[int, int, int, int, int, int]]:
        return self.spool.jobs.load_stats()

    def save_stats(self, rows: list[tuple[int, int, int, int, int, int, int]], gone: list[int]) -> None:
        self.spool.jobs.save_stats(rows, gone)

    def sweep(self) -> dict[str, int]:
        return self.spool.sweep()


def refused_put(e: StorageError) -> str:
    """The reply's word for puts the spool could not write (logged)."""
    if isinstance(e, StorageFull):
        log.error("put refused: %s", e)
        return "OUT_OF_MEMORY"
    log.error("put failed: %s", e)
    return "INTERNAL_ERROR"


def int_header(headers: dict[str, str], name: str) -> int:
    try:
        return max(0, int(headers.get(name) or 0))
    except ValueError:
        return 0


def ttr_of_job(job: Job) -> int:
    v = job.headers.get(TTR_HEADER)
    try:
        return int(v) if v is not None else DEFAULT_TTR
    except ValueError:
        return DEFAULT_TTR
