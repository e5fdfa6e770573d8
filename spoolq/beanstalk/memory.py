"""The in-memory job store of ``spoolq-beanstalkd`` without ``-b`` (beanstalkd without ``-b`` keeps its
jobs in memory only, and so does this).

Why not a spool on a RAM disk: a put, a reserve and a delete each went through SQLite, the event log and
the group-commit machinery, about 100 µs of server time per command against beanstalkd's ~12 µs (issue 9).
Nothing of that buys anything when the jobs die with the process anyway.

It offers the calls of :class:`.jobs.JobStore` the server makes, with the spool's semantics as the
front-end sees them: ready jobs go out by priority, then job number (age); a reservation whose TTR ran
out makes the job ready again (noticed lazily, like the spool's ``lease_until``); a delayed job becomes
ready when its delay is over; buried jobs are the channel's dead letters, kicked oldest first (their
attempts start again); with ``max_attempts``, a job reserved that many times is buried on its next
release or TTR timeout. Times are Unix seconds (floats), not the spool's floored milliseconds, so the
``NOT_EARLY`` slack the server adds to every delay and TTR for the spool's sake is taken off again
(:func:`_exact`): a delay ends when beanstalkd's would (a client racing a delay against a
``reserve-with-timeout`` gets what beanstalkd gives it), and never earlier.

Every structure is bounded by the jobs held; heaps are cleaned lazily (an entry whose job moved on is
dropped when it comes to the top, and a heap with more dead entries than live ones is rebuilt).
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Sequence
from typing import Any, Final

from ..errors import LeaseExpired, LeaseLost
from ..store.inbox import ChannelStats, Stats
from ..store.jobs import Job
from .jobs import DEFAULT_TTR, NOT_EARLY, TTR_HEADER

READY: Final = 0
RESERVED: Final = 1
DELAYED: Final = 2
BURIED: Final = 3
URGENT_BELOW: Final = 1024  # beanstalkd's "urgent": priority < 1024
_DEFAULT_TTR: Final = float(DEFAULT_TTR)


def _exact(seconds: float) -> float:
    """A delay or TTR as the server hands it over (with NOT_EARLY), without that slack."""
    return max(0.0, seconds - NOT_EARLY)


class MemJob:
    """One job. ``tok`` changes whenever the job changes state: heap entries carrying an older one are stale."""

    __slots__ = ("attempts", "body", "created", "due", "headers", "job", "pri", "state", "tok", "ttr", "tube")

    def __init__(self, job: int, tube: Tube, pri: int, body: bytes, headers: dict[str, str] | None,
                 ttr: float, created: float) -> None:
        self.job = job
        self.tube = tube
        self.pri = pri
        self.body = body
        self.headers = headers
        self.ttr = ttr
        self.created = created
        self.state = READY
        self.tok = 0
        self.attempts = 0
        self.due = 0.0  # delayed: when it is ready; reserved: when the reservation ends


class Tube:
    """One channel's jobs: heaps of (key, job number, token, job) per state, and the counts of each."""

    __slots__ = (
        "buried",
        "delayed",
        "n_delayed",
        "n_ready",
        "n_reserved",
        "n_urgent",
        "name",
        "ready",
        "reserved",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready: list[tuple[int, int, int, MemJob]] = []  # (priority, job, tok, job)
        self.delayed: list[tuple[float, int, int, MemJob]] = []  # (due, job, tok, job)
        self.reserved: list[tuple[float, int, int, MemJob]] = []  # (until, job, tok, job)
        self.buried: dict[int, MemJob] = {}  # in burying order
        self.n_ready = self.n_urgent = self.n_reserved = self.n_delayed = 0

    def empty(self) -> bool:
        return not (self.n_ready or self.n_reserved or self.n_delayed or self.buried)


def _top(heap: list[Any]) -> Any:
    """The first live entry of ``heap`` (stale ones are popped), or None."""
    while heap:
        e = heap[0]
        j = e[3]
        if j.tok == e[2]:
            return e
        heapq.heappop(heap)
    return None


def _compact(heap: list[Any], live: int) -> None:
    """Rebuild ``heap`` without its stale entries (called when they outnumber the live ones: bounded
    memory however often jobs change state)."""
    heap[:] = [e for e in heap if e[3].tok == e[2]]
    heapq.heapify(heap)


class MemLease:
    """A reservation of a :class:`MemJob` (what the server keeps for a reserved job)."""

    __slots__ = ("_j", "_store", "_tok", "attempts", "body", "channel", "deadline", "job")

    def __init__(self, store: MemoryStore, j: MemJob) -> None:
        self._store = store
        self._j = j
        self._tok = j.tok
        self.job = j.job
        self.body = j.body
        self.channel = j.tube.name
        self.attempts = j.attempts
        self.deadline = j.due

    @property
    def headers(self) -> dict[str, str]:
        return dict(self._j.headers or {})

    def _held(self) -> MemJob:
        j = self._j
        if j.tok != self._tok or j.state != RESERVED:  # (a job deleted or moved on has a new token)
            raise LeaseLost(f"job {self.job} is not reserved by this reservation any more")
        if j.due <= time.time():
            self._store._unreserve(j)
            raise LeaseExpired(f"the reservation of job {self.job} ran out")
        return j

    def ack(self) -> None:
        j = self._j  # (_held, then what _remove and _leave do for a reserved job, without their calls)
        if j.tok != self._tok or j.state != RESERVED or j.due <= time.time():
            self._held()  # raises
        t = j.tube
        t.n_reserved -= 1
        if len(t.reserved) > 2 * t.n_reserved + 64:
            _compact(t.reserved, t.n_reserved)
        j.tok += 1
        st = self._store
        del st.jobs[j.job]
        if len(st.tubes) > 1024 and t.empty():  # (as _remove)
            st.tubes.pop(t.name, None)

    def nack(self, delay: float | None = None, *, priority: int | None = None, reason: str | None = None) -> bool:
        j = self._held()
        st = self._store
        st._leave(j)
        if j.attempts >= st.max_attempts:
            st._bury(j, None)
            return False
        if priority is not None:
            j.pri = priority
        if delay is not None and _exact(delay) > 0:
            st._delay(j, time.time() + _exact(delay))
        else:
            st._ready(j)
        return True

    def dead(self, detail: str = "", *, reason: str = "rejected", priority: int | None = None) -> None:
        j = self._held()
        self._store._leave(j)
        self._store._bury(j, priority)

    def touch(self, visibility: float = 30.0) -> None:
        j = self._held()
        tube = j.tube
        j.tok += 1
        j.due = time.time() + _exact(visibility)
        heapq.heappush(tube.reserved, (j.due, j.job, j.tok, j))
        if len(tube.reserved) > 2 * tube.n_reserved + 64:
            _compact(tube.reserved, tube.n_reserved)
        self._tok = j.tok
        self.deadline = j.due


class MemoryStore:
    """The jobs of a server without ``-b``: the :class:`.jobs.JobStore` calls, in memory."""

    persistent: Final = False  # nothing survives the process: per-job counters are not saved either

    def __init__(self, max_attempts: int) -> None:
        self.max_attempts = max_attempts
        self.jobs: dict[int, MemJob] = {}
        self.tubes: dict[str, Tube] = {}
        self.next_job = 1

    # -- moving jobs between states (every count kept here) ------------------------------------

    def _tube(self, name: str) -> Tube:
        t = self.tubes.get(name)
        if t is None:
            t = self.tubes[name] = Tube(name)
        return t

    def _ready(self, j: MemJob) -> None:
        t = j.tube
        j.state = READY
        j.tok += 1
        heapq.heappush(t.ready, (j.pri, j.job, j.tok, j))
        t.n_ready += 1
        if j.pri < URGENT_BELOW:
            t.n_urgent += 1

    def _delay(self, j: MemJob, due: float) -> None:
        t = j.tube
        j.state = DELAYED
        j.tok += 1
        # in whole ms, rounded up: puts read together (a pipeline) and delayed alike tie, and the tie goes
        # to the lower job number, as beanstalkd's order is the order they were made in
        j.due = due = math.ceil(due * 1000.0) / 1000.0
        heapq.heappush(t.delayed, (due, j.job, j.tok, j))
        t.n_delayed += 1

    def _bury(self, j: MemJob, priority: int | None) -> None:
        if priority is not None:
            j.pri = priority
        j.state = BURIED
        j.tok += 1
        j.tube.buried[j.job] = j

    def _leave(self, j: MemJob) -> None:
        """Take ``j`` out of its state's count (its heap entry goes stale: the token changes next)."""
        t = j.tube
        s = j.state
        if s == READY:
            t.n_ready -= 1
            if j.pri < URGENT_BELOW:
                t.n_urgent -= 1
            if len(t.ready) > 2 * t.n_ready + 64:
                _compact(t.ready, t.n_ready)
        elif s == RESERVED:
            t.n_reserved -= 1
            if len(t.reserved) > 2 * t.n_reserved + 64:
                _compact(t.reserved, t.n_reserved)
        elif s == DELAYED:
            t.n_delayed -= 1
            if len(t.delayed) > 2 * t.n_delayed + 64:
                _compact(t.delayed, t.n_delayed)
        else:
            del t.buried[j.job]
        j.tok += 1

    def _remove(self, j: MemJob) -> None:
        self._leave(j)
        del self.jobs[j.job]
        if len(self.tubes) > 1024 and j.tube.empty():  # bounded memory under many short-lived tubes
            self.tubes.pop(j.tube.name, None)

    def _unreserve(self, j: MemJob) -> None:
        """The reservation of ``j`` ran out: ready again (or buried when its attempts are used up)."""
        self._leave(j)
        if j.attempts >= self.max_attempts:
            self._bury(j, None)
        else:
            self._ready(j)

    def _catch_up(self, t: Tube, now: float) -> None:
        """Make ``t``'s due delayed jobs and ran-out reservations ready."""
        while t.n_delayed:
            e = _top(t.delayed)
            if e is None or e[0] > now:
                break
            heapq.heappop(t.delayed)
            j = e[3]
            t.n_delayed -= 1
            self._ready(j)
        while t.n_reserved:
            e = _top(t.reserved)
            if e is None or e[0] > now:
                break
            heapq.heappop(t.reserved)
            self._unreserve(e[3])

    def _reserve(self, j: MemJob, now: float) -> MemLease:
        t = j.tube
        if j.state == READY:  # (_leave's first case)
            t.n_ready -= 1
            if j.pri < URGENT_BELOW:
                t.n_urgent -= 1
            if len(t.ready) > 2 * t.n_ready + 64:
                _compact(t.ready, t.n_ready)
            j.tok += 1
        else:
            self._leave(j)
        j.state = RESERVED
        j.attempts += 1
        j.due = now + j.ttr
        heapq.heappush(t.reserved, (j.due, j.job, j.tok, j))
        t.n_reserved += 1
        return MemLease(self, j)

    # -- the JobStore calls -----------------------------------------------------------------------

    def send_jobs(self, items: list[tuple[bytes, str, int, float, dict[str, str] | None]]) -> list[Any]:
        now = time.time()
        out: list[Any] = []
        for body, channel, pri, wait, headers in items:
            job = self.next_job
            self.next_job = job + 1
            ttr = float(DEFAULT_TTR)
            if headers:
                v = headers.get(TTR_HEADER)
                if v is not None:
                    ttr = float(v)
            t = self.tubes.get(channel) or self._tube(channel)
            j = MemJob(job, t, pri, body, headers, ttr, now)
            self.jobs[job] = j
            if wait > NOT_EARLY:  # (_exact(wait) > 0)
                self._delay(j, now + _exact(wait))
            else:  # (_ready)
                j.tok = 1
                heapq.heappush(t.ready, (pri, job, 1, j))
                t.n_ready += 1
                if pri < URGENT_BELOW:
                    t.n_urgent += 1
            out.append(job)
        return out

    def put_plain(self, body: bytes, channel: str, pri: int) -> int:
        """``send_jobs`` of one put without delay, TTR or headers (the commonest), without its lists."""
        job = self.next_job
        self.next_job = job + 1
        t = self.tubes.get(channel) or self._tube(channel)
        j = MemJob(job, t, pri, body, None, _DEFAULT_TTR, time.time())
        self.jobs[job] = j
        j.tok = 1  # (_ready)
        heapq.heappush(t.ready, (pri, job, 1, j))
        t.n_ready += 1
        if pri < URGENT_BELOW:
            t.n_urgent += 1
        return job

    def promote_due(self, channels: list[str]) -> int:
        now = time.time()
        n = 0
        for name in channels:
            t = self.tubes.get(name)
            if t is not None and t.n_delayed:
                before = t.n_delayed
                self._catch_up(t, now)
                n += before - t.n_delayed
        return n

    def lease_any(self, channels: list[str]) -> tuple[MemLease | None, float | None]:
        now = time.time()
        if len(channels) == 1:  # the common case, without the comparisons between tubes
            t = self.tubes.get(channels[0])
            if t is None:
                return None, None
            if t.n_delayed or t.n_reserved:
                self._catch_up(t, now)
            ready = t.ready
            while t.n_ready:  # (a live entry is in the heap: it is not empty)
                top = ready[0]
                j = top[3]
                if j.tok != top[2]:  # stale
                    heapq.heappop(ready)
                elif j.attempts >= self.max_attempts:  # used up (released or timed out too often): buried
                    heapq.heappop(ready)
                    self._leave(j)
                    self._bury(j, None)
                else:  # _reserve of a ready job, without its calls
                    t.n_ready -= 1
                    if j.pri < URGENT_BELOW:
                        t.n_urgent -= 1
                    if len(ready) > 2 * t.n_ready + 64:
                        _compact(ready, t.n_ready)
                    tok = j.tok = j.tok + 1
                    j.state = RESERVED
                    j.attempts += 1
                    due = j.due = now + j.ttr
                    heapq.heappush(t.reserved, (due, j.job, tok, j))
                    t.n_reserved += 1
                    return MemLease(self, j), None
        best: tuple[int, int, int, MemJob] | None = None
        for name in channels:
            t = self.tubes.get(name)
            if t is None:
                continue
            if t.n_delayed or t.n_reserved:
                self._catch_up(t, now)
            while t.n_ready:
                e = _top(t.ready)
                if e is None:
                    break
                j = e[3]
                if j.attempts >= self.max_attempts:  # used up (released or timed out too often): buried
                    heapq.heappop(t.ready)
                    self._leave(j)
                    self._bury(j, None)
                    continue
                if best is None or e[:2] < best[:2]:
                    best = e
                break
        if best is not None:
            return self._reserve(best[3], now), None
        when: float | None = None
        for name in channels:
            t = self.tubes.get(name)
            if t is None:
                continue
            for heap, live in ((t.delayed, t.n_delayed), (t.reserved, t.n_reserved)):
                e = _top(heap) if live else None
                if e is not None and (when is None or e[0] < when):
                    when = e[0]
        return None, when

    def lease_job(self, job: int) -> MemLease | None:
        j = self.jobs.get(job)
        if j is None:
            return None
        now = time.time()
        self._catch_up(j.tube, now)
        if j.state == RESERVED:
            return None
        if j.state == BURIED:  # as the spool: a dead letter brought back starts its attempts again
            j.attempts = 0
        return self._reserve(j, now)

    def find_job(self, job: int) -> Job | None:
        j = self.jobs.get(job)
        if j is None:
            return None
        self._catch_up(j.tube, time.time())
        state = ("ready", "reserved", "delayed", "buried")[j.state]
        due = j.due + NOT_EARLY if j.state in (RESERVED, DELAYED) else None  # as the spool shows it
        return Job(j.job, "", j.tube.name, state, j.pri, j.body, dict(j.headers or {}), j.created, due, j.attempts)

    def delete_job(self, job: int, found: Job | None = None) -> bool:
        j = self.jobs.get(job)
        if j is None:
            return False
        self._catch_up(j.tube, time.time())
        if j.state == RESERVED:
            return False
        self._remove(j)
        return True

    def kick_jobs(self, channel: str, bound: int) -> list[int]:
        t = self.tubes.get(channel)
        if t is None or bound <= 0:
            return []
        out: list[int] = []
        if t.buried:
            for j in list(itertools.islice(t.buried.values(), bound)):
                self._leave(j)
                j.attempts = 0
                self._ready(j)
                out.append(j.job)
            return out
        while len(out) < bound and t.n_delayed:
            e = _top(t.delayed)
            if e is None:
                break
            heapq.heappop(t.delayed)
            j = e[3]
            t.n_delayed -= 1
            self._ready(j)
            out.append(j.job)
        return out

    def kick_job(self, job: int) -> bool:
        j = self.jobs.get(job)
        if j is None or j.state not in (BURIED, DELAYED):
            return False
        if j.state == BURIED:
            j.attempts = 0
        self._leave(j)
        self._ready(j)
        return True

    def peek_ready(self, channel: str) -> tuple[int, bytes] | None:
        t = self.tubes.get(channel)
        if t is None:
            return None
        self._catch_up(t, time.time())
        e = _top(t.ready) if t.n_ready else None
        return None if e is None else (e[3].job, e[3].body)

    def peek_delayed(self, channel: str) -> Job | None:
        t = self.tubes.get(channel)
        e = _top(t.delayed) if t is not None and t.n_delayed else None
        return None if e is None else self.find_job(e[1])

    def holds_jobs(self, channel: str) -> bool:
        t = self.tubes.get(channel)
        return t is not None and not t.empty()

    def peek_buried(self, channel: str) -> Job | None:
        t = self.tubes.get(channel)
        if t is None or not t.buried:
            return None
        return self.find_job(next(iter(t.buried)))

    def stats(self) -> Stats:
        now = time.time()
        out: dict[str, ChannelStats] = {}
        for name in sorted(self.tubes):
            t = self.tubes[name]
            self._catch_up(t, now)
            out[name] = ChannelStats(ready=t.n_ready, delayed=t.n_delayed, leased=t.n_reserved, dead=len(t.buried),
                                     urgent=t.n_urgent)
        return Stats(channels=out)

    def sync(self) -> None:
        """Nothing to sync."""

    def load_stats(self) -> dict[int, tuple[int, int, int, int, int, int]]:
        return {}

    def save_stats(self, rows: Sequence[tuple[int, int, int, int, int, int, int]], gone: Sequence[int]) -> None:
        """Not kept: the jobs themselves do not outlive the process."""

    def sweep(self) -> dict[str, int]:
        return {}
