"""The spool's counts for ``stats``, ``stats-tube``, ``list-tubes`` and ``pause-tube``, off the event loop.

Counting a spool's messages takes time that grows with the queue (about 0.1 s per 200,000), and
beanstalkd answers these commands at once from counters it keeps. Counted on the event loop, one
client asking for ``stats`` in a loop would stall every other connection. So a server with a spool
counts in a worker thread, one count at a time: the connection that asked waits (its later commands
too, in order), the others are served meanwhile, and the requests that arrive while a count runs
share the next one (a count that began before a request could miss the request's own earlier puts).
A server without a spool counts its memory at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ..errors import SpoolqError

if TYPE_CHECKING:
    from ..store.inbox import Stats

__all__ = ["Counting"]

log = logging.getLogger("spoolq.beanstalk")


class _Store(Protocol):
    def stats(self) -> Stats: ...
    def promote_due(self, channels: list[str]) -> int: ...


class Counting:
    """Counts for one server. ``expire()`` runs on the loop before each count (reservations that ran
    out are counted as timeouts first, as beanstalkd's stats show them)."""

    def __init__(self, store: _Store, in_thread: bool, expire: Callable[[], None]) -> None:
        self._store = store
        self._in_thread = in_thread
        self._expire = expire
        self._next: list[Callable[[Stats | None], None]] = []
        self._running = False

    def count(self) -> Stats:
        """The counts now, due delayed jobs made ready first (beanstalkd shows a job ready the moment its
        delay is over; the spool moves them lazily). Blocking: in a worker thread, or in memory."""
        st = self._store.stats()
        due = [ch for ch, x in st.channels.items() if x.delayed]
        if due:
            try:
                moved = self._store.promote_due(due)
            except SpoolqError as e:
                log.error("moving due delayed jobs failed: %s", e)
                moved = 0
            if moved:
                st = self._store.stats()
        return st

    def then(self, fn: Callable[[Stats | None], None]) -> None:
        """Call ``fn`` on the event loop with counts taken after this call (``None``: counting failed)."""
        if not self._in_thread:
            self._expire()
            try:
                st: Stats | None = self.count()
            except SpoolqError as e:
                log.error("counting the jobs failed: %s", e)
                st = None
            fn(st)
            return
        self._next.append(fn)
        if not self._running:
            self._start()

    def _start(self) -> None:
        waiting, self._next = self._next, []
        self._running = True
        self._expire()
        fut = asyncio.get_running_loop().run_in_executor(None, self.count)
        fut.add_done_callback(lambda f: self._done(f, waiting))

    def _done(self, fut: asyncio.Future[Stats], waiting: list[Callable[[Stats | None], None]]) -> None:
        self._running = False
        st: Stats | None = None
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:
            st = fut.result()
        elif isinstance(exc, SpoolqError):
            log.error("counting the jobs failed: %s", exc)
        else:  # a bug: every waiter is still answered
            log.error("counting the jobs failed unexpectedly", exc_info=exc)
        for fn in waiting:
            try:
                fn(st)
            except Exception:
                log.exception("answering a stats command failed")
        if self._next:
            self._start()
