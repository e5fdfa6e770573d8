"""A spool's messages addressed by job number (``spool.jobs``), for the beanstalkd front-end and admin
tools: the policy side of ``spoolq.store.jobs`` (validation, the fast path of a plain put)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from . import _bell
from .errors import SpoolqError
from .lease import Lease
from .message import MAX_PRIORITY, _take_ids, check_seconds
from .store.commit import WriteRequest
from .store.jobs import Job, Jobs
from .store.names import Names
from .store.routes import RoutesFile

__all__ = ["JobOps"]

# Spool._prepare_many(bodies, channel, to, priority, delay, ttl, headers, ids, texts=False)
Prepare = Callable[..., tuple[WriteRequest | None, list[Any]]]


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class JobOps:
    """A spool's messages addressed by job number (``spool.jobs``): for the beanstalkd front-end
    and admin tools. Job numbers are node-local, unique and never reused."""

    def __init__(self, jobs: Jobs, names: Names, routes: RoutesFile, max_message_size: int,
                 prepare: Prepare) -> None:
        self._jobs = jobs
        self._names = names
        self._routes = routes
        self._max_message_size = max_message_size
        self._prepare = prepare  # Spool._prepare_many: the general path's checks and row layouts

    def put(self, items: Sequence[tuple[bytes, str, int, float, dict[str, str] | None]]) -> list[int | SpoolqError]:
        """Send several messages in ONE transaction, now, in the calling thread.

        Each item is ``(body, channel, priority, delay, headers)``; routes
        apply. Returns, per item, its job number or the validation error that
        refused it (the others are still sent). Storage errors raise.
        """
        out: list[int | SpoolqError] = []
        writes: list[WriteRequest] = []
        limit = self._max_message_size
        channels = self._names.channels
        route = self._routes.route
        for body, channel, priority, delay, headers in items:
            ch = channels.get(channel)
            if (ch is not None and not delay and headers is None and type(body) is bytes and len(body) <= limit
                    and type(priority) is int and 0 <= priority <= MAX_PRIORITY
                    and route(channel) is None):
                idb = _take_ids(1).to_bytes(16, "big")
                bell = _bell.channel_bell(channel)
                if len(items) == 1:  # a put alone: one INSERT, no request (see GroupCommit.put_job)
                    job = self._jobs.put_plain(ch, priority, idb, body, bell)
                    if job is not None:
                        return [job]
                w = WriteRequest()  # the common case, without the general path's checks and lists
                w.inbox.append((ch, priority, idb, body))
                w.bells.add(bell)
            else:
                try:
                    pw, _ = self._prepare([body], channel, None, priority, delay, None, headers, None,
                                                texts=False)
                except SpoolqError as e:
                    out.append(e)
                    continue
                assert pw is not None
                w = pw
            writes.append(w)
            out.append(-1)
        numbers = iter(self._jobs.put(writes) if writes else [])
        return [next(numbers) if r == -1 else r for r in out]

    def put_plain(self, body: bytes, channel: str, priority: int) -> int | None:
        """A put alone, of an existing channel, with no delay, headers or route: one INSERT now (see
        ``GroupCommit.put_job``). Its job number; None when it cannot go this way (nothing was written:
        :meth:`put` takes it). Storage errors raise."""
        ch = self._names.channels.get(channel)
        if (ch is None or type(body) is not bytes or len(body) > self._max_message_size
                or type(priority) is not int or not 0 <= priority <= MAX_PRIORITY
                or self._routes.route(channel) is not None):
            return None
        return self._jobs.put_plain(ch, priority, _take_ids(1).to_bytes(16, "big"), body,
                                    _bell.channel_bell(channel))

    def promote_due(self, channels: Sequence[str]) -> int:
        """Make the delayed messages of ``channels`` whose time has come ready now. Returns how many."""
        return self._jobs.promote_due(channels)

    def lease_any(
        self, channels: Sequence[str], *, visibility: float,
        visibility_for: Callable[[bytes | None], float | None] | None = None,
    ) -> tuple[Lease | None, float | None]:
        """Lease the most urgent ready message of any of ``channels`` (priority, then id).

        ``visibility_for(headers_blob)`` may give a message its own lease
        length (beanstalkd's per-job TTR); ``None`` means ``visibility``.
        Returns ``(lease, None)``, or ``(None, when)``: the Unix time something
        may become ready, or ``None`` if nothing is pending.
        """
        v = check_seconds("visibility", visibility, allow_zero=False)
        return self._jobs.lease_any(channels, _ms(v), visibility_for)  # type: ignore[arg-type]

    def lease(self, job: int, *, visibility: float,
              visibility_for: Callable[[bytes | None], float | None] | None = None) -> Lease | None:
        """Lease the message with job number ``job`` if it is ready, delayed or buried (not leased)."""
        v = check_seconds("visibility", visibility, allow_zero=False)
        return self._jobs.lease(job, _ms(v), visibility_for)  # type: ignore[arg-type]

    def find(self, job: int) -> Job | None:
        """The message with job number ``job`` wherever it is (ready, reserved, delayed, buried).

        Scans the inbox: its cost grows with the queue."""
        return self._jobs.find(job)

    def delete(self, job: int, found: Job | None = None) -> bool:
        """Delete the message with job number ``job`` if it is ready, delayed or buried (not leased).
        ``found``: what :meth:`find` said of it (its table is then written by its key, not scanned)."""
        return self._jobs.delete(job, found)

    def kick(self, channel: str, bound: int) -> list[int]:
        """beanstalkd's kick: make up to ``bound`` dead letters of ``channel`` ready (oldest first); if
        it has none, make up to ``bound`` delayed messages ready now. Returns their job numbers."""
        return self._jobs.kick(channel, bound)

    def kick_one(self, job: int) -> bool:
        """Make the buried (dead) or delayed message with job number ``job`` ready now."""
        return self._jobs.kick_one(job)

    def peek_delayed(self, channel: str) -> Job | None:
        """The delayed message of ``channel`` that becomes ready first."""
        return self._jobs.peek_delayed(channel)

    def own(self) -> int:
        """Declare this object the spool's only user (its caller holds a lock on the directory, as a
        standalone beanstalkd server does): job numbers are then reserved one transaction at a time, so
        after a crash they go on at the last one plus one, and messages leased by a previous owner, who
        is gone, are made ready now (their attempts stay counted). Returns how many were made ready."""
        return self._jobs.own()

    def load_stats(self) -> dict[int, tuple[int, int, int, int, int, int]]:
        """beanstalkd's per-job counters saved by :meth:`save_stats`, by job number: (delay, reserves,
        timeouts, releases, buries, kicks). Rows of jobs that no longer exist are removed."""
        return self._jobs.load_stats()

    def save_stats(self, rows: Sequence[tuple[int, int, int, int, int, int, int]], gone: Sequence[int]) -> None:
        """Save per-job counters (each row: job number, then the fields of :meth:`load_stats`) and forget
        those of the ``gone`` job numbers, in one transaction."""
        self._jobs.save_stats(rows, gone)

    def holds_any(self, channel: str) -> bool:
        """Whether ``channel`` holds any message: ready, leased, delayed or buried (dead)."""
        return self._jobs.holds_any(channel)

    def peek_buried(self, channel: str) -> Job | None:
        """The oldest dead letter of ``channel`` (beanstalkd: the next buried job)."""
        return self._jobs.peek_buried(channel)
