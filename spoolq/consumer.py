"""Workers: the consumer side.

A :class:`Worker` runs the lease → handler → ack/nack loop in N threads and
stops gracefully on SIGTERM/SIGINT: in-flight handlers may finish within the
grace period; leases still held after it are released (ready again at once).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from .errors import LeaseError, SpoolqError
from .lease import Lease


class Leaser(Protocol):
    """What a worker needs of its spool."""

    def lease(self, channel: str, *, visibility: float = 30.0, wait: float = 0.0) -> Lease | None: ...


__all__ = ["Reject", "Worker"]

log = logging.getLogger("spoolq.worker")


class Reject(Exception):
    """Raise from a worker handler to dead-letter the message at once (no retries)."""


class Worker:
    """Runs ``handler(lease)`` on the messages of one channel, in ``concurrency`` threads.

    Returning from the handler acks the message; raising :class:`Reject`
    dead-letters it; any other exception nacks it with backoff (and after
    ``max_attempts`` it is dead-lettered).
    """

    def __init__(
        self,
        spool: Leaser,
        channel: str,
        handler: Callable[[Lease], Any],
        *,
        concurrency: int = 1,
        visibility: float = 30.0,
        grace: float = 30.0,
        poll: float = 0.5,
    ) -> None:
        if type(concurrency) is not int or concurrency < 1:
            raise SpoolqError(f"concurrency must be a positive int, not {concurrency!r}")
        self.spool = spool
        self.channel = channel
        self.handler = handler
        self.concurrency = concurrency
        self.visibility = visibility
        self.grace = grace
        self.poll = poll
        self.processed = 0
        self.failed = 0
        self.rejected = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: dict[int, Lease] = {}

    def handle(self, lease: Lease) -> str:
        """Run the handler on one lease and finish it; returns ``acked``, ``nacked``, ``rejected`` or ``lost``."""
        key = id(lease)
        with self._lock:
            self._in_flight[key] = lease
        try:
            try:
                self.handler(lease)
            except Reject as e:
                try:
                    lease.dead(str(e) or "rejected by handler")
                except LeaseError as le:
                    log.warning("could not dead-letter %s: %s", lease.id, le)
                    return "lost"
                with self._lock:
                    self.rejected += 1
                return "rejected"
            except Exception as e:
                log.exception("handler failed on message %s (attempt %d)", lease.id, lease.attempts)
                try:
                    lease.nack(reason=f"{type(e).__name__}: {e}"[:500])
                except LeaseError as le:
                    log.warning("could not nack %s: %s", lease.id, le)
                    return "lost"
                with self._lock:
                    self.failed += 1
                return "nacked"
            try:
                lease.ack()
            except LeaseError as le:
                log.warning("could not ack %s: %s", lease.id, le)
                return "lost"
            with self._lock:
                self.processed += 1
            return "acked"
        finally:
            with self._lock:
                self._in_flight.pop(key, None)

    def step(self, wait: float = 0.0) -> bool:
        """Lease and handle at most one message in the calling thread. Returns whether one was handled."""
        lease = self.spool.lease(self.channel, visibility=self.visibility, wait=wait)
        if lease is None:
            return False
        self.handle(lease)
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step(wait=self.poll)
            except SpoolqError as e:
                log.error("worker on %r: %s", self.channel, e)
                self._stop.wait(1.0)

    def stop(self) -> None:
        """Ask the worker to stop after the messages in hand."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, *, install_signal_handlers: bool = True) -> None:
        """Run until :meth:`stop` (or SIGTERM/SIGINT when called in the main thread)."""
        previous: dict[signal.Signals, Any] = {}
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, lambda *_: self.stop())
        threads = [
            threading.Thread(target=self._loop, name=f"spoolq-worker-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        try:
            for t in threads:
                t.start()
            while not self._stop.wait(0.2):
                pass
            deadline = time.monotonic() + self.grace
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
            with self._lock:
                stuck = list(self._in_flight.values())
            for lease in stuck:  # handlers that outlived the grace period: give their messages back
                try:
                    lease.nack(0)
                    log.warning("released message %s still in its handler after %.0fs", lease.id, self.grace)
                except LeaseError:
                    pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
