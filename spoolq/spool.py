"""The spool: one node's durable store, as its users see it.

A spool is a directory holding ``spool.db`` (SQLite, WAL mode) and ``bells/``
(wake-up files, see ``_bell.py``). Many processes may open the same spool at
once. This module is the policy: it validates what callers pass, decides where
a message goes (inbox, delayed, outbox by ``to=`` or the routes), and hands
the work to ``spoolq.store``, the only package that speaks SQL (its modules
carry the theory of operation: tables, states, group commit, durability).
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from . import _bell
from .codec import BATCH_BYTES, BATCH_MESSAGES
from .errors import InvalidArgument, InvalidType, MessageTooLarge, SpoolqError, SpoolUnavailable
from .jobops import JobOps
from .lease import Lease, load_secret
from .message import (
    DEFAULT_PRIORITY,
    MAX_PRIORITY,
    MAX_SECONDS,
    DeadLetter,
    Message,
    _take_ids,
    check_body,
    check_channel,
    check_headers,
    check_priority,
    check_seconds,
    encode_headers,
    id_bytes,
    id_text,
    id_text_from_bytes,
)
from .retry import backoff
from .routing import Route, check_to
from .store import sql
from .store.commit import GroupCommit, WriteRequest
from .store.db import BUSY_TIMEOUT, Database
from .store.events import EventLog, TraceSetting
from .store.inbox import ChannelStats, Inbox, PeerStats, Stats
from .store.jobs import Job, Jobs
from .store.names import Names
from .store.outbox import Incoming, Outbox, OutboxRecord
from .store.routes import RoutesFile

if TYPE_CHECKING:
    from .admin import AdminOps
    from .consumer import Worker

__all__ = [
    "SCHEMA_VERSION", "ChannelStats", "PeerStats", "Spool", "Stats", "Route", "OutboxRecord", "Job", "JobOps",
    "default_spool_path",
]

SCHEMA_VERSION: Final = sql.SCHEMA_VERSION
DEFAULT_MAX_MESSAGE_SIZE: Final = 1 << 20
DEFAULT_MAX_ATTEMPTS: Final = 20
DEFAULT_SEEN_RETENTION: Final = 7 * 86400.0


def default_spool_path() -> Path:
    """Where ``Spool()`` lives without a path: ``$SPOOLQ_SPOOL``, else a per-user directory."""
    env = os.environ.get("SPOOLQ_SPOOL")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "spoolq"


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class Spool:
    """One node's durable local queue.

    Args:
        path: spool directory (created if missing). Defaults to
            ``$SPOOLQ_SPOOL`` or a per-user directory.
        durability: ``"full"`` (default: a message is synced to disk before
            ``send`` returns; survives power loss) or ``"normal"`` (survives
            any process crash; the last sends may be lost on power loss).
        max_message_size: largest body plus headers, in bytes (default 1 MiB).
        max_attempts: deliveries before a message is dead-lettered, for
            channels without their own setting (default 20).
        seen_retention: seconds an accepted id is remembered for dedup.
        clock: returns the time in Unix seconds (tests pass a fake clock).
        read_only: open an existing spool for inspection only (a read-only
            mount, another user's spool): nothing is created or written, and
            every call that would write raises ``SpoolUnavailable``.
        trace: keep the per-message event log (:meth:`trace_events`, ``spoolq
            trace``), written in the same transaction as each change. ``None``
            (default): follow the setting stored in the spool, which every
            process shares (off in a new spool; a node turns it on when its
            config says ``trace = true``, as does ``spoolq trace --enable``; see
            :meth:`set_trace`). ``True``/``False``: this object only.

    Raises:
        SpoolUnavailable: the directory or database cannot be created or written.
        SpoolVersionError: the spool was written by a newer spoolq.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        durability: Literal["full", "normal"] = "full",
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        seen_retention: float = DEFAULT_SEEN_RETENTION,
        clock: Callable[[], float] | None = None,
        busy_timeout: float = BUSY_TIMEOUT,
        read_only: bool = False,
        trace: bool | None = None,
    ) -> None:
        if durability not in ("full", "normal"):
            raise InvalidArgument(
                f"durability must be 'full' or 'normal', not {durability!r}",
                hint="'full' survives power loss; 'normal' survives process crashes",
            )
        if type(max_message_size) is not int or max_message_size < 1:
            raise InvalidArgument(f"max_message_size must be a positive int, not {max_message_size!r}")
        if type(max_attempts) is not int or max_attempts < 1:
            raise InvalidArgument(f"max_attempts must be a positive int, not {max_attempts!r}")
        self.durability = durability
        self.max_message_size = max_message_size
        self.max_attempts = max_attempts
        retention_ms = int(check_seconds("seen_retention", seen_retention) * 1000)  # type: ignore[operator]
        self.seen_retention_ms = retention_ms
        self._clock = clock or time.time
        self.path = Path(path) if path is not None else default_spool_path()
        self.db_path = self.path / "spool.db"
        self._db = Database(self.path, durability, busy_timeout, read_only=read_only)
        self.node_id: str = self._db.node_id
        try:
            self.lease_secret: bytes = load_secret(self.path)  # signs lease handles (Lease.handle)
        except BaseException:
            self._db.close()
            raise
        self.bells = _bell.Bells(self.path / "bells")
        self._names = Names(self._db, self.node_id, max_attempts)
        try:
            self._tracing = TraceSetting(self._db, None if trace is None else bool(trace))
        except BaseException:
            self._db.close()
            raise
        self._commit = GroupCommit(self._db, self.bells, self._clock, retention_ms, self._names, self._tracing)
        self._inbox = Inbox(self._db, self._names, self._commit.jobs, self.bells, self._clock,
                            functools.partial(Lease, self), retention_ms, self._tracing)
        self._outbox = Outbox(self._db, self._names, self._commit, self._tracing)
        self.event_log = EventLog(self._db, self._clock, self._tracing)  # pruning, failed forwards (the node)
        self._routes = RoutesFile(self.path, self._db.sync_dir)
        self.jobs = JobOps(Jobs(self._db, self._names, self._inbox, self._commit, self.bells), self._names,
                           self._routes, max_message_size, self._prepare_many)
        self._watches = _bell.ThreadWatches(self.path / "bells")
        self._admin: AdminOps | None = None

    @property
    def admin(self) -> AdminOps:
        """Queue administration (browse, hold, release, requeue, delete, audit): see :mod:`spoolq.admin`.
        Made on first use, so that programs which never administer (a beanstalkd server starting up)
        do not import it."""
        if self._admin is None:
            from .admin import AdminOps
            from .store.admin import Admin

            self._admin = AdminOps(Admin(self._db, self._names, self.bells, self._clock, self._tracing))
        return self._admin

    @property
    def trace(self) -> bool:
        """Whether this object writes the event log now (its own ``trace=``, or the spool's setting)."""
        return self._tracing.on

    def trace_setting(self) -> bool:
        """The event-log setting stored in the spool, which objects opened with ``trace=None`` follow."""
        return self._tracing.stored()

    def set_trace(self, on: bool) -> None:
        """Store the event-log setting for every process using this spool (``spoolq trace --enable``;
        a node does this when it starts, from its config's ``trace``). Processes that have the spool
        open with ``trace=None`` follow within about a second; ``trace=True/False`` objects do not.

        Raises:
            SpoolUnavailable: the spool is read-only.
        """
        if self._db.read_only:
            raise SpoolUnavailable(f"the spool at {self.path} is open read-only", hint="open it without read_only")
        self._tracing.store(on)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- producing ----------------------------------------------------------------------------

    def send(
        self,
        body: bytes,
        channel: str,
        *,
        to: str | Sequence[str] | None = None,
        priority: int = DEFAULT_PRIORITY,
        delay: float = 0,
        ttl: float | None = None,
        headers: dict[str, str] | None = None,
        id: str | bytes | None = None,
    ) -> str:
        """Store one message durably and return its id.

        Args:
            body: the payload (bytes).
            channel: channel name, ``[A-Za-z0-9._-]{1,200}``.
            to: ``None`` for this node's inbox; a peer name or URL (or a list
                of them, one copy each) to forward it through the outbox.
            priority: 0 (most urgent) to 2**32-1; default 1024.
            delay: seconds before the message becomes ready.
            ttl: seconds after which an undelivered message is dead-lettered.
            headers: str -> str metadata.
            id: your own id (see :func:`spoolq.new_id`) to make retries of this
                call idempotent: an id the spool has already seen makes the
                call a no-op that returns that id.

        Returns:
            The message id (text form).

        Raises:
            InvalidArgument: bad channel, priority, delay, ttl, headers or id
                (nothing is stored).
            MessageTooLarge: body and headers exceed ``max_message_size``.
            StorageError: the spool could not store it (nothing is stored).
        """
        ch = self._names.channels.get(channel)
        if ch is None:
            check_channel(channel)
        if type(body) is not bytes or len(body) > self.max_message_size:
            body = check_body(body, self.max_message_size)
        if type(priority) is not int or not 0 <= priority <= MAX_PRIORITY:
            check_priority(priority)
        route = None
        if to is None:
            to = self._routes.route(channel)
            if to is None:
                if not delay and ttl is None and headers is None and id is None:  # the common case
                    if ch is None:
                        ch = self._names.create_channel(channel)
                    first = _take_ids(1)
                    self._commit.send_one(ch, priority, first.to_bytes(16, "big"), body, _bell.CHANNEL_PREFIX + channel)
                    return id_text(first)
            else:
                route = self._routes.matched(channel)
        w = WriteRequest()
        w.route = route
        if id is None:
            idb = _take_ids(1).to_bytes(16, "big")
        else:
            idb = id_bytes(id)
            w.dedup = True
        self._add_rows(w, ch, channel, [idb], [body], to, priority, delay, ttl, headers)
        self._commit.submit([w])
        return id_text_from_bytes(idb)

    def send_many(
        self,
        bodies: Iterable[bytes],
        channel: str,
        *,
        to: str | Sequence[str] | None = None,
        priority: int = DEFAULT_PRIORITY,
        delay: float = 0,
        ttl: float | None = None,
        headers: dict[str, str] | None = None,
        ids: Sequence[str | bytes] | None = None,
    ) -> list[str]:
        """Store many messages in one transaction; all or none.

        Takes the options of :meth:`send`, applied to every message; ``ids``
        optionally gives one caller-chosen id per body (dedup as in ``send``).

        Returns:
            The ids, in the order of ``bodies``.
        """
        w, idlist = self._prepare_many(bodies, channel, to, priority, delay, ttl, headers, ids)
        if w is not None:
            self._commit.submit([w])
        return idlist

    async def asend(self, body: bytes, channel: str, **options: Any) -> str:
        """:meth:`send` for asyncio: never blocks the event loop; concurrent tasks share commits."""
        if "id" in options:
            i = options.pop("id")
            if i is not None:
                options["ids"] = [i]
        result = await self.asend_many([body], channel, **options)
        return result[0]

    async def asend_many(self, bodies: Iterable[bytes], channel: str, **options: Any) -> list[str]:
        """:meth:`send_many` for asyncio."""
        if channel in self._names.channels and options.get("to") is None and self._routes.route(channel) is None:
            w, idlist = self._prepare_many(bodies, channel, **options)
        else:  # a name may have to be created: no SQLite write or lock wait on the event loop
            w, idlist = await asyncio.to_thread(functools.partial(self._prepare_many, bodies, channel, **options))
        if w is not None:
            await self._commit.wait([w])
        return idlist

    def send_items(self, channel: str, items: Sequence[tuple[bytes, dict[str, Any]]]) -> list[str]:
        """Send messages of one channel, each with its own options (those of :meth:`send`), in one
        transaction: all or none. Returns their ids."""
        w, ids = self._prepare_items(channel, items)
        self._commit.submit([w])
        return ids

    async def asend_one(self, body: bytes, channel: str) -> str:
        """:meth:`asend` of one message without options (the HTTP API's usual request): when the
        channel exists and no route takes it, the message joins the loop turn's shared request."""
        ch = self._names.channels.get(channel)
        if ch is None or self._routes.route(channel) is not None:
            ids = await self.asend_items(channel, [(body, {})])
            return ids[0]
        if type(body) is not bytes or len(body) > self.max_message_size:
            body = check_body(body, self.max_message_size)
        first = _take_ids(1)
        await self._commit.wait_row(ch, DEFAULT_PRIORITY, first.to_bytes(16, "big"), body,
                                    _bell.channel_bell(channel))
        return id_text(first)

    async def asend_items(self, channel: str, items: Sequence[tuple[bytes, dict[str, Any]]]) -> list[str]:
        """Send messages of one channel, each with its own options (those of :meth:`send`), in one
        transaction, without blocking the event loop (the HTTP API's sends).

        Every item is validated before anything is written, and nothing is
        created (not even the channel) when an item is refused.
        """
        if channel in self._names.channels and self._routes.route(channel) is None and not any(o for _, o in items):
            w, ids = self._prepare_items(channel, items)
        else:  # a name may have to be created: no SQLite write or lock wait on the event loop
            w, ids = await asyncio.to_thread(self._prepare_items, channel, items)
        await self._commit.wait([w])
        return ids

    def _prepare_items(self, channel: str,
                       items: Sequence[tuple[bytes, dict[str, Any]]]) -> tuple[WriteRequest, list[str]]:
        ch = self._names.channels.get(channel)
        if ch is None:
            check_channel(channel)
        limit = self.max_message_size
        routed = self._routes.route(channel)
        w = WriteRequest()
        if routed is None and all(not opts for _, opts in items):  # the common case: plain bodies
            bodies = []
            for body, _ in items:
                if type(body) is not bytes or len(body) > limit:
                    body = check_body(body, limit)
                bodies.append(body)
            if ch is None:
                ch = self._names.create_channel(channel)
            first = _take_ids(len(bodies))
            w.inbox = [(ch, DEFAULT_PRIORITY, (first + i).to_bytes(16, "big"), b) for i, b in enumerate(bodies)]
            w.block = len(bodies)
            w.bells.add(_bell.channel_bell(channel))
            return w, [id_text(first + i) for i in range(len(bodies))]
        return w, self._add_items(w, [(body, channel, opts) for body, opts in items])

    def _add_items(self, w: WriteRequest, items: Sequence[tuple[bytes, str, dict[str, Any]]]) -> list[str]:
        """Validate ``(body, channel, options)`` items, then add their rows to ``w`` (the general layout).

        Everything is validated before any channel or peer is created."""
        limit = self.max_message_size
        checked = []
        for body, channel, opts in items:
            check_channel(channel)
            if type(body) is not bytes or len(body) > limit:
                body = check_body(body, limit)
            priority = opts.get("priority", DEFAULT_PRIORITY)
            check_priority(priority)
            to = opts.get("to")
            if to is None:
                to = self._routes.route(channel)
                w.route = self._routes.matched(channel) if to is not None else w.route
            self._check_options([body], to, opts.get("delay", 0), opts.get("ttl"), opts.get("headers"))
            mid = opts.get("id")
            checked.append((body, channel, priority, to, None if mid is None else id_bytes(mid), opts))
        ids: list[str] = []
        for body, channel, priority, to, idb, opts in checked:
            if idb is None:
                idb = _take_ids(1).to_bytes(16, "big")
            else:
                w.dedup = True
            ch = self._names.create_channel(channel)
            self._add_rows(w, ch, channel, [idb], [body], to, priority, opts.get("delay", 0), opts.get("ttl"),
                           opts.get("headers"))
            ids.append(id_text_from_bytes(idb))
        return ids

    async def acommit(self, sends: Sequence[tuple[bytes, str, dict[str, Any]]], acks: Sequence[Lease]) -> list[str]:
        """Send messages and ack leases in ONE transaction, all or nothing (STOMP's COMMIT), without
        blocking the event loop. Each send is ``(body, channel, options of send)``; synced under ``full``.

        Returns the ids of the sends.

        Raises:
            InvalidArgument (and the other send errors): a send is refused; nothing happened.
            LeaseExpired, LeaseLost: a lease is no longer held; nothing happened.
        """
        for x in acks:
            self._check_owner(x)
        w = WriteRequest()
        ids = await asyncio.to_thread(self._add_items, w, sends)
        w.acks = [x.key for x in acks]
        w.ack_leases = list(acks)
        await self._commit.wait([w])
        return ids

    def _prepare_many(
        self,
        bodies: Iterable[bytes],
        channel: str,
        to: str | Sequence[str] | None = None,
        priority: int = DEFAULT_PRIORITY,
        delay: float = 0,
        ttl: float | None = None,
        headers: dict[str, str] | None = None,
        ids: Sequence[str | bytes] | None = None,
        *,
        texts: bool = True,
    ) -> tuple[WriteRequest | None, list[str]]:
        if isinstance(bodies, (bytes, bytearray, str, memoryview)):
            raise InvalidType(
                "bodies must be a list of bodies, not a single body",
                hint="use send() for one message, or wrap it: send_many([body], ...)",
            )
        ch = self._names.channels.get(channel)
        if ch is None:
            check_channel(channel)
        limit = self.max_message_size
        blist = list(bodies)
        for i, b in enumerate(blist):
            if type(b) is not bytes or len(b) > limit:
                blist[i] = check_body(b, limit)
        if type(priority) is not int or not 0 <= priority <= MAX_PRIORITY:
            check_priority(priority)
        n = len(blist)
        w = WriteRequest()
        if to is None:
            to = self._routes.route(channel)
            w.route = self._routes.matched(channel) if to is not None else None
        if ids is not None:
            if len(ids) != n:
                raise InvalidArgument(f"got {len(ids)} ids for {n} bodies", hint="pass one id per body")
            idbs = [id_bytes(x) for x in ids]
            idlist = [id_text_from_bytes(b) for b in idbs]
            w.dedup = True
        else:
            first = _take_ids(n) if n else 0
            idbs = [(first + i).to_bytes(16, "big") for i in range(n)]
            w.block = n  # consecutive ids: the event log writes their events with one statement
            idlist = [id_text(first + i) for i in range(n)] if texts else []
        if n == 0:
            return None, []
        if to is None and not delay and ttl is None and headers is None:
            if ch is None:
                ch = self._names.create_channel(channel)
            w.inbox = [(ch, priority, b, body) for b, body in zip(idbs, blist, strict=True)]
            w.bells.add(_bell.channel_bell(channel))
        else:
            self._add_rows(w, ch, channel, idbs, blist, to, priority, delay, ttl, headers)
        return w, idlist

    def _check_options(
        self, bodies: list[bytes], to: str | Sequence[str] | None, delay: float, ttl: float | None,
        headers: dict[str, str] | None,
    ) -> tuple[float, float | None, bytes | None, list[str] | None]:
        """Validate the less common send options; returns (delay, ttl, headers blob, peers)."""
        d = check_seconds("delay", delay) or 0.0
        t = check_seconds("ttl", ttl, allow_zero=False, allow_none=True)
        hblob = encode_headers(check_headers(headers))
        if hblob is not None:
            limit = self.max_message_size
            for b in bodies:
                if len(b) + len(hblob) > limit:
                    raise _too_large(len(b) + len(hblob), limit)
        return d, t, hblob, check_to(to)

    def _add_rows(
        self,
        w: WriteRequest,
        ch: int | None,
        channel: str,
        idbs: list[bytes],
        bodies: list[bytes],
        to: str | Sequence[str] | None,
        priority: int,
        delay: float,
        ttl: float | None,
        headers: dict[str, str] | None,
    ) -> None:
        """Validate the less common options, then add the rows of one request.

        The channel (and peers) are created only after everything validated,
        so a refused call leaves no trace.
        """
        d, t, hblob, peers = self._check_options(bodies, to, delay, ttl, headers)
        if ch is None:
            ch = self._names.create_channel(channel)
        now = self._now_ms()
        expires = now + int(t * 1000) if t is not None else None
        deliver_at = now + int(d * 1000) if d > 0 else None
        if peers is not None:
            pids = [self._names.peer(p) for p in peers]
            for pid in pids:
                for idb, body in zip(idbs, bodies, strict=True):
                    w.outbox.append((pid, priority, idb, ch, body, hblob, expires, None, deliver_at))
            w.bells.add(_bell.OUTBOX)
            return
        if deliver_at is not None and deliver_at > now:
            for idb, body in zip(idbs, bodies, strict=True):
                w.delayed.append((ch, deliver_at, idb, priority, body, hblob, expires, None, 0))
        else:
            w.layout = "full"
            for idb, body in zip(idbs, bodies, strict=True):
                w.inbox.append((ch, priority, idb, body, hblob, expires, None, 0, deliver_at))
        w.bells.add(_bell.channel_bell(channel))

    # -- consuming ----------------------------------------------------------------------------

    def lease(self, channel: str, *, visibility: float = 30.0, wait: float = 0.0) -> Lease | None:
        """Lease the next ready message of ``channel``.

        Args:
            channel: channel name.
            visibility: seconds the lease lasts; after that the message is
                ready again and the lease counts as a failed attempt.
            wait: seconds to wait for a message (0 returns at once). A send
                from any process wakes the waiter within milliseconds.

        Returns:
            A :class:`Lease`, or ``None`` if no message became ready in time.
        """
        got = self.lease_many(channel, 1, visibility=visibility, wait=wait)
        return got[0] if got else None

    def lease_many(self, channel: str, max: int, *, visibility: float = 30.0, wait: float = 0.0) -> list[Lease]:
        """Lease up to ``max`` ready messages of ``channel`` in priority, then id, order.

        Waits as :meth:`lease` does when none is ready; returns as soon as at
        least one is.
        """
        if type(max) is not int or max < 1:
            raise InvalidArgument(f"max must be a positive int, not {max!r}")
        if type(visibility) is not float or not 0 < visibility <= MAX_SECONDS:
            visibility = check_seconds("visibility", visibility, allow_zero=False)  # type: ignore[assignment]
        if wait:
            wait = check_seconds("wait", wait)  # type: ignore[assignment]
        names = self._names
        ch = names.channels.get(channel)
        if ch is None:
            ch = names.channel(channel, create=False)
        vis_ms = _ms(visibility)
        next_due: int | None = None
        if ch is not None:
            got, next_due = self._inbox.lease_once(ch, channel, max, vis_ms)
            if got or not wait:
                return got
        elif not wait:
            return []
        deadline = time.monotonic() + wait
        watch = self._watches.for_thread()
        bell = _bell.channel_bell(channel)
        if ch is not None and watch.watching(bell):
            # Armed before the look above (by an earlier wait of this thread, which drained it before its
            # own look): a ring since then is pending and wakes the wait, so no second look is needed
            # (issue 15: an empty look is two write transactions, taken from the receiving daemon's lock).
            # A ring from before that look wakes it once for nothing, as a ring of another bell would.
            remaining = deadline - time.monotonic()
            if next_due is not None:
                remaining = min(remaining, _max(0.0005, next_due / 1000.0 - self._clock() + 0.0005))
            watch.wait(remaining)
        watch.add(bell)
        while True:
            watch.drain()  # armed before the look below: a ring after it wakes the wait
            if ch is None:
                ch = names.channel(channel, create=False)
            if ch is not None:
                got, next_due = self._inbox.lease_once(ch, channel, max, vis_ms)
                if got:
                    return got
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            if next_due is not None:
                remaining = min(remaining, _max(0.0005, next_due / 1000.0 - self._clock() + 0.0005))
            watch.wait(remaining)

    def ack_many(self, leases: Sequence[Lease]) -> None:
        """Ack many leases in one transaction: all of them, or (if any is not held) none.

        Raises:
            LeaseExpired, LeaseLost: for the first lease that is no longer
                held; no lease was acked.
        """
        leases = list(leases)
        if not leases:
            return
        for x in leases:
            self._check_owner(x)
        self._inbox.ack_many(leases)

    def release(self, leases: Sequence[Lease]) -> int:
        """Give leases back unprocessed, as if they had not been taken: the messages are ready at
        once and these deliveries do not count as attempts (nor toward ``max_attempts``).

        For leases taken on behalf of a consumer that is gone before it saw them (the node uses it
        for an HTTP long poll whose client disconnected). A consumer that saw a message should
        ``nack`` it instead. Leases no longer held are skipped.

        Returns:
            How many leases were given back.
        """
        leases = list(leases)
        for x in leases:
            self._check_owner(x)
        return self._inbox.release(leases) if leases else 0

    # the finishers a Lease calls (see lease.Finisher)

    def ack_lease(self, lease: Lease) -> None:
        """``lease.ack()``."""
        self._check_owner(lease)
        self._inbox.ack(lease)

    def forward_lease(self, lease: Lease, to: str | Sequence[str]) -> None:
        """``lease.forward(to)``: hand the message on to peer(s) ``to`` under the same id, and ack it."""
        self._check_owner(lease)
        peers = check_to(to)
        assert peers is not None
        pids = [p for p in (self._names.peer(x) for x in peers) if p is not None]
        self._inbox.forward(lease, pids, peers)

    def touch_lease(self, lease: Lease, visibility: float) -> int:
        """``lease.touch()``; returns the new deadline (Unix ms)."""
        self._check_owner(lease)
        v = check_seconds("visibility", visibility, allow_zero=False)
        return self._inbox.touch(lease, _ms(v))  # type: ignore[arg-type]

    def nack_lease(self, lease: Lease, delay: float | None, priority: int | None = None,
                   reason: str | None = None) -> bool:
        """``lease.nack()``: ready again after ``delay`` (default: backoff), or dead when attempts are used up."""
        self._check_owner(lease)
        if delay is None:
            d_ms = int(backoff(lease.attempts) * 1000)
        else:
            d_ms = int(check_seconds("delay", delay) * 1000)  # type: ignore[operator]
        if priority is not None:
            check_priority(priority)
        return self._inbox.nack(lease, d_ms, priority, reason)

    def dead_lease(self, lease: Lease, reason: str, detail: str, priority: int | None = None) -> None:
        """``lease.dead()``."""
        self._check_owner(lease)
        if priority is not None:
            check_priority(priority)
        self._inbox.dead(lease, reason, detail, priority)

    def origin_name(self, ref: int | None) -> str:
        """The node id behind a stored origin reference (this node's for None)."""
        return self._names.origin_name(ref)

    def channel_name(self, ch: int) -> str:
        """The name of a stored channel id."""
        return self._names.channel_name(ch)

    def _check_owner(self, lease: Lease) -> None:
        if lease._spool is not self:
            raise InvalidArgument(
                "this lease belongs to another Spool object",
                hint="ack, nack and touch a lease through the spool that leased it",
            )

    def configure_channel(self, channel: str, *, max_attempts: int | None = None) -> None:
        """Set per-channel options, kept in the spool for every process.

        Args:
            max_attempts: deliveries before a message is dead-lettered;
                ``None`` restores the spool default.
        """
        if max_attempts is not None and (type(max_attempts) is not int or max_attempts < 1):
            raise InvalidArgument(f"max_attempts must be a positive int or None, not {max_attempts!r}")
        self._names.set_max_attempts(channel, max_attempts)

    def worker(
        self,
        channel: str,
        handler: Callable[[Lease], Any],
        *,
        concurrency: int = 1,
        visibility: float = 30.0,
        grace: float = 30.0,
    ) -> Worker:
        """A worker running ``handler`` on every message of ``channel``; call ``.run()``.

        The handler gets a :class:`Lease`. Returning acks the message; raising
        :class:`spoolq.Reject` dead-letters it; any other exception nacks it
        with backoff. SIGTERM/SIGINT stop the worker gracefully.
        """
        check_channel(channel)
        from .consumer import Worker  # on first use: a front-end starting up needs no worker

        return Worker(self, channel, handler, concurrency=concurrency, visibility=visibility, grace=grace)

    # -- routes -------------------------------------------------------------------------------

    def set_routes(self, routes: Sequence[Route]) -> None:
        """Store the routing table for every process using this spool (the daemon does this).

        ``send(channel)`` without ``to=`` then forwards a message whose channel
        matches a route (first match wins) instead of delivering it locally.
        Written to ``routes.json`` in the spool: temp file, fsync, rename.
        """
        self._routes.save(list(routes))

    def routes(self) -> list[Route]:
        """The routing table in effect (see :meth:`set_routes`)."""
        return self._routes.routes()

    # -- the daemon's side: forwarding and receiving ------------------------------------------

    async def areceive(self, messages: Sequence[Incoming], sender: str) -> set[bytes]:
        """Store messages received from a peer in one durable commit (concurrent batches share it),
        dropping ids already seen. Returns the ids that were duplicates.

        The messages must have been validated (``spoolq.codec.check_message``).
        """
        return await self._outbox.receive(messages, sender, self._now_ms())

    def outbox_peers(self) -> list[str]:
        """Peers (names, URLs or failover groups) that have messages waiting in the outbox."""
        return self._outbox.peers()

    def outbox_batch(self, peer: str, *, after: tuple[int, bytes] | None = None, max_messages: int = BATCH_MESSAGES,
                     max_bytes: int = BATCH_BYTES) -> list[OutboxRecord]:
        """The next messages waiting for ``peer``, in priority then id order, after the key ``after``.

        A read: nothing is claimed. The daemon is the only forwarder of a spool
        (it holds a lock), and it keeps the key of the last message it took.
        """
        got = self._outbox.batch(peer, after, max_messages, max_bytes)
        assert got is not None  # only a nowait read gives up
        return got

    def outbox_batch_nowait(self, peer: str, *, after: tuple[int, bytes] | None = None,
                            max_messages: int = BATCH_MESSAGES,
                            max_bytes: int = BATCH_BYTES) -> list[OutboxRecord] | None:
        """:meth:`outbox_batch` for an event loop: ``None`` when it would have to wait for anything
        (the read connection busy in another thread, a name not yet cached); then read from a thread."""
        return self._outbox.batch(peer, after, max_messages, max_bytes, nowait=True)

    def outbox_settle(
        self,
        peer: str,
        done: Sequence[tuple[int, bytes]] = (),
        dead: Sequence[tuple[tuple[int, bytes], str, str]] = (),
        retry: Sequence[tuple[int, bytes]] = (),
        *,
        target: tuple[str, str] | None = None,
        duplicates: Collection[bytes] = (),
    ) -> None:
        """Apply a peer's answer in one transaction: remove ``done`` keys (accepted or duplicate),
        move ``dead`` ones (key, reason, detail) to dead letters, count a try on ``retry`` ones. For
        the event log: ``target`` (name, URL) answered, and already had the ``duplicates`` ids."""
        self._outbox.settle(peer, self._now_ms(), done, dead, retry, target, duplicates)

    def outbox_settle_nowait(
        self,
        peer: str,
        done: Sequence[tuple[int, bytes]] = (),
        *,
        target: tuple[str, str] | None = None,
        duplicates: Collection[bytes] = (),
    ) -> bool:
        """:meth:`outbox_settle` of ``done`` keys for an event loop: ``False``, with nothing done, when
        it would have to wait for anything (a lock, a name to look up); then settle from a thread."""
        return self._outbox.settle(peer, self._now_ms(), done, (), (), target, duplicates, nowait=True)

    def trace_events(self, message_id: str | bytes) -> list[dict[str, Any]]:
        """What happened to a message on this node, oldest first: ``{"at", "kind", "detail"}``
        (``at`` in Unix seconds). Empty when nothing is logged (or ``trace`` is off)."""
        return self.event_log.of(id_bytes(message_id))

    # -- dead letters -------------------------------------------------------------------------

    def _dead_where(self, channel: str | None, reason: str | None, older_than: float | None,
                    newer_than: float | None, ids: Sequence[str] | None = None) -> tuple[str, list[Any]]:
        older = None if older_than is None else int(check_seconds("older_than", older_than) * 1000)  # type: ignore[operator]
        newer = None if newer_than is None else int(check_seconds("newer_than", newer_than) * 1000)  # type: ignore[operator]
        return self._inbox.dead_where(channel, reason, older, newer, ids)

    def dead_letters(
        self,
        *,
        channel: str | None = None,
        reason: str | None = None,
        older_than: float | None = None,
        newer_than: float | None = None,
        limit: int | None = None,
    ) -> list[DeadLetter]:
        """List dead letters, oldest first, filtered by channel, reason and age (seconds since death)."""
        where, args = self._dead_where(channel, reason, older_than, newer_than)
        return self._inbox.dead_letters(where, args, limit)

    def dead_letter(self, message_id: str) -> DeadLetter:
        """Show one dead letter by message id.

        Raises:
            NotFound: no dead letter has that id.
        """
        return self._inbox.dead_letter(message_id)

    def retry_dead(
        self,
        ids: Sequence[str] | None = None,
        *,
        channel: str | None = None,
        reason: str | None = None,
        older_than: float | None = None,
        newer_than: float | None = None,
        dry_run: bool = False,
        who: str | None = None,
    ) -> list[DeadLetter]:
        """Put dead letters back: ready in their channel (attempts reset, TTL cleared), or into the
        outbox of the peer they were going to.

        Select them by ``ids`` and/or the filters of :meth:`dead_letters`;
        with no selection at all, every dead letter is retried. With ``who``
        (and not ``dry_run``), the retry is recorded in the audit.

        Returns:
            The dead letters that were (or, with ``dry_run``, would be) retried.
        """
        where, args = self._dead_where(channel, reason, older_than, newer_than, ids)
        out = self._inbox.retry_dead(where, args, dry_run)
        if who is not None and not dry_run:
            self.admin.audit(who, "dead-retry", _dead_target(ids, channel, reason, older_than, newer_than), len(out))
        return out

    def purge_dead(
        self,
        ids: Sequence[str] | None = None,
        *,
        channel: str | None = None,
        reason: str | None = None,
        older_than: float | None = None,
        newer_than: float | None = None,
        dry_run: bool = False,
        who: str | None = None,
    ) -> int:
        """Delete dead letters for good (selected as in :meth:`retry_dead`; audited with ``who``). Returns how many."""
        where, args = self._dead_where(channel, reason, older_than, newer_than, ids)
        n = self._inbox.purge_dead(where, args, dry_run)
        if who is not None and not dry_run:
            self.admin.audit(who, "dead-purge", _dead_target(ids, channel, reason, older_than, newer_than), n)
        return n

    # -- inspection and upkeep ----------------------------------------------------------------

    def peek(self, channel: str, *, limit: int = 10) -> list[Message]:
        """The next ``limit`` ready messages of ``channel``, in lease order, without leasing them."""
        ch = self._names.channel(channel, create=False)
        if ch is None:
            return []
        return self._inbox.peek(ch, channel, limit)

    def stats(self) -> Stats:
        """Counts per channel (ready, delayed, leased, dead, oldest age) and per peer (outbox depth).

        Cost grows with the number of stored messages (it counts them).
        """
        return self._inbox.stats()

    def sweep(self) -> dict[str, int]:
        """Do the time-driven chores: move due delayed messages to ready, dead-letter messages
        whose TTL passed while waiting (inbox, delayed, outbox), forget expired dedup ids.

        The daemon calls this periodically; a lease does the first part for its
        own channel anyway. Returns counts of what was done.
        """
        return self._inbox.sweep()

    def commit_stats(self) -> tuple[int, int]:
        """Group commit so far in this object: (transactions written, send requests they carried)."""
        return self._commit.commits, self._commit.requests

    def sync(self) -> None:
        """fsync the database and its WAL now (for ``durability="normal"`` with a periodic sync)."""
        self._db.sync()

    # -- life cycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database connections. Pending sends finish first."""
        if self._db.closed:
            return
        self._commit.close()  # pending asend()s finish first (they need the write gate)
        self._db.close()
        self.bells.close()
        self._watches.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r}, durability={self.durability!r})"


def _max(a: Any, b: Any) -> Any:
    return a if a > b else b


def _dead_target(ids: Sequence[str] | None, channel: str | None, reason: str | None, older_than: float | None,
                 newer_than: float | None) -> str:
    """The audit's ``target`` of a dead-letter retry or purge."""
    if ids is not None:
        return f"dead ids {', '.join(str(i) for i in ids[:3])}" + (f" (+{len(ids) - 3} more)" if len(ids) > 3 else "")
    parts = [f"{k}={v!r}" for k, v in (("channel", channel), ("reason", reason), ("older_than", older_than),
                                        ("newer_than", newer_than)) if v is not None]
    return "dead " + (" ".join(parts) if parts else "(everything)")


def _too_large(size: int, limit: int) -> SpoolqError:
    return MessageTooLarge(
        f"body and headers of {size} bytes are larger than max_message_size ({limit} bytes)",
        size=size,
        limit=limit,
        hint="store large payloads elsewhere and send a reference, or raise max_message_size",
    )
