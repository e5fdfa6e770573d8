"""The syncs of commits written on an event loop, shared: one thread, one hop per group.

A small batch received from a peer is written by the event loop itself
(``GroupCommit.wait_now``); under ``full`` its answer must still wait for a sync
of the WAL, which blocks, so it runs in another thread. Each batch used to
send its own sync through the loop's default executor (``asyncio.to_thread``):
a hop per batch, two when an idle worker thread woke for nothing, and batches
that arrived while a sync ran each waited for a sync of their own (issue 15:
at 10,000 msg/s, ~2 messages per batch).

Here one thread (started on demand, gone after ``LINGER`` idle seconds) does
the syncs. A caller queues a future and waits; the thread takes *every*
queued caller, runs one sync, and wakes each loop once for all of its callers.
A sync covers them all: each caller's commit was done before it queued, and
WAL frames are written in order, so one ``fdatasync`` started after that makes
every one of them durable (``Database.sync_created``). Callers that queue while
a sync runs share the next one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Final

__all__ = ["LoopSync"]

LINGER: Final = 1.0  # an idle sync thread waits this long for more before it ends


class LoopSync:
    """Runs ``sync()`` in one thread for event-loop callers, one sync for all callers queued at its start."""

    def __init__(self, sync: Callable[[], None], name: str = "spoolq-sync") -> None:
        self._sync = sync
        self._name = name
        self._cv = threading.Condition(threading.Lock())
        self._waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._thread: threading.Thread | None = None
        self._idle = False  # the thread waits for callers (it needs a notify)
        self._closing = False
        self.syncs = 0  # syncs run, and the callers they served (for tests and profiling)
        self.callers = 0

    async def wait(self) -> None:
        """Return once a sync that started after this call has finished; raise its error if it failed.

        Raises:
            StorageError: the sync failed (from ``sync()``).
            RuntimeError: the object was closed.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._cv:
            if self._closing:
                raise RuntimeError("the spool is closed")
            self._waiting.append((loop, fut))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            elif self._idle:
                self._idle = False
                self._cv.notify()
        await fut

    def close(self) -> None:
        """Stop the thread after the syncs already asked for (waits for it)."""
        with self._cv:
            self._closing = True
            self._cv.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        cv = self._cv
        while True:
            with cv:
                while not self._waiting:
                    if self._closing:
                        self._thread = None
                        return
                    self._idle = True
                    cv.wait(LINGER)
                    if self._idle and not self._waiting:  # nobody came (or close() woke it): end
                        self._idle = False
                        self._thread = None
                        return
                self._idle = False
                group, self._waiting = self._waiting, []
            error: BaseException | None = None
            try:
                self._sync()
            except BaseException as e:  # every caller of this group gets it
                error = e
            self.syncs += 1
            self.callers += len(group)
            by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
            for loop, fut in group:
                by_loop.setdefault(loop, []).append(fut)
            for loop, futs in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_settle, futs, error)
                except RuntimeError:  # that loop is closed: nobody waits there any more
                    pass


def _settle(futs: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for fut in futs:
        if not fut.done():  # a cancelled caller
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)
