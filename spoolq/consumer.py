"""Leases and workers: the consumer side.

A :class:`Lease` is a consumer's exclusive, time-limited hold on one message.
Finish it with exactly one of ``ack()`` (done: the message is gone),
``nack(delay)`` (failed: ready again after ``delay``, default backoff) or
``dead(detail)`` (give up: move it to dead letters); ``touch()`` extends it.
All SQL lives in ``spool.py``; a lease only remembers its key and token.

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
from typing import TYPE_CHECKING, Any

from .errors import LeaseError, SpoolqError
from .message import Message, _ms_of, id_text_from_bytes

if TYPE_CHECKING:
    from .spool import Spool

__all__ = ["Lease", "Reject", "Worker"]

log = logging.getLogger("spoolq.worker")


class Reject(Exception):
    """Raise from a worker handler to dead-letter the message at once (no retries)."""


class Lease:
    """An exclusive, time-limited hold on one message.

    Attributes:
        channel: the channel it was leased from.
        body: the payload.
        priority: 0 is most urgent.
        attempts: deliveries so far, this one included (1 on the first).
        job: the node-local integer id (what beanstalkd clients see).
        deadline: when the lease runs out (Unix seconds).
    """

    __slots__ = (
        "_ch",
        "_deliver_at",
        "_expires",
        "_hdrs",
        "_id",
        "_idb",
        "_origin",
        "_spool",
        "_until",
        "attempts",
        "body",
        "channel",
        "job",
        "priority",
    )

    def __init__(
        self,
        spool: Spool,
        ch: int,
        channel: str,
        priority: int,
        idb: bytes,
        attempts: int,
        job: int,
        body: bytes,
        hdrs: bytes | None,
        expires: int | None,
        origin: int | None,
        deliver_at: int | None,
        until: int,
    ) -> None:
        self._spool = spool
        self._ch = ch
        self.channel = channel
        self.priority = priority
        self._idb = idb
        self.attempts = attempts
        self.job = job
        self.body = body
        self._hdrs = hdrs
        self._expires = expires
        self._origin = origin
        self._deliver_at = deliver_at
        self._until = until
        self._id: str | None = None

    @property
    def id(self) -> str:
        """The message id (text form)."""
        if self._id is None:
            self._id = id_text_from_bytes(self._idb)
        return self._id

    @property
    def handle(self) -> str:
        """An opaque string that identifies this lease (see ``Spool.lease_by_handle``)."""
        return f"{self._ch}.{self.priority}.{self._idb.hex()}.{self.attempts}"

    @property
    def headers(self) -> dict[str, str]:
        from .spool import decode_headers

        return decode_headers(self._hdrs)

    @property
    def created_at(self) -> float:
        return _ms_of(self._idb) / 1000.0

    @property
    def expires_at(self) -> float | None:
        return self._expires / 1000.0 if self._expires is not None else None

    @property
    def deadline(self) -> float:
        return self._until / 1000.0

    @property
    def origin(self) -> str:
        return self._spool._origin_name(self._origin)

    @property
    def message(self) -> Message:
        """A read-only snapshot of the leased message."""
        return Message(
            id=self.id,
            channel=self.channel,
            body=self.body,
            headers=self.headers,
            priority=self.priority,
            created_at=self.created_at,
            deliver_at=self._deliver_at / 1000.0 if self._deliver_at else None,
            expires_at=self.expires_at,
            attempts=self.attempts,
            origin=self.origin,
            job=self.job,
            state="leased",
        )

    def ack(self) -> None:
        """The message is done: remove it.

        Raises:
            LeaseExpired: the lease ran out first (the message is ready again).
            LeaseLost: the lease is no longer held (acked, nacked, re-leased).
        """
        self._spool._ack(self)

    def nack(self, delay: float | None = None, *, priority: int | None = None) -> bool:
        """Processing failed: make the message ready again after ``delay`` seconds.

        Without ``delay``, the wait is exponential backoff with jitter from the
        attempt count. When the channel's ``max_attempts`` is used up, the
        message goes to dead letters instead.

        Returns:
            ``True`` if the message will be delivered again, ``False`` if it
            became a dead letter.
        """
        return self._spool._nack(self, delay, priority)

    def touch(self, visibility: float = 30.0) -> None:
        """Extend the lease to ``visibility`` seconds from now."""
        self._spool._touch(self, visibility)

    def dead(self, detail: str = "", *, reason: str = "rejected", priority: int | None = None) -> None:
        """Give up on the message: move it to dead letters with ``detail`` (and a new priority)."""
        self._spool._dead(self, reason, str(detail), priority)

    def __repr__(self) -> str:
        return f"<Lease {self.id} channel={self.channel!r} attempts={self.attempts} size={len(self.body)}>"


class Worker:
    """Runs ``handler(lease)`` on the messages of one channel, in ``concurrency`` threads.

    Returning from the handler acks the message; raising :class:`Reject`
    dead-letters it; any other exception nacks it with backoff (and after
    ``max_attempts`` it is dead-lettered).
    """

    def __init__(
        self,
        spool: Spool,
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
            except Exception:
                log.exception("handler failed on message %s (attempt %d)", lease.id, lease.attempts)
                try:
                    lease.nack()
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
