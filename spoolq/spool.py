"""The spool: one node's durable store. The only module that speaks SQL.

Theory of operation
===================

A spool is a directory holding ``spool.db`` (SQLite, WAL mode) and ``bells/``
(wake-up files, see ``_bell.py``). Many processes may open the same spool at
once; SQLite's write lock is the arbiter, and inside one process a lock
(``_wlock``) keeps our own connections from fighting over it.

Tables and who owns what
------------------------

``inbox``   messages delivered to this node, keyed ``(channel, priority, id)``
            *without rowid*, so the table itself is in lease order: a lease
            reads the first rows of its channel and changes them in place.
            ``lease_until`` is 0 for a ready message and the lease deadline
            (ms) for a leased one; a lease whose deadline has passed is ready
            again. ``attempts`` counts leases; the lease token is
            ``(key, attempts)``, so a stale lease can never ack a newer one.
``delayed`` messages not ready before ``due`` (sent with a delay, or nacked
            with one), keyed ``(channel, due, id)``. A lease first moves the
            due rows of its channel into ``inbox``.
``outbox``  messages addressed to a peer, keyed ``(peer, priority, id)``;
            ``claim_until`` marks rows inside an in-flight batch.
``dead``    dead letters with ``reason`` and ``detail``; ``peer`` is set when
            the message died on its way out.
``seen``    ids accepted under dedup (caller-chosen ids, and everything a peer
            sends), kept until ``until`` so a repeated send is a no-op.
``channels``, ``peers``, ``nodes`` map names to small integers so rows stay
narrow; ``meta`` holds the node id and counters.

States of a message and the moves between them::

    send ──▶ inbox(ready) ──lease──▶ inbox(leased) ──ack──▶ (gone)
      │          ▲   ▲                 │ │ └─expiry─▶ ready (attempt counted)
      │          │   └───nack(0)───────┘ └─nack(d)──▶ delayed
      └─delay──▶ delayed ──due──▶ ready     attempts used up / ttl ─▶ dead
    send(to=peer) ──▶ outbox ──forwarded──▶ (gone) | rejected ─▶ dead

Every message also has a ``job``: a small integer, unique within the node and
never reused, which the beanstalkd front-end shows as the job id. Each process
reserves jobs in blocks from ``meta``.

Durability
----------

Writes that *create* a message (send, receive) go through the group-commit
writer, whose connection syncs per the spool's durability (``full``:
``synchronous=FULL``). Writes that only move or remove a message (lease, ack,
nack, touch, dead-lettering) use a connection with ``synchronous=NORMAL``:
losing them to a power cut only repeats a delivery. WAL frames are ordered, so
a synced commit also makes every earlier one durable.

Group commit: concurrent senders in one process queue their rows; the first
one in becomes the leader, writes everybody's rows in one transaction and one
sync, and hands the lead to the next waiting thread. A lone sender never waits
for anyone.
"""

from __future__ import annotations

import asyncio
import fcntl
import fnmatch
import logging
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple, TypeVar

import msgspec

from . import _bell
from .codec import ACCEPTED, DUPLICATE, WireMessage
from .consumer import Lease, Worker
from .errors import (
    InvalidArgument,
    InvalidType,
    LeaseExpired,
    LeaseLost,
    NotFound,
    SpoolBusy,
    SpoolqError,
    SpoolUnavailable,
    SpoolVersionError,
    StorageError,
    StorageFull,
)
from .message import (
    DEFAULT_PRIORITY,
    MAX_PRIORITY,
    MAX_SECONDS,
    DeadLetter,
    Message,
    _ms_of,
    _take_ids,
    check_body,
    check_channel,
    check_headers,
    check_priority,
    check_seconds,
    id_bytes,
    id_text,
    id_text_from_bytes,
)
from .retry import backoff

__all__ = [
    "SCHEMA_VERSION", "ChannelStats", "PeerStats", "Spool", "Stats", "Route", "OutboxMessage", "Job",
    "default_spool_path",
]

log = logging.getLogger("spoolq.spool")

SCHEMA_VERSION: Final = 1
DB_NAME: Final = "spool.db"
DEFAULT_MAX_MESSAGE_SIZE: Final = 1 << 20
DEFAULT_MAX_ATTEMPTS: Final = 20
DEFAULT_SEEN_RETENTION: Final = 7 * 86400.0
BUSY_TIMEOUT: Final = 30.0
ROUTES_FILE: Final = "routes.json"
FAILOVER_SEP: Final = "|"  # a failover group is stored as one outbox peer named "a|b|c"
_MISS: Final = object()
_LINGER: Final = 0.0005  # how long the writer thread waits for more senders before it stops
_CHUNKS: Final = (256, 128, 64, 32, 16, 8, 4, 2, 1)
_CHUNK_SET: Final = frozenset(range(1, 17))  # batch sizes written as one statement (larger: a transaction)

_SCHEMA: Final = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE channels(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, max_attempts INTEGER);
CREATE TABLE peers(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE nodes(id INTEGER PRIMARY KEY, node_id TEXT NOT NULL UNIQUE);
CREATE TABLE inbox(
    channel INTEGER NOT NULL, priority INTEGER NOT NULL, id BLOB NOT NULL,
    lease_until INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
    job INTEGER NOT NULL, body BLOB NOT NULL, headers BLOB, expires INTEGER,
    origin INTEGER, deliver_at INTEGER,
    PRIMARY KEY (channel, priority, id)) WITHOUT ROWID;
CREATE TABLE delayed(
    channel INTEGER NOT NULL, due INTEGER NOT NULL, id BLOB NOT NULL,
    job INTEGER NOT NULL, priority INTEGER NOT NULL, body BLOB NOT NULL, headers BLOB,
    expires INTEGER, origin INTEGER, attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (channel, due, id)) WITHOUT ROWID;
CREATE TABLE outbox(
    peer INTEGER NOT NULL, priority INTEGER NOT NULL, id BLOB NOT NULL,
    claim_until INTEGER NOT NULL DEFAULT 0, tries INTEGER NOT NULL DEFAULT 0,
    channel INTEGER NOT NULL, body BLOB NOT NULL, headers BLOB, expires INTEGER,
    origin INTEGER, deliver_at INTEGER,
    PRIMARY KEY (peer, priority, id)) WITHOUT ROWID;
CREATE TABLE dead(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id BLOB NOT NULL, channel INTEGER NOT NULL,
    peer INTEGER, priority INTEGER NOT NULL, attempts INTEGER NOT NULL, job INTEGER,
    body BLOB NOT NULL, headers BLOB, expires INTEGER, origin INTEGER, deliver_at INTEGER,
    reason TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', died_at INTEGER NOT NULL);
CREATE INDEX dead_by_id ON dead(id);
CREATE INDEX dead_by_channel ON dead(channel, seq);
CREATE INDEX dead_by_job ON dead(job) WHERE job IS NOT NULL;
CREATE TABLE seen(id BLOB PRIMARY KEY, until INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX inbox_expires ON inbox(expires) WHERE expires IS NOT NULL;
CREATE INDEX delayed_expires ON delayed(expires) WHERE expires IS NOT NULL;
CREATE INDEX outbox_expires ON outbox(expires) WHERE expires IS NOT NULL;
"""

# -- statements ------------------------------------------------------------------

_INBOX_SIMPLE_COLS: Final = "(channel, priority, id, job, body)"
_INBOX_FULL_COLS: Final = "(channel, priority, id, job, body, headers, expires, origin, attempts, deliver_at)"
_DELAYED_COLS: Final = "(channel, due, id, job, priority, body, headers, expires, origin, attempts)"
_OUTBOX_COLS: Final = "(peer, priority, id, channel, body, headers, expires, origin, deliver_at)"

_SQL_INSERT_ONE: Final = f"INSERT OR IGNORE INTO inbox{_INBOX_SIMPLE_COLS} VALUES (?,?,?,?,?)"
_SQL_LEASE_SELECT: Final = (
    "SELECT priority, id, attempts, job, body, headers, expires, origin, deliver_at FROM inbox "
    "WHERE channel=? AND lease_until<=? ORDER BY priority, id LIMIT ?"
)
_SQL_LEASE_UPDATE: Final = "UPDATE inbox SET lease_until=?, attempts=attempts+1 WHERE channel=? AND priority=? AND id=?"
_SQL_NEXT_DELAYED: Final = "SELECT due FROM delayed WHERE channel=? ORDER BY due LIMIT 1"
_SQL_PROMOTE: Final = (
    "INSERT OR IGNORE INTO inbox(channel, priority, id, job, body, headers, expires, origin, attempts, deliver_at) "
    "SELECT channel, priority, id, job, body, headers, expires, origin, attempts, due FROM delayed "
    "WHERE channel=? AND due<=?"
)
_SQL_PROMOTE_DELETE: Final = "DELETE FROM delayed WHERE channel=? AND due<=?"
_SQL_NEXT_LEASE_END: Final = "SELECT min(lease_until) FROM inbox WHERE channel=? AND lease_until>?"
_SQL_ACK: Final = "DELETE FROM inbox WHERE channel=? AND priority=? AND id=? AND attempts=? AND lease_until>?"
_SQL_LEASE_STATE: Final = "SELECT attempts, lease_until FROM inbox WHERE channel=? AND priority=? AND id=?"
_SQL_TOUCH: Final = (
    "UPDATE inbox SET lease_until=? WHERE channel=? AND priority=? AND id=? AND attempts=? AND lease_until>?"
)
_SQL_RELEASE: Final = "UPDATE inbox SET lease_until=0 WHERE channel=? AND priority=? AND id=?"
_SQL_INBOX_TO_DELAYED: Final = (
    "INSERT OR REPLACE INTO delayed(channel, due, id, job, priority, body, headers, expires, origin, "
    "attempts) SELECT channel, ?, id, job, priority, body, headers, expires, origin, attempts FROM inbox "
    "WHERE channel=? AND priority=? AND id=?"
)
_SQL_INBOX_DELETE: Final = "DELETE FROM inbox WHERE channel=? AND priority=? AND id=?"
_SQL_INBOX_TO_DEAD: Final = (
    "INSERT INTO dead(id, channel, peer, priority, attempts, job, body, headers, expires, origin, deliver_at, "
    "reason, detail, died_at) SELECT id, channel, NULL, priority, attempts, job, body, headers, expires, origin, "
    "deliver_at, ?, ?, ? FROM inbox WHERE channel=? AND priority=? AND id=?"
)
_SQL_DELAYED_TO_DEAD: Final = (
    "INSERT INTO dead(id, channel, peer, priority, attempts, job, body, headers, expires, origin, deliver_at, "
    "reason, detail, died_at) SELECT id, channel, NULL, priority, attempts, job, body, headers, expires, origin, "
    "due, ?, ?, ? FROM delayed WHERE channel=? AND due=? AND id=?"
)
_SQL_OUTBOX_TO_DEAD: Final = (
    "INSERT INTO dead(id, channel, peer, priority, attempts, job, body, headers, expires, origin, deliver_at, "
    "reason, detail, died_at) SELECT id, channel, peer, priority, tries, NULL, body, headers, expires, origin, "
    "deliver_at, ?, ?, ? FROM outbox WHERE peer=? AND priority=? AND id=?"
)
_SQL_DEAD_COLS: Final = (
    "seq, id, channel, peer, priority, attempts, job, body, headers, expires, origin, deliver_at, "
    "reason, detail, died_at"
)

_headers_enc = msgspec.msgpack.Encoder()
_headers_dec = msgspec.msgpack.Decoder(dict[str, str])

T = TypeVar("T")


def default_spool_path() -> Path:
    """Where ``Spool()`` lives without a path: ``$SPOOLQ_SPOOL``, else a per-user directory."""
    env = os.environ.get("SPOOLQ_SPOOL")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "spoolq"


def encode_headers(headers: dict[str, str] | None) -> bytes | None:
    return _headers_enc.encode(headers) if headers else None


def decode_headers(raw: bytes | None) -> dict[str, str]:
    if not raw:
        return {}
    try:
        return _headers_dec.decode(raw)
    except msgspec.DecodeError:
        return {"x-spoolq-corrupt-headers": raw.hex()}


@dataclass(frozen=True, slots=True)
class Route:
    """Messages of channels matching ``channels`` (a glob, e.g. ``orders.*``) go to ``to``.

    ``mode`` ``fanout``: each peer gets its own copy. ``failover``: the first
    peer that is up gets it (in order).
    """

    channels: str
    to: tuple[str, ...]
    mode: str = "fanout"


class OutboxMessage(NamedTuple):
    """A message waiting in the outbox: its key there, and the message as it goes on the wire."""

    key: tuple[int, bytes]
    message: WireMessage


@dataclass(frozen=True, slots=True)
class Job:
    """A message found by its job number (see ``Spool.find_job``).

    ``state`` is ``ready``, ``reserved`` (leased), ``delayed`` or ``buried``
    (a dead letter of its channel). ``due``: when a delayed message becomes
    ready, or when a lease ends (Unix seconds).
    """

    job: int
    id: str
    channel: str
    state: str
    priority: int
    body: bytes
    headers: dict[str, str]
    created_at: float
    due: float | None
    attempts: int


# -- stats -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelStats:
    """Counts for one channel. ``oldest_age``: seconds since the oldest ready or leased message was created."""

    ready: int = 0
    delayed: int = 0
    leased: int = 0
    dead: int = 0
    oldest_age: float | None = None
    urgent: int = 0  # ready with priority < 1024 (beanstalkd's "urgent")


@dataclass(frozen=True, slots=True)
class PeerStats:
    """Outbox of one peer: messages waiting, of which in flight, and the oldest's age in seconds."""

    outbox: int = 0
    in_flight: int = 0
    dead: int = 0
    oldest_age: float | None = None


@dataclass(frozen=True, slots=True)
class Stats:
    channels: dict[str, ChannelStats] = field(default_factory=dict)
    peers: dict[str, PeerStats] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "channels": {k: _dc(v) for k, v in self.channels.items()},
            "peers": {k: _dc(v) for k, v in self.peers.items()},
        }


def _dc(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


# -- the group-commit queue ----------------------------------------------------------


class _Write:
    """One caller's rows, waiting for the group-commit leader.

    Row layouts (the message id is always at index 2):
      inbox simple: (channel, priority, id, body)
      inbox full:   (channel, priority, id, body, headers, expires, origin, attempts, deliver_at)
      delayed:      (channel, due, id, priority, body, headers, expires, origin, attempts)
      outbox:       (peer, priority, id, channel, body, headers, expires, origin, deliver_at)
    """

    __slots__ = (
        "bells",
        "callback",
        "dedup",
        "delayed",
        "done",
        "dups",
        "error",
        "full",
        "inbox",
        "jobs",
        "origin_rows",
        "outbox",
        "probe",
        "seen_until",
        "waiter",
    )

    def __init__(self) -> None:
        self.inbox: list[tuple[Any, ...]] = []
        self.full = False
        self.origin_rows = False  # inbox rows are (channel, priority, id, body, origin)
        self.delayed: list[tuple[Any, ...]] = []
        self.outbox: list[tuple[Any, ...]] = []
        self.dedup = False
        self.probe = True
        self.jobs: list[int] | None = None  # filled with the rows' job numbers when not None
        self.seen_until = 0
        self.bells: set[str] = set()
        self.dups: set[bytes] = set()
        self.error: BaseException | None = None
        self.done = False
        self.waiter: Any = None
        self.callback: Callable[[], None] | None = None


class _WriteGate:
    """Held around every write transaction of a spool object.

    It takes the object's lock (one writer at a time inside the process) and,
    when other processes are writing too, an exclusive ``flock`` on
    ``<spool>/write.lock``. SQLite's own lock is enough for correctness, but
    its waiters poll it with sleeps, and under steady contention a waiter can
    lose the race many times over (hundreds of ms measured with 4 producer
    processes). Waiters blocked in ``flock`` are queued and woken by the kernel
    the moment it is free.

    Without contention the ``flock`` is skipped (it costs two system calls per
    write). A process starts queueing when SQLite reports the database busy
    (``escalate``) and keeps queueing while it finds others queued, plus
    ``STICKY`` seconds. Re-entrant within a thread.
    """

    STICKY = 10.0
    __slots__ = ("_depth", "_fd", "_held", "_lock", "_owner", "_queue_until", "_spool")

    def __init__(self, spool: Spool, fd: int) -> None:
        self._lock = threading.RLock()
        self._fd = fd
        self._depth = 0
        self._held = False
        self._owner = 0
        self._queue_until = 0.0
        self._spool = spool

    def __enter__(self) -> None:
        self._lock.acquire()
        if self._depth == 0:
            if self._spool._closed:
                self._lock.release()
                self._spool._check_open()
            if self._queue_until and time.monotonic() < self._queue_until:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    self._queue_until = time.monotonic() + self.STICKY  # others queue too: keep queueing
                    fcntl.flock(self._fd, fcntl.LOCK_EX)
                self._held = True
            self._owner = threading.get_ident()
        self._depth += 1

    def escalate(self) -> None:
        """SQLite said busy: from now on (for a while) wait in the queue. Call with the gate held."""
        self._queue_until = time.monotonic() + self.STICKY
        if not self._held:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._held = True

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._owner = 0
            if self._held:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                self._held = False
        self._lock.release()

    def owned(self) -> bool:
        return self._owner == threading.get_ident()


def _is_busy(e: sqlite3.Error) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
    return "locked" in str(e) or "busy" in str(e)


def _storage_error(e: sqlite3.Error, path: Path) -> SpoolqError:
    code = (getattr(e, "sqlite_errorcode", 0) or 0) & 0xFF
    msg = str(e)
    if code == 13 or "full" in msg:  # SQLITE_FULL
        return StorageFull(
            f"the spool at {path} is full: {msg}; nothing was written",
            hint="free disk space (or raise the database size limit), then retry",
        )
    if code in (8, 14, 23) or "readonly" in msg or "unable to open" in msg:  # READONLY, CANTOPEN, AUTH
        return SpoolUnavailable(
            f"cannot write the spool at {path}: {msg}",
            hint="check that the directory and spool.db exist and are writable by this user",
        )
    if code in (11, 26):  # CORRUPT, NOTADB
        return SpoolUnavailable(
            f"the spool database at {path} is damaged or not a spoolq database: {msg}",
            hint="restore it from a backup, or move it aside to start an empty spool",
        )
    return StorageError(f"spool storage error at {path}: {msg}", hint="see the SQLite message; retrying may help")


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
        self.seen_retention_ms = int(check_seconds("seen_retention", seen_retention) * 1000)  # type: ignore[operator]
        self._clock = clock or time.time
        self._busy_timeout = busy_timeout
        self.path = Path(path) if path is not None else default_spool_path()
        self.db_path = self.path / DB_NAME
        self._closed = False

        self._channels: dict[str, int] = {}
        self._channel_names: dict[int, str] = {}
        self._max_attempts: dict[int, int | None] = {}
        self._max_attempts_at = 0.0
        self._peers: dict[str, int] = {}
        self._peer_names: dict[int, str] = {}
        self._nodes: dict[int, str] = {}
        self._node_ids: dict[str, int] = {}
        self._routes: list[Route] = []
        self._routes_stamp: tuple[int, ...] = ()
        self._routes_checked = 0.0
        self._route_cache: dict[str, Any] = {}
        self._job_next = 0
        self._job_end = 0
        self._job_block = 16

        self._rlock = threading.Lock()
        self._gc_mu = threading.Lock()
        self._gc_cv = threading.Condition(self._gc_mu)
        self._gc_lingering = False
        self._gc_queue: list[_Write] = []
        self._gc_leader = False
        self._gc_stats = [0, 0]
        self._executor: ThreadPoolExecutor | None = None
        self._exec_lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self._tls = threading.local()
        self._watches: weakref.WeakSet[_bell.Watch] = weakref.WeakSet()

        self._open_dir()
        try:
            self._xfd = os.open(self.path / "write.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise SpoolUnavailable(f"cannot open {self.path / 'write.lock'}: {e.strerror or e}") from e
        self._wlock = _WriteGate(self, self._xfd)  # every write transaction
        self._cw = self._connect("FULL" if durability == "full" else "NORMAL")  # creates messages
        self._mw = self._connect("NORMAL")  # moves and removes them
        self._rc = self._connect("NORMAL")  # reads
        self._init_schema()
        self.bells = _bell.Bells(self.path / "bells")
        self._sync_dir()

    # -- opening ----------------------------------------------------------------

    def _open_dir(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise SpoolUnavailable(
                f"cannot use {self.path} as a spool: it exists and is not a directory",
                hint="pass a directory path (it is created if missing)",
            ) from None
        except OSError as e:
            raise SpoolUnavailable(
                f"cannot create the spool directory {self.path}: {e.strerror or e}",
                hint="choose a writable location, e.g. Spool('/var/spool/myapp') or $SPOOLQ_SPOOL",
            ) from e
        if not os.access(self.path, os.W_OK | os.X_OK) or (
            self.db_path.exists() and not os.access(self.db_path, os.R_OK | os.W_OK)
        ):
            raise SpoolUnavailable(
                f"the spool directory {self.path} is not writable by this user",
                hint="fix its permissions or owner, or choose another directory",
            )
        try:
            (self.path / "bells").mkdir(exist_ok=True)
        except OSError as e:
            raise SpoolUnavailable(
                f"the spool directory {self.path} is not writable: {e.strerror or e}",
                hint="fix its permissions or owner, or choose another directory",
            ) from e
        # root ignores permission bits: prove we can really create a file here
        probe = self.path / f".probe-{os.getpid()}-{threading.get_ident()}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise SpoolUnavailable(
                f"the spool directory {self.path} is not writable: {e.strerror or e}",
                hint="fix its permissions, free disk space, or choose another directory",
            ) from e

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.db_path, isolation_level=None, check_same_thread=False, cached_statements=256, timeout=0
            )
        except sqlite3.Error as e:
            raise _storage_error(e, self.db_path) from e
        self._conns.append(conn)

        def setup() -> None:
            conn.execute("PRAGMA busy_timeout=0")
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":
                if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
                    raise SpoolUnavailable(f"cannot switch {self.db_path} to WAL mode")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.execute("PRAGMA secure_delete=FAST")

        self._retry(setup)
        return conn

    def _init_schema(self) -> None:
        def check(conn: sqlite3.Connection) -> None:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SpoolVersionError(
                    f"the spool at {self.path} has schema version {version}, newer than this spoolq "
                    f"understands ({SCHEMA_VERSION}); it was left untouched",
                    hint="upgrade spoolq (pip install -U spoolq) to open this spool",
                )
            if version == 0:
                tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if tables:
                    raise SpoolUnavailable(
                        f"{self.db_path} is an SQLite database but not a spoolq spool; it was left untouched",
                        hint="choose an empty directory for the spool",
                    )
                for stmt in _SCHEMA.strip().split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('node_id', ?), ('created_at', ?), ('next_job', 1)",
                    (id_text(_take_ids(1)), time.time()),
                )
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

        self._txn(self._mw, check)
        row = self._rc.execute("SELECT value FROM meta WHERE key='node_id'").fetchone()
        self.node_id: str = row[0]

    def _sync_dir(self) -> None:
        """Make the directory entries of spool.db and its WAL durable."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    # -- transactions -------------------------------------------------------------

    def _retry(self, fn: Callable[[], T]) -> T:
        """Run ``fn``, retrying with short sleeps while another process holds the lock."""
        delay = 0.0001
        deadline = 0.0
        while True:
            try:
                return fn()
            except sqlite3.Error as e:
                if not _is_busy(e):
                    raise _storage_error(e, self.db_path) from e
                now = time.monotonic()
                if self._wlock.owned() and not self._wlock._held:
                    self._wlock.escalate()  # queue behind the other writers from now on
                    continue
                if deadline == 0.0:
                    deadline = now + self._busy_timeout
                elif now > deadline:
                    raise SpoolBusy(
                        f"the spool at {self.path} stayed locked for over {self._busy_timeout:.0f}s",
                        hint="another process holds a long write transaction; retry, or raise busy_timeout",
                    ) from e
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.005)

    def _txn(self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` as one write transaction (BEGIN IMMEDIATE … COMMIT)."""

        def attempt() -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
                return result
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                # a job block reserved in this transaction was rolled back with it
                self._job_next = self._job_end = 0
                raise

        with self._wlock:
            return self._retry(attempt)

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` as one read transaction (a consistent snapshot)."""

        def attempt() -> T:
            self._rc.execute("BEGIN")
            try:
                return fn(self._rc)
            finally:
                if self._rc.in_transaction:
                    self._rc.execute("COMMIT")

        with self._rlock:
            self._check_open()
            return self._retry(attempt)

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolUnavailable(f"the spool at {self.path} is closed", hint="open a new Spool")

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- names ---------------------------------------------------------------------

    def _channel_id(self, name: str, *, create: bool) -> int | None:
        ch = self._channels.get(name)
        if ch is not None:
            return ch
        check_channel(name)
        row = self._read(lambda c: c.execute("SELECT id FROM channels WHERE name=?", (name,)).fetchone())
        if row is None:
            if not create:
                return None

            def insert(c: sqlite3.Connection) -> int:
                c.execute("INSERT OR IGNORE INTO channels(name) VALUES (?)", (name,))
                return int(c.execute("SELECT id FROM channels WHERE name=?", (name,)).fetchone()[0])

            ch = self._txn(self._mw, insert)
        else:
            ch = int(row[0])
        self._channels[name] = ch
        self._channel_names[ch] = name
        return ch

    def _create_channel(self, name: str) -> int:
        ch = self._channel_id(name, create=True)
        assert ch is not None
        return ch

    def _channel_name(self, ch: int) -> str:
        name = self._channel_names.get(ch)
        if name is None:
            self._load_names()
            name = self._channel_names.get(ch, f"#{ch}")
        return name

    def _peer_id(self, name: str) -> int:
        p = self._peers.get(name)
        if p is not None:
            return p
        check_peer(name)

        def insert(c: sqlite3.Connection) -> int:
            c.execute("INSERT OR IGNORE INTO peers(name) VALUES (?)", (name,))
            return int(c.execute("SELECT id FROM peers WHERE name=?", (name,)).fetchone()[0])

        p = self._txn(self._mw, insert)
        self._peers[name] = p
        self._peer_names[p] = name
        return p

    def _peer_name(self, p: int) -> str:
        name = self._peer_names.get(p)
        if name is None:
            self._load_names()
            name = self._peer_names.get(p, f"#{p}")
        return name

    def _node_ref(self, node_id: str | None) -> int | None:
        """Small integer for an origin node id (None for this node)."""
        if node_id is None or node_id == self.node_id:
            return None
        n = self._node_ids.get(node_id)
        if n is not None:
            return n

        def insert(c: sqlite3.Connection) -> int:
            c.execute("INSERT OR IGNORE INTO nodes(node_id) VALUES (?)", (node_id,))
            return int(c.execute("SELECT id FROM nodes WHERE node_id=?", (node_id,)).fetchone()[0])

        n = self._txn(self._mw, insert)
        self._node_ids[node_id] = n
        self._nodes[n] = node_id
        return n

    def _origin_name(self, ref: int | None) -> str:
        if ref is None:
            return self.node_id
        name = self._nodes.get(ref)
        if name is None:
            self._load_names()
            name = self._nodes.get(ref, f"#{ref}")
        return name

    def _load_names(self) -> None:
        def load(c: sqlite3.Connection) -> tuple[list[Any], list[Any], list[Any]]:
            return (
                c.execute("SELECT id, name FROM channels").fetchall(),
                c.execute("SELECT id, name FROM peers").fetchall(),
                c.execute("SELECT id, node_id FROM nodes").fetchall(),
            )

        chans, peers, nodes = self._read(load)
        for i, n in chans:
            self._channels[n] = i
            self._channel_names[i] = n
        for i, n in peers:
            self._peers[n] = i
            self._peer_names[i] = n
        for i, n in nodes:
            self._node_ids[n] = i
            self._nodes[i] = n

    def _channel_max_attempts(self, ch: int) -> int:
        now = time.monotonic()
        if now - self._max_attempts_at > 1.0:
            rows = self._read(lambda c: c.execute("SELECT id, max_attempts FROM channels").fetchall())
            self._max_attempts = {i: m for i, m in rows}
            self._max_attempts_at = now
        m = self._max_attempts.get(ch)
        return m if m is not None else self.max_attempts

    def _alloc_jobs(self, conn: sqlite3.Connection, n: int) -> int:
        """Reserve ``n`` job numbers inside the caller's write transaction; returns the first."""
        if self._job_end - self._job_next >= n:
            first = self._job_next
            self._job_next += n
            return first
        size = max(n, self._job_block)
        self._job_block = min(self._job_block * 2, 4096)
        end = int(conn.execute(
            "UPDATE meta SET value=value+? WHERE key='next_job' RETURNING value", (size,)
        ).fetchone()[0])
        first = end - size
        self._job_next = first + n
        self._job_end = end
        return first

    # -- producing -----------------------------------------------------------------

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
        ch = self._channels.get(channel)
        if ch is None:
            check_channel(channel)
        if type(body) is not bytes or len(body) > self.max_message_size:
            body = check_body(body, self.max_message_size)
        if type(priority) is not int or not 0 <= priority <= MAX_PRIORITY:
            check_priority(priority)
        if to is None:
            to = self._route(channel)
        if to is None and not delay and ttl is None and headers is None and id is None:
            if ch is None:
                ch = self._create_channel(channel)
            first = _take_ids(1)
            self._send_one(ch, priority, first.to_bytes(16, "big"), body, channel)
            return id_text(first)
        w = _Write()
        if id is None:
            first = _take_ids(1)
            idb = first.to_bytes(16, "big")
        else:
            idb = id_bytes(id)
            w.dedup = True
        self._add_rows(w, ch, channel, [idb], [body], to, priority, delay, ttl, headers)  # type: ignore[arg-type]
        self._submit(w)
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
            self._submit(w)
        return idlist

    async def asend(self, body: bytes, channel: str, **options: Any) -> str:
        """:meth:`send` for asyncio: never blocks the event loop; concurrent tasks share commits."""
        result = await self.asend_many([body], channel, **_many_options(options))
        return result[0]

    async def asend_many(self, bodies: Iterable[bytes], channel: str, **options: Any) -> list[str]:
        """:meth:`send_many` for asyncio."""
        w, idlist = self._prepare_many(bodies, channel, **options)
        if w is None:
            return idlist
        await self._await_write(w)
        return idlist

    async def _asend_items(self, channel: str, items: Sequence[tuple[bytes, dict[str, Any]]]) -> list[str]:
        """Send messages of one channel with their own options, all in one transaction (HTTP API).

        Every item is validated before anything is written: one bad item fails the whole call.
        """
        w, ids = self.prepare_items(channel, items)
        await self._await_write(w)
        return ids

    def prepare_items(self, channel: str, items: Sequence[tuple[bytes, dict[str, Any]]]) -> tuple[Any, list[str]]:
        """Validate messages of one channel, each with its own options, into one pending write.

        Commit it with :meth:`commit_writes` (or let ``_asend_items`` do both).
        Nothing is created (not even the channel) when an item is refused.
        """
        ch = self._channels.get(channel)
        if ch is None:
            check_channel(channel)
        limit = self.max_message_size
        routed = self._route(channel)
        if routed is None and all(not opts for _, opts in items):  # the common case: plain bodies
            bodies = []
            for body, _ in items:
                if type(body) is not bytes or len(body) > limit:
                    body = check_body(body, limit)
                bodies.append(body)
            if ch is None:
                ch = self._create_channel(channel)
            first = _take_ids(len(bodies))
            w = _Write()
            w.inbox = [(ch, DEFAULT_PRIORITY, (first + i).to_bytes(16, "big"), b) for i, b in enumerate(bodies)]
            w.bells.add(_bell.channel_bell(channel))
            return w, [id_text(first + i) for i in range(len(bodies))]
        checked = []
        for body, opts in items:  # validate everything before anything is created
            if type(body) is not bytes or len(body) > limit:
                body = check_body(body, limit)
            priority = opts.get("priority", DEFAULT_PRIORITY)
            check_priority(priority)
            to = opts.get("to")
            if to is None:
                to = routed
            self._check_options([body], to, opts.get("delay", 0), opts.get("ttl"), opts.get("headers"))
            mid = opts.get("id")
            checked.append((body, priority, to, None if mid is None else id_bytes(mid), opts))
        w = _Write()
        ids: list[str] = []
        for body, priority, to, idb, opts in checked:
            if idb is None:
                idb = _take_ids(1).to_bytes(16, "big")
            else:
                w.dedup = True
            if ch is None:
                ch = self._create_channel(channel)
            self._add_rows(w, ch, channel, [idb], [body], to, priority, opts.get("delay", 0), opts.get("ttl"),
                           opts.get("headers"))
            ids.append(id_text_from_bytes(idb))
        return w, ids

    def commit_writes_soon(self, writes: list[Any], on_done: Callable[[], None]) -> None:
        """Queue pending writes for the group-commit writer thread as one group; call ``on_done``
        (in the writer thread) when all of them are committed or failed (see ``.error``).

        One hand-off for a whole group: an event loop collects the sends of one
        turn and passes them here, and goes on serving while the sync runs.
        """
        if not writes:
            on_done()
            return
        writes[-1].callback = on_done  # a group is taken from the queue whole, so the last is done last
        self._submit_async(*writes)

    def commit_writes(self, writes: list[Any]) -> None:
        """Commit pending writes (from :meth:`prepare_items`) now, in this thread, in one transaction.

        A write that fails gets its error in ``.error``; the others are unaffected.
        An event loop can call this once per turn for every send of that turn.
        """
        self._commit_batch(writes)
        for w in writes:
            w.done = True

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
    ) -> tuple[_Write | None, list[str]]:
        if isinstance(bodies, (bytes, bytearray, str, memoryview)):
            raise InvalidType(
                "bodies must be a list of bodies, not a single body",
                hint="use send() for one message, or wrap it: send_many([body], ...)",
            )
        ch = self._channels.get(channel)
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
        if to is None:
            to = self._route(channel)
        w = _Write()
        if ids is not None:
            if len(ids) != n:
                raise InvalidArgument(f"got {len(ids)} ids for {n} bodies", hint="pass one id per body")
            idbs = [id_bytes(x) for x in ids]
            idlist = [id_text_from_bytes(b) for b in idbs]
            w.dedup = True
        else:
            first = _take_ids(n) if n else 0
            idbs = [(first + i).to_bytes(16, "big") for i in range(n)]
            idlist = [id_text(first + i) for i in range(n)] if texts else []
        if n == 0:
            return None, []
        if to is None and not delay and ttl is None and headers is None:
            if ch is None:
                ch = self._create_channel(channel)
            w.inbox = [(ch, priority, b, body) for b, body in zip(idbs, blist, strict=True)]
            w.bells.add(_bell.channel_bell(channel))
        else:
            self._add_rows(w, ch, channel, idbs, blist, to, priority, delay, ttl, headers)  # type: ignore[arg-type]
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
        if to is None:
            return d, t, hblob, None
        if isinstance(to, str):
            peers = [to]
        elif isinstance(to, (list, tuple)):
            peers = list(to)
        else:
            raise InvalidType(
                f"to= must be a peer name or URL (or a list of them), not {type(to).__name__}",
                hint="e.g. to='dc2' or to='http://10.0.0.2:7070'",
            )
        if not peers:
            raise InvalidArgument("to= is an empty list", hint="pass None for local delivery, or peer names")
        for peer in peers:
            check_peer(peer)
        return d, t, hblob, peers

    def _add_rows(
        self,
        w: _Write,
        ch: int | None,
        channel: str,
        idbs: list[bytes],
        bodies: list[bytes],
        to: str | Sequence[str] | None,
        priority: int,
        delay: float,
        ttl: float | None,
        headers: dict[str, str] | None,
        *,
        origin: int | None = None,
        deliver_at: int | None = None,
    ) -> None:
        """Validate the less common options, then add the rows of one request.

        The channel (and peers) are created only after everything validated,
        so a refused call leaves no trace.
        """
        d, t, hblob, peers = self._check_options(bodies, to, delay, ttl, headers)
        if ch is None:
            ch = self._create_channel(channel)
        now = self._now_ms()
        expires = now + int(t * 1000) if t is not None else None
        if deliver_at is None and d > 0:
            deliver_at = now + int(d * 1000)
        if peers is not None:
            pids = [self._peer_id(p) for p in peers]
            for pid in pids:
                for idb, body in zip(idbs, bodies, strict=True):
                    w.outbox.append((pid, priority, idb, ch, body, hblob, expires, origin, deliver_at))
            w.bells.add(_bell.OUTBOX)
            return
        if deliver_at is not None and deliver_at > now:
            for idb, body in zip(idbs, bodies, strict=True):
                w.delayed.append((ch, deliver_at, idb, priority, body, hblob, expires, origin, 0))
        else:
            w.full = True
            for idb, body in zip(idbs, bodies, strict=True):
                w.inbox.append((ch, priority, idb, body, hblob, expires, origin, 0, deliver_at))
        w.bells.add(_bell.channel_bell(channel))

    # -- group commit ----------------------------------------------------------------

    def _send_one(self, ch: int, priority: int, idb: bytes, body: bytes, channel: str) -> None:
        """One plain message, written by the caller itself when no other send is in progress."""
        mu = self._gc_mu
        mu.acquire()
        if self._gc_leader:  # others are sending: join their group commit
            mu.release()
            w = _Write()
            w.inbox.append((ch, priority, idb, body))
            w.bells.add(_bell.channel_bell(channel))
            self._submit(w)
            return
        self._gc_leader = True
        mu.release()
        try:
            with self._wlock:
                job = self._job_next
                if job < self._job_end:
                    # one autocommitted INSERT is one transaction: no BEGIN/COMMIT round trips
                    self._job_next = job + 1
                    params = (ch, priority, idb, job, body)
                    try:
                        self._cw.execute(_SQL_INSERT_ONE, params)
                    except sqlite3.Error as e:
                        if not _is_busy(e):
                            raise _storage_error(e, self.db_path) from e
                        self._retry(lambda: self._cw.execute(_SQL_INSERT_ONE, params))
                else:
                    w = _Write()
                    w.inbox.append((ch, priority, idb, body))
                    self._write_batch([w])
        finally:
            mu.acquire()
            if self._gc_queue:
                self._hand_over()
            else:
                self._gc_leader = False
            mu.release()
        self.bells.ring(_bell.channel_bell(channel))

    def _hand_over(self) -> None:
        """Pass the lead to the writer thread. Called with ``_gc_mu`` held.

        Senders are queueing behind us, so this process has concurrent senders:
        a dedicated writer thread now commits for them, batch after batch,
        until the queue stays empty (see ``_lead``). Waking one follower to lead
        instead costs an extra thread hop between every two commits.
        """
        self._async_executor().submit(self._lead, None)

    def _submit(self, w: _Write) -> None:
        mu = self._gc_mu
        mu.acquire()
        if self._gc_leader:
            lk = threading.Lock()
            lk.acquire()
            w.waiter = lk
            self._gc_queue.append(w)
            if self._gc_lingering:
                self._gc_cv.notify()
            mu.release()
            lk.acquire()  # released by the leader: done, or promoted to lead
            if not w.done:
                self._lead(w)
        else:
            self._gc_leader = True
            self._gc_queue.append(w)
            mu.release()
            self._lead(w)
        if w.error is not None:
            raise w.error

    def _submit_async(self, *writes: _Write) -> None:
        """Queue writes for the writer thread (started if no one leads); completion calls their callbacks."""
        with self._gc_mu:
            self._gc_queue.extend(writes)
            if self._gc_leader:
                if self._gc_lingering:
                    self._gc_cv.notify()
                return
            self._gc_leader = True
        self._async_executor().submit(self._lead, None)

    def _async_executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            with self._exec_lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(1, thread_name_prefix="spoolq-writer")
        return self._executor

    def _lead(self, own: _Write | None) -> None:
        """Commit queued writes until ``own`` is done, then hand the lead on."""
        mu = self._gc_mu
        while True:
            with mu:
                if own is None and not self._gc_queue:
                    # The writer thread: senders were here a moment ago. Wait briefly for the
                    # next one before giving up the lead, so a steady stream of senders keeps
                    # one thread committing for them (a cold start costs a thread hop).
                    # Senders notify; nobody polls (on 2 cores a polling thread steals the CPU
                    # the senders need).
                    self._gc_lingering = True
                    self._gc_cv.wait(_LINGER)
                    self._gc_lingering = False
                batch = self._gc_queue
                self._gc_queue = []
                if not batch:
                    self._gc_leader = False
                    return
            self._commit_batch(batch)
            self._gc_stats[0] += 1
            self._gc_stats[1] += len(batch)
            for w in batch:
                w.done = True
                if w is own:
                    continue
                if w.waiter is not None:
                    w.waiter.release()
                elif w.callback is not None:
                    w.callback()
            if own is None:
                continue
            with mu:
                if self._gc_queue:
                    self._hand_over()
                else:
                    self._gc_leader = False
            return

    def _commit_batch(self, batch: list[_Write]) -> None:
        try:
            self._write_batch(batch)
        except BaseException as e:
            if len(batch) == 1:
                batch[0].error = e
                return
            for w in batch:  # one bad request must not fail the others
                try:
                    self._write_batch([w])
                except BaseException as e2:
                    w.error = e2
            return
        bells: set[str] = set()
        for w in batch:
            bells |= w.bells
        for b in bells:
            self.bells.ring(b)

    def _write_batch(self, batch: list[_Write]) -> None:
        if self._write_plain(batch):
            return
        def write(conn: sqlite3.Connection) -> None:
            simple: list[Any] = []
            received: list[Any] = []
            full: list[Any] = []
            delayed: list[Any] = []
            outbox: list[Any] = []
            dedup = [w for w in batch if w.dedup]
            if dedup:
                self._dedup(conn, dedup)
            kept = []
            njobs = 0
            for w in batch:
                dups = w.dups if w.dedup else None
                ib = [r for r in w.inbox if r[2] not in dups] if dups else w.inbox
                dl = [r for r in w.delayed if r[2] not in dups] if dups else w.delayed
                ob = [r for r in w.outbox if r[2] not in dups] if dups else w.outbox
                kept.append((w, ib, dl, ob))
                njobs += len(ib) + len(dl) + (len(ob) if w.jobs is not None else 0)
            job = self._alloc_jobs(conn, njobs) if njobs else 0
            for w, ib, dl, ob in kept:
                jobs = w.jobs
                if w.full:
                    for r in ib:
                        full += (r[0], r[1], r[2], job, r[3], r[4], r[5], r[6], r[7], r[8])
                        if jobs is not None:
                            jobs.append(job)
                        job += 1
                elif w.origin_rows:
                    for ch, pri, idb, body, origin in ib:
                        received += (ch, pri, idb, job, body, origin)
                        job += 1
                else:
                    for ch, pri, idb, body in ib:
                        simple += (ch, pri, idb, job, body)
                        if jobs is not None:
                            jobs.append(job)
                        job += 1
                for r in dl:
                    delayed += (r[0], r[1], r[2], job, r[3], r[4], r[5], r[6], r[7], r[8])
                    if jobs is not None:
                        jobs.append(job)
                    job += 1
                for r in ob:
                    outbox += r
                    if jobs is not None:  # a number to show the caller; the outbox does not keep it
                        jobs.append(job)
                        job += 1
            if simple:
                _insert_many(conn, "inbox", _INBOX_SIMPLE_COLS, 5, simple)
            if received:
                _insert_many(conn, "inbox", "(channel, priority, id, job, body, origin)", 6, received)
            if full:
                _insert_many(conn, "inbox", _INBOX_FULL_COLS, 10, full)
            if delayed:
                _insert_many(conn, "delayed", _DELAYED_COLS, 10, delayed)
            if outbox:
                _insert_many(conn, "outbox", _OUTBOX_COLS, 9, outbox)

        self._txn(self._cw, write)

    def _write_plain(self, batch: list[_Write]) -> bool:
        """Write a batch of plain messages as ONE autocommitted statement, if it is one.

        The common case under concurrency. Each ``execute`` gives up and retakes
        the GIL, and retaking it while other senders run Python costs tens of
        microseconds, so BEGIN/INSERT/COMMIT would cost three of those per sync.
        """
        rows: list[tuple[Any, ...]] = []
        for w in batch:
            if w.full or w.origin_rows or w.dedup or w.delayed or w.outbox:
                return False
            rows += w.inbox
        n = len(rows)
        if n > _CHUNKS[0] or n not in _CHUNK_SET:
            return False
        with self._wlock:
            job = self._job_next
            if self._job_end - job < n:
                return False
            self._job_next = job + n
            params: list[Any] = []
            for w in batch:
                jobs = w.jobs
                for ch, pri, idb, body in w.inbox:
                    params += (ch, pri, idb, job, body)
                    if jobs is not None:
                        jobs.append(job)
                    job += 1
            sql = _insert_sql("inbox", _INBOX_SIMPLE_COLS, 5, n, "INSERT OR IGNORE")
            try:
                self._cw.execute(sql, params)
            except sqlite3.Error as e:
                if not _is_busy(e):
                    raise _storage_error(e, self.db_path) from e
                self._retry(lambda: self._cw.execute(sql, params))
        return True

    def _dedup(self, conn: sqlite3.Connection, dedup: list[_Write]) -> None:
        """Record the ids of dedup requests in ``seen``; rows whose id was already there are dups.

        One upsert per chunk does the check and the record: ``RETURNING`` names
        the ids that were new (or whose entry had expired), the rest are
        duplicates. Requests are handled in order, so a second request with the
        same id in one batch is a duplicate of the first.
        """
        now = self._now_ms()
        until = now + self.seen_retention_ms
        for w in dedup:
            ids = list(dict.fromkeys(r[2] for rows in (w.inbox, w.delayed, w.outbox) for r in rows))
            accepted: set[bytes] = set()
            for i in range(0, len(ids), 256):
                chunk = ids[i:i + 256]
                params: list[Any] = []
                for idb in chunk:
                    params += (idb, until)
                params.append(now)
                accepted.update(r[0] for r in conn.execute(_upsert_seen_sql(len(chunk)), params))
            if w.probe:
                # Ids this spool made itself are not in `seen` (that would double the cost of every
                # send); while such a message is still stored, find it by its key instead.
                found = set()
                for r in w.inbox:
                    if r[2] in accepted and conn.execute(
                        "SELECT 1 FROM inbox WHERE channel=? AND priority=? AND id=?", (r[0], r[1], r[2])
                    ).fetchone():
                        found.add(r[2])
                for r in w.delayed:
                    if r[2] in accepted and conn.execute(
                        "SELECT 1 FROM delayed WHERE channel=? AND id=?", (r[0], r[2])
                    ).fetchone():
                        found.add(r[2])
                for r in w.outbox:
                    if r[2] in accepted and conn.execute(
                        "SELECT 1 FROM outbox WHERE peer=? AND priority=? AND id=?", (r[0], r[1], r[2])
                    ).fetchone():
                        found.add(r[2])
                accepted -= found
            w.dups = set(ids) - accepted

    # -- consuming ---------------------------------------------------------------------

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
        ch = self._channels.get(channel)
        if ch is None:
            ch = self._channel_id(channel, create=False)
        vis_ms = max_(1, int(visibility * 1000))
        if ch is not None:
            got, next_due = self._lease_once(ch, channel, max, vis_ms)
            if got or not wait:
                return got
        elif not wait:
            return []
        else:
            next_due = None
        deadline = time.monotonic() + wait
        watch = self._watch()
        watch.add(_bell.channel_bell(channel))
        while True:
            watch.drain()  # armed before the look below: a ring after it wakes the wait
            if ch is None:
                ch = self._channel_id(channel, create=False)
            if ch is not None:
                got, next_due = self._lease_once(ch, channel, max, vis_ms)
                if got:
                    return got
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            if next_due is not None:
                remaining = min(remaining, max_(0.0005, next_due / 1000.0 - self._clock() + 0.0005))
            watch.wait(remaining)

    def _watch(self) -> _bell.Watch:
        """This thread's bell watcher (kept: creating one per wait costs milliseconds)."""
        w: _bell.Watch | None = getattr(self._tls, "watch", None)
        if w is None:
            w = _bell.Watch(self.path / "bells")
            self._tls.watch = w
            with self._rlock:
                self._watches.add(w)
        return w

    def _lease_once(self, ch: int, channel: str, n: int, vis_ms: int) -> tuple[list[Lease], int | None]:
        max_attempts = self._channel_max_attempts(ch)

        def lease(conn: sqlite3.Connection) -> tuple[list[Lease], int | None]:
            now = self._now_ms()
            row = conn.execute(_SQL_NEXT_DELAYED, (ch,)).fetchone()
            if row is not None and row[0] <= now:
                conn.execute(_SQL_PROMOTE, (ch, now))
                conn.execute(_SQL_PROMOTE_DELETE, (ch, now))
            until = now + vis_ms
            leases: list[Lease] = []
            while True:
                rows = conn.execute(_SQL_LEASE_SELECT, (ch, now, n - len(leases))).fetchall()
                if not rows:
                    break
                dead = False
                for pri, idb, attempts, job, body, hdrs, expires, origin, deliver_at in rows:
                    if expires is not None and expires <= now:
                        self._inbox_to_dead(conn, ch, pri, idb, "expired", "ttl passed before delivery", now)
                        dead = True
                    elif attempts >= max_attempts:
                        self._inbox_to_dead(
                            conn, ch, pri, idb, "max_attempts", f"leased {attempts} times without an ack", now
                        )
                        dead = True
                    else:
                        leases.append(
                            Lease(self, ch, channel, pri, idb, attempts + 1, job, body, hdrs, expires, origin,
                                  deliver_at, until)
                        )
                if not dead or len(leases) >= n:
                    break
            if len(leases) == 1:
                x = leases[0]
                conn.execute(_SQL_LEASE_UPDATE, (until, ch, x.priority, x._idb))
            elif leases:
                conn.executemany(_SQL_LEASE_UPDATE, [(until, ch, x.priority, x._idb) for x in leases])
            next_due = None
            if not leases:
                row = conn.execute(_SQL_NEXT_DELAYED, (ch,)).fetchone()
                next_due = row[0] if row is not None else None
                row = conn.execute(_SQL_NEXT_LEASE_END, (ch, now)).fetchone()
                if row is not None and row[0] is not None:
                    next_due = row[0] if next_due is None else min(next_due, row[0])
            return leases, next_due

        return self._txn(self._mw, lease)

    def _inbox_to_dead(
        self, conn: sqlite3.Connection, ch: int, pri: int, idb: bytes, reason: str, detail: str, now: int
    ) -> None:
        conn.execute(_SQL_INBOX_TO_DEAD, (reason, detail, now, ch, pri, idb))
        conn.execute(_SQL_INBOX_DELETE, (ch, pri, idb))

    def _lease_error(self, conn: sqlite3.Connection, lease: Lease, now: int) -> LeaseExpired | LeaseLost:
        row = conn.execute(_SQL_LEASE_STATE, (lease._ch, lease.priority, lease._idb)).fetchone()
        if row is not None and row[0] == lease.attempts and row[1] <= now:
            return LeaseExpired(
                f"the lease on message {lease.id} in {lease.channel!r} expired; the message is ready again",
                hint="raise visibility, or call lease.touch() while processing",
            )
        return LeaseLost(
            f"message {lease.id} in {lease.channel!r} is not leased by this lease any more "
            "(acked, nacked, re-leased after expiry, or removed)",
            hint="the message was or will be delivered again; make processing idempotent",
        )

    def _ack(self, lease: Lease) -> None:
        self._check_lease_owner(lease)
        now = self._now_ms()
        key = (lease._ch, lease.priority, lease._idb, lease.attempts, now)

        def ack() -> int:
            return self._mw.execute(_SQL_ACK, key).rowcount

        with self._wlock:
            if self._retry(ack) == 1:
                return
        raise self._read(lambda c: self._lease_error(c, lease, now))

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
            self._check_lease_owner(x)
        now = self._now_ms()

        def ack(conn: sqlite3.Connection) -> None:
            before = conn.total_changes
            conn.executemany(_SQL_ACK, [(x._ch, x.priority, x._idb, x.attempts, now) for x in leases])
            if conn.total_changes - before != len(leases):
                raise _Rollback()  # some lease is not held: undo the others too

        try:
            self._txn(self._mw, ack)
        except _Rollback:
            def diagnose(c: sqlite3.Connection) -> LeaseExpired | LeaseLost:
                seen: set[tuple[int, int, bytes]] = set()
                for x in leases:
                    k = (x._ch, x.priority, x._idb)
                    row = c.execute(_SQL_LEASE_STATE, k).fetchone()
                    if k in seen or row is None or row[0] != x.attempts or row[1] <= now:
                        return self._lease_error(c, x, now)
                    seen.add(k)
                return LeaseLost("some leases could not be acked", hint="retry ack_many")

            raise self._read(diagnose) from None

    def _touch(self, lease: Lease, visibility: float) -> None:
        self._check_lease_owner(lease)
        v = check_seconds("visibility", visibility, allow_zero=False)
        now = self._now_ms()
        until = now + max_(1, int(v * 1000))  # type: ignore[operator]

        def touch() -> int:
            return self._mw.execute(
                _SQL_TOUCH, (until, lease._ch, lease.priority, lease._idb, lease.attempts, now)
            ).rowcount

        with self._wlock:
            ok = self._retry(touch) == 1
        if not ok:
            raise self._read(lambda c: self._lease_error(c, lease, now))
        lease._until = until

    def _nack(self, lease: Lease, delay: float | None, priority: int | None = None) -> bool:
        self._check_lease_owner(lease)
        if delay is None:
            d_ms = int(backoff(lease.attempts) * 1000)
        else:
            d_ms = int(check_seconds("delay", delay) * 1000)  # type: ignore[operator]
        if priority is not None:
            check_priority(priority)
        max_attempts = self._channel_max_attempts(lease._ch)
        now = self._now_ms()
        ch, pri, idb = lease._ch, lease.priority, lease._idb

        def nack(conn: sqlite3.Connection) -> bool:
            row = conn.execute(_SQL_LEASE_STATE, (ch, pri, idb)).fetchone()
            if row is None or row[0] != lease.attempts or row[1] <= now:
                raise self._lease_error(conn, lease, now)
            if lease.attempts >= max_attempts:
                self._inbox_to_dead(
                    conn, ch, pri, idb, "max_attempts", f"nacked after {lease.attempts} attempts", now
                )
                return False
            new_pri = pri if priority is None else priority
            if d_ms <= 0 and new_pri == pri:
                conn.execute(_SQL_RELEASE, (ch, pri, idb))
                return True
            if d_ms <= 0:  # re-key with the new priority, ready at once
                conn.execute(
                    "INSERT OR REPLACE INTO inbox(channel, priority, id, lease_until, attempts, job, body, headers, "
                    "expires, origin, deliver_at) SELECT channel, ?, id, 0, attempts, job, body, headers, expires, "
                    "origin, deliver_at FROM inbox WHERE channel=? AND priority=? AND id=?",
                    (new_pri, ch, pri, idb),
                )
                conn.execute(_SQL_INBOX_DELETE, (ch, pri, idb))
                return True
            conn.execute(_SQL_INBOX_TO_DELAYED, (now + d_ms, ch, pri, idb))
            if new_pri != pri:
                conn.execute("UPDATE delayed SET priority=? WHERE channel=? AND due=? AND id=?",
                             (new_pri, ch, now + d_ms, idb))
            conn.execute(_SQL_INBOX_DELETE, (ch, pri, idb))
            return True

        requeued = self._txn(self._mw, nack)
        self.bells.ring(_bell.channel_bell(lease.channel))
        return requeued

    def _dead(self, lease: Lease, reason: str, detail: str, priority: int | None = None) -> None:
        self._check_lease_owner(lease)
        if priority is not None:
            check_priority(priority)
        now = self._now_ms()
        ch, pri, idb = lease._ch, lease.priority, lease._idb

        def kill(conn: sqlite3.Connection) -> None:
            row = conn.execute(_SQL_LEASE_STATE, (ch, pri, idb)).fetchone()
            if row is None or row[0] != lease.attempts or row[1] <= now:
                raise self._lease_error(conn, lease, now)
            self._inbox_to_dead(conn, ch, pri, idb, reason, detail, now)
            if priority is not None and priority != pri:
                conn.execute("UPDATE dead SET priority=? WHERE seq=last_insert_rowid()", (priority,))

        self._txn(self._mw, kill)

    def _check_lease_owner(self, lease: Lease) -> None:
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
        ch = self._channel_id(channel, create=True)
        self._txn(self._mw, lambda c: c.execute("UPDATE channels SET max_attempts=? WHERE id=?", (max_attempts, ch)))
        self._max_attempts_at = 0.0

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
        return Worker(self, channel, handler, concurrency=concurrency, visibility=visibility, grace=grace)

    # -- routes ----------------------------------------------------------------------------

    def set_routes(self, routes: Sequence[Route]) -> None:
        """Store the routing table for every process using this spool (the daemon does this).

        ``send(channel)`` without ``to=`` then forwards a message whose channel
        matches a route (first match wins) instead of delivering it locally.
        Written to ``routes.json`` in the spool: temp file, fsync, rename.
        """
        data = msgspec.json.encode([{"channels": r.channels, "to": list(r.to), "mode": r.mode} for r in routes])
        path = self.path / ROUTES_FILE
        tmp = path.with_name(f".{ROUTES_FILE}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._sync_dir()
        self._routes_checked = 0.0

    def routes(self) -> list[Route]:
        """The routing table in effect (see :meth:`set_routes`)."""
        self._load_routes(force=True)
        return list(self._routes)

    def _load_routes(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._routes_checked < 1.0:
            return
        self._routes_checked = now
        try:
            st = os.stat(self.path / ROUTES_FILE)
            stamp: tuple[int, ...] = (st.st_mtime_ns, st.st_ino, st.st_size)
        except FileNotFoundError:
            stamp = ()
        if stamp == self._routes_stamp:
            return
        routes: list[Route] = []
        if stamp:
            try:
                raw = msgspec.json.decode((self.path / ROUTES_FILE).read_bytes())
                routes = [Route(str(r["channels"]), tuple(str(p) for p in r["to"]), str(r.get("mode", "fanout")))
                          for r in raw]
            except (OSError, msgspec.DecodeError, KeyError, TypeError) as e:
                log.error("ignoring unreadable %s: %s", self.path / ROUTES_FILE, e)
                routes = []
        self._routes = routes
        self._routes_stamp = stamp
        self._route_cache = {}

    def _route(self, channel: str) -> list[str] | None:
        """Peers a message of ``channel`` goes to by the routing table (None: local delivery)."""
        self._load_routes()
        if not self._routes:
            return None
        hit = self._route_cache.get(channel, _MISS)
        if hit is _MISS:
            hit = None
            for r in self._routes:
                if fnmatch.fnmatchcase(channel, r.channels):
                    hit = [FAILOVER_SEP.join(r.to)] if r.mode == "failover" and len(r.to) > 1 else list(r.to)
                    break
            self._route_cache[channel] = hit
        return hit  # type: ignore[return-value,no-any-return]

    # -- receiving and forwarding (used by the daemon) ---------------------------------------

    def receive(self, messages: Sequence[WireMessage], sender: str) -> list[int]:
        """Store messages received from a peer, dropping ids already seen, in one durable commit.

        The messages must have passed :func:`spoolq.codec.check_message`.
        Returns one status per message: ``codec.ACCEPTED`` or ``codec.DUPLICATE``.
        """
        w = self._receive_write(messages, sender)
        if w is None:
            return []
        self._submit(w)
        return [DUPLICATE if m.id in w.dups else ACCEPTED for m in messages]

    async def areceive(self, messages: Sequence[WireMessage], sender: str) -> list[int]:
        """:meth:`receive` for asyncio (concurrent batches share one commit)."""
        w = self._receive_write(messages, sender)
        if w is None:
            return []
        await self._await_write(w)
        return [DUPLICATE if m.id in w.dups else ACCEPTED for m in messages]

    def _receive_write(self, messages: Sequence[WireMessage], sender: str) -> _Write | None:
        if not messages:
            return None
        w = _Write()
        w.dedup = True
        w.probe = False
        now = self._now_ms()
        chans: dict[str, int] = {}
        origins: dict[str, int | None] = {}
        plain = all(m.headers is None and m.expires is None and (m.deliver_at is None or m.deliver_at <= now)
                    for m in messages)
        if plain:
            w.origin_rows = True  # the narrow layout: (channel, priority, id, body, origin)
        else:
            w.full = True
        rows = w.inbox
        for m in messages:
            ch = chans.get(m.channel)
            if ch is None:
                ch = self._channels.get(m.channel)
                if ch is None:
                    ch = self._create_channel(m.channel)
                chans[m.channel] = ch
            who = m.origin or sender
            if who in origins:
                origin = origins[who]
            else:
                origin = origins[who] = self._node_ref(who)
            if plain:
                rows.append((ch, m.priority, m.id, m.body, origin))
            elif m.deliver_at is not None and m.deliver_at > now:
                w.delayed.append((ch, m.deliver_at, m.id, m.priority, m.body, encode_headers(m.headers), m.expires,
                                  origin, 0))
            else:
                rows.append((ch, m.priority, m.id, m.body, encode_headers(m.headers), m.expires, origin, 0,
                             m.deliver_at))
        w.bells.update(_bell.channel_bell(c) for c in chans)
        return w

    async def _await_write(self, w: _Write) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def finished() -> None:
            if not fut.done():
                fut.set_result(None)

        def wake() -> None:  # runs in the writer thread
            try:
                loop.call_soon_threadsafe(finished)
            except RuntimeError:  # the loop was closed meanwhile: nobody is waiting
                pass

        w.callback = wake
        self._submit_async(w)
        await fut
        if w.error is not None:
            raise w.error

    def outbox_peers(self) -> list[str]:
        """Peers (names, URLs or failover groups) that have messages waiting in the outbox."""
        rows = self._read(lambda c: c.execute(
            "SELECT name FROM peers WHERE id IN (SELECT DISTINCT peer FROM outbox)").fetchall())
        return [r[0] for r in rows]

    def outbox_batch(
        self, peer: str, *, after: tuple[int, bytes] | None = None, max_messages: int = 1000,
        max_bytes: int = 4 << 20,
    ) -> list[OutboxMessage]:
        """The next messages waiting for ``peer``, in priority then id order, after the key ``after``.

        A read: nothing is claimed. The daemon is the only forwarder of a spool
        (it holds a lock), and it keeps the key of the last message it took.
        """
        p = self._peers.get(peer)
        if p is None:
            row = self._read(lambda c: c.execute("SELECT id FROM peers WHERE name=?", (peer,)).fetchone())
            if row is None:
                return []
            p = int(row[0])
            self._peers[peer] = p
            self._peer_names[p] = peer
        cols = "priority, id, channel, body, headers, expires, origin, deliver_at"
        if after is None:
            sql = f"SELECT {cols} FROM outbox WHERE peer=? ORDER BY priority, id LIMIT ?"
            args: tuple[Any, ...] = (p, max_messages)
        else:
            sql = (f"SELECT {cols} FROM outbox WHERE peer=? AND (priority, id) > (?, ?) "
                   "ORDER BY priority, id LIMIT ?")
            args = (p, after[0], after[1], max_messages)
        rows = self._read(lambda c: c.execute(sql, args).fetchall())
        out: list[OutboxMessage] = []
        size = 0
        names: dict[int, str] = {}
        origins: dict[int | None, str] = {}
        for pri, idb, ch, body, hdrs, expires, origin, deliver_at in rows:
            size += len(body) + (len(hdrs) if hdrs else 0) + 64
            if out and size > max_bytes:
                break
            name = names.get(ch)
            if name is None:
                name = names[ch] = self._channel_name(ch)
            who = origins.get(origin)
            if who is None:
                who = origins[origin] = self._origin_name(origin)
            out.append(OutboxMessage((pri, idb), WireMessage(
                idb, name, body, pri, decode_headers(hdrs) if hdrs else None, deliver_at, expires, who)))
        return out

    def outbox_settle(
        self,
        peer: str,
        done: Sequence[tuple[int, bytes]] = (),
        dead: Sequence[tuple[tuple[int, bytes], str, str]] = (),
        retry: Sequence[tuple[int, bytes]] = (),
    ) -> None:
        """Apply a peer's answer in one transaction: remove ``done`` keys (accepted or duplicate),
        move ``dead`` ones (key, reason, detail) to dead letters, count a try on ``retry`` ones."""
        p = self._peers[peer]
        now = self._now_ms()

        by_priority: dict[int, list[bytes]] = {}
        for pri, idb in done:
            by_priority.setdefault(pri, []).append(idb)

        def settle(c: sqlite3.Connection) -> None:
            for pri, ids in by_priority.items():  # IN lists: faster than one statement per key
                for i in range(0, len(ids), 500):
                    chunk = ids[i:i + 500]
                    c.execute("DELETE FROM outbox WHERE peer=? AND priority=? AND id IN (" +
                              ",".join("?" * len(chunk)) + ")", (p, pri, *chunk))
            for (pri, idb), reason, detail in dead:
                c.execute(_SQL_OUTBOX_TO_DEAD, (reason, detail, now, p, pri, idb))
                c.execute("DELETE FROM outbox WHERE peer=? AND priority=? AND id=?", (p, pri, idb))
            if retry:
                c.executemany("UPDATE outbox SET tries=tries+1 WHERE peer=? AND priority=? AND id=?",
                              [(p, pri, idb) for pri, idb in retry])

        self._txn(self._mw, settle)

    def lease_by_handle(self, handle: str) -> Lease:
        """Rebuild a lease from :attr:`Lease.handle` (for the HTTP API) to ack, nack or touch it.

        Only the identity is restored: ``body`` and ``headers`` are empty.

        Raises:
            InvalidArgument: the handle is malformed.
        """
        try:
            ch_s, pri_s, id_hex, att_s = handle.split(".")
            ch, pri, att = int(ch_s), int(pri_s), int(att_s)
            idb = bytes.fromhex(id_hex)
            if len(idb) != 16 or not 1 <= ch < 1 << 63 or not 1 <= att < 1 << 63 or not 0 <= pri <= MAX_PRIORITY:
                raise ValueError
        except ValueError:
            raise InvalidArgument(f"malformed lease handle {handle[:80]!r}",
                                  hint="pass the 'lease' value the lease call returned") from None
        return Lease(self, ch, self._channel_name(ch), pri, idb, att, 0, b"", None, None, None, None, 0)

    # -- jobs: addressing messages by their job number (the beanstalkd front-end) ---------------

    def send_jobs(
        self, items: Sequence[tuple[bytes, str, int, float, dict[str, str] | None]]
    ) -> list[int | SpoolqError]:
        """Send several messages in ONE transaction, now, in the calling thread.

        Each item is ``(body, channel, priority, delay, headers)``; routes
        apply. Returns, per item, its job number or the validation error that
        refused it (the others are still sent). Storage errors raise. The
        beanstalkd server calls this once per event-loop turn with every put
        that arrived in that turn, so concurrent clients share one sync.
        """
        out: list[int | SpoolqError] = []
        writes: list[_Write] = []
        limit = self.max_message_size
        for body, channel, priority, delay, headers in items:
            ch = self._channels.get(channel)
            if (ch is not None and not delay and headers is None and type(body) is bytes and len(body) <= limit
                    and type(priority) is int and 0 <= priority <= MAX_PRIORITY and self._route(channel) is None):
                w = _Write()  # the common case, without the general path's checks and lists
                w.inbox.append((ch, priority, _take_ids(1).to_bytes(16, "big"), body))
                w.bells.add(_bell.channel_bell(channel))
                w.jobs = []
                writes.append(w)
                out.append(-1)
                continue
            try:
                pw, _ = self._prepare_many([body], channel, None, priority, delay, None, headers, None, texts=False)
            except SpoolqError as e:
                out.append(e)
                continue
            assert pw is not None
            pw.jobs = []
            writes.append(pw)
            out.append(-1)
        if writes:
            self._write_batch(writes)  # raises (nothing written) on a storage error
            bells: set[str] = set()
            for w in writes:
                bells |= w.bells
            for b in bells:
                self.bells.ring(b)
        it = iter(writes)
        return [next(it).jobs[0] if r == -1 else r for r in out]  # type: ignore[index]

    def promote_due(self, channels: Sequence[str]) -> int:
        """Make the delayed messages of ``channels`` whose time has come ready now. Returns how many.

        (A lease does this for its own channel anyway; this is for readers of
        counts that must not show a due message as delayed.)
        """
        chs = [(c, n) for n in channels if (c := self._channels.get(n) or self._channel_id(n, create=False))]
        if not chs:
            return 0
        now = self._now_ms()
        due = self._read(lambda c: [(ch, n) for ch, n in chs
                                    if (r := c.execute(_SQL_NEXT_DELAYED, (ch,)).fetchone()) and r[0] <= now])
        if not due:
            return 0

        def promote(c: sqlite3.Connection) -> int:
            n = 0
            for ch, _name in due:
                n += c.execute(_SQL_PROMOTE, (ch, now)).rowcount
                c.execute(_SQL_PROMOTE_DELETE, (ch, now))
            return n

        n = self._txn(self._mw, promote)
        for _ch, name in due:
            self.bells.ring(_bell.channel_bell(name))
        return n

    def lease_any(
        self, channels: Sequence[str], *, visibility: float,
        visibility_for: Callable[[bytes | None], float | None] | None = None,
    ) -> tuple[Lease | None, float | None]:
        """Lease the most urgent ready message of any of ``channels`` (priority, then id).

        ``visibility_for(headers_blob)`` may give a message its own lease
        length (beanstalkd's per-job TTR); ``None`` means ``visibility``.

        Returns ``(lease, None)``, or ``(None, when)`` where ``when`` is the Unix
        time something may become ready (a delayed message or an expiring
        lease), or ``None`` if nothing is pending.
        """
        v = check_seconds("visibility", visibility, allow_zero=False)
        assert v is not None
        vis_ms = max_(1, int(v * 1000))
        chs = []
        for name in channels:
            ch = self._channels.get(name)
            if ch is None:
                ch = self._channel_id(name, create=False)
            if ch is not None:
                chs.append((ch, name, self._channel_max_attempts(ch)))
        if not chs:
            return None, None

        def lease(conn: sqlite3.Connection) -> tuple[Lease | None, float | None]:
            now = self._now_ms()
            best: tuple[Any, ...] | None = None
            for ch, name, max_attempts in chs:
                row = conn.execute(_SQL_NEXT_DELAYED, (ch,)).fetchone()
                if row is not None and row[0] <= now:
                    conn.execute(_SQL_PROMOTE, (ch, now))
                    conn.execute(_SQL_PROMOTE_DELETE, (ch, now))
                while True:
                    r = conn.execute(_SQL_LEASE_SELECT, (ch, now, 1)).fetchone()
                    if r is None:
                        break
                    pri, idb, attempts, _job, _body, _h, expires, _o, _d = r
                    if expires is not None and expires <= now:
                        self._inbox_to_dead(conn, ch, pri, idb, "expired", "ttl passed before delivery", now)
                    elif attempts >= max_attempts:
                        self._inbox_to_dead(conn, ch, pri, idb, "max_attempts",
                                            f"leased {attempts} times without an ack", now)
                    else:
                        if best is None or (pri, idb) < (best[1][0], best[1][1]):
                            best = (ch, r, name)
                        break
            if best is not None:
                ch, r, name = best
                pri, idb, attempts, job, body, hdrs, expires, origin, deliver_at = r
                own = visibility_for(hdrs) if visibility_for is not None else None
                until = now + (max_(1, int(own * 1000)) if own is not None else vis_ms)
                conn.execute(_SQL_LEASE_UPDATE, (until, ch, pri, idb))
                return Lease(self, ch, name, pri, idb, attempts + 1, job, body, hdrs, expires, origin,
                             deliver_at, until), None
            nxt: int | None = None
            for ch, _name, _m in chs:
                for sql in (_SQL_NEXT_DELAYED, _SQL_NEXT_LEASE_END):
                    row = conn.execute(sql, (ch,) if sql is _SQL_NEXT_DELAYED else (ch, now)).fetchone()
                    if row is not None and row[0] is not None:
                        nxt = row[0] if nxt is None else min(nxt, row[0])
            return None, (nxt / 1000.0 if nxt is not None else None)

        return self._txn(self._mw, lease)

    def find_job(self, job: int) -> Job | None:
        """The message with job number ``job`` wherever it is (ready, reserved, delayed, buried).

        Scans the inbox (there is no index on job numbers: it would cost every
        send a second b-tree write), so its cost grows with the queue.
        """
        now = self._now_ms()

        def find(c: sqlite3.Connection) -> tuple[str, tuple[Any, ...]] | None:
            r = c.execute("SELECT channel, priority, id, lease_until, attempts, body, headers "
                          "FROM inbox WHERE job=?", (job,)).fetchone()
            if r is not None:
                return ("reserved" if r[3] > now else "ready"), r
            r = c.execute("SELECT channel, priority, id, due, attempts, body, headers FROM delayed WHERE job=?",
                          (job,)).fetchone()
            if r is not None:
                return "delayed", r
            r = c.execute("SELECT channel, priority, id, NULL, attempts, body, headers FROM dead "
                          "WHERE job=? AND peer IS NULL ORDER BY seq DESC LIMIT 1", (job,)).fetchone()
            return ("buried", r) if r is not None else None

        found = self._read(find)  # names are looked up outside the read (it holds the reader)
        if found is None:
            return None
        state, (ch, pri, idb, due, att, body, hdrs) = found
        return Job(job, id_text_from_bytes(idb), self._channel_name(ch), state, pri, body, decode_headers(hdrs),
                   _ms_of(idb) / 1000.0, due / 1000.0 if state in ("reserved", "delayed") else None, att)


    def lease_job(
        self, job: int, *, visibility: float, visibility_for: Callable[[bytes | None], float | None] | None = None
    ) -> Lease | None:
        """Lease the message with job number ``job`` if it is ready, delayed or buried (not leased)."""
        v = check_seconds("visibility", visibility, allow_zero=False)
        assert v is not None
        vis_ms = max_(1, int(v * 1000))
        now = self._now_ms()

        def lease(c: sqlite3.Connection) -> Lease | None:
            r = c.execute("SELECT channel, due, id FROM delayed WHERE job=?", (job,)).fetchone()
            if r is not None:  # bring it in
                c.execute(_SQL_PROMOTE.replace("due<=?", "due=? AND id=?"), (r[0], r[1], r[2]))
                c.execute("DELETE FROM delayed WHERE channel=? AND due=? AND id=?", r)
            else:
                d = c.execute("SELECT seq FROM dead WHERE job=? AND peer IS NULL ORDER BY seq DESC LIMIT 1",
                              (job,)).fetchone()
                if d is not None:
                    self._undead(c, d[0])
            r = c.execute("SELECT channel, priority, id, lease_until, attempts, body, headers, expires, origin, "
                          "deliver_at FROM inbox WHERE job=?", (job,)).fetchone()
            if r is None or r[3] > now:
                return None
            ch, pri, idb, _u, att, body, hdrs, expires, origin, deliver_at = r
            own = visibility_for(hdrs) if visibility_for is not None else None
            until = now + (max_(1, int(own * 1000)) if own is not None else vis_ms)
            c.execute(_SQL_LEASE_UPDATE, (until, ch, pri, idb))
            return Lease(self, ch, self._channel_name(ch), pri, idb, att + 1, job, body, hdrs, expires, origin,
                         deliver_at, until)

        return self._txn(self._mw, lease)

    def delete_job(self, job: int) -> bool:
        """Delete the message with job number ``job`` if it is ready, delayed or buried (not leased)."""
        now = self._now_ms()

        def delete(c: sqlite3.Connection) -> bool:
            if c.execute("DELETE FROM inbox WHERE job=? AND lease_until<=?", (job, now)).rowcount:
                return True
            if c.execute("DELETE FROM delayed WHERE job=?", (job,)).rowcount:
                return True
            return bool(c.execute("DELETE FROM dead WHERE job=? AND peer IS NULL", (job,)).rowcount)

        return self._txn(self._mw, delete)

    def _undead(self, c: sqlite3.Connection, seq: int) -> tuple[str, int]:
        """Move dead letter ``seq`` (of a channel) back to ready, keeping its job and priority.

        Returns the channel's name and the job number."""
        r = c.execute("SELECT id, channel, priority, job, body, headers, origin, deliver_at FROM dead WHERE seq=?",
                      (seq,)).fetchone()
        idb, ch, pri, jb, body, hdrs, origin, deliver_at = r
        if jb is None:
            jb = self._alloc_jobs(c, 1)
        c.execute("INSERT OR IGNORE INTO inbox(channel, priority, id, job, body, headers, origin, deliver_at) "
                  "VALUES (?,?,?,?,?,?,?,?)", (ch, pri, idb, jb, body, hdrs, origin, deliver_at))
        c.execute("DELETE FROM dead WHERE seq=?", (seq,))
        return self._channel_name(ch), jb

    def kick(self, channel: str, bound: int) -> int:
        """beanstalkd's kick: make up to ``bound`` dead letters of ``channel`` ready (oldest first);
        if it has none, make up to ``bound`` delayed messages ready now. Returns how many."""
        return len(self.kick_jobs(channel, bound))

    def kick_jobs(self, channel: str, bound: int) -> list[int]:
        """:meth:`kick`, returning the job numbers of the messages it made ready."""
        ch = self._channel_id(channel, create=False)
        if ch is None or bound <= 0:
            return []
        now = self._now_ms()

        def kick(c: sqlite3.Connection) -> list[int]:
            dead = c.execute("SELECT seq, job FROM dead WHERE channel=? AND peer IS NULL ORDER BY seq LIMIT ?",
                             (ch, bound)).fetchall()
            if dead:
                return [self._undead(c, seq)[1] for seq, _job in dead]
            rows = c.execute("SELECT due, id, job FROM delayed WHERE channel=? ORDER BY due, id LIMIT ?",
                             (ch, bound)).fetchall()
            for due, idb, _job in rows:
                c.execute(_SQL_PROMOTE.replace("due<=?", "due=? AND id=?"), (ch, due, idb))
                c.execute("DELETE FROM delayed WHERE channel=? AND due=? AND id=?", (ch, due, idb))
            if rows:
                c.execute("UPDATE inbox SET deliver_at=? WHERE channel=? AND id IN (" +
                          ",".join("?" * len(rows)) + ")", (now, ch, *[r[1] for r in rows]))
            return [job for _d, _i, job in rows]

        jobs = self._txn(self._mw, kick)
        if jobs:
            self.bells.ring(_bell.channel_bell(channel))
        return jobs

    def kick_job(self, job: int) -> bool:
        """Make the buried (dead) or delayed message with job number ``job`` ready now."""

        def kick(c: sqlite3.Connection) -> str | None:
            d = c.execute("SELECT seq FROM dead WHERE job=? AND peer IS NULL ORDER BY seq DESC LIMIT 1",
                          (job,)).fetchone()
            if d is not None:
                return self._undead(c, d[0])[0]
            r = c.execute("SELECT channel, due, id FROM delayed WHERE job=?", (job,)).fetchone()
            if r is None:
                return None
            c.execute(_SQL_PROMOTE.replace("due<=?", "due=? AND id=?"), r)
            c.execute("DELETE FROM delayed WHERE channel=? AND due=? AND id=?", r)
            return self._channel_name(r[0])

        name = self._txn(self._mw, kick)
        if name is not None:
            self.bells.ring(_bell.channel_bell(name))
        return name is not None

    def peek_delayed(self, channel: str) -> Job | None:
        """The delayed message of ``channel`` that becomes ready first."""
        return self._peek_job(channel, "delayed", "SELECT job, priority, id, due, attempts, body, headers "
                              "FROM delayed WHERE channel=? ORDER BY due, id LIMIT 1")

    def peek_buried(self, channel: str) -> Job | None:
        """The oldest dead letter of ``channel`` (beanstalkd: the next buried job)."""
        return self._peek_job(channel, "buried", "SELECT job, priority, id, NULL, attempts, body, headers "
                              "FROM dead WHERE channel=? AND peer IS NULL ORDER BY seq LIMIT 1")

    def _peek_job(self, channel: str, state: str, sql: str) -> Job | None:
        ch = self._channel_id(channel, create=False)
        if ch is None:
            return None
        r = self._read(lambda c: c.execute(sql, (ch,)).fetchone())
        if r is None:
            return None
        job, pri, idb, due, att, body, hdrs = r
        return Job(job, id_text_from_bytes(idb), channel, state, pri, body, decode_headers(hdrs),
                   _ms_of(idb) / 1000.0, due / 1000.0 if due is not None else None, att)

    def sync(self) -> None:
        """fsync the database and its WAL now (for ``durability="normal"`` with a periodic sync)."""
        for path in (str(self.db_path) + "-wal", str(self.db_path)):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- inspection ------------------------------------------------------------------------

    def stats(self) -> Stats:
        """Counts per channel (ready, delayed, leased, dead, oldest age) and per peer (outbox depth).

        Cost grows with the number of stored messages (it counts them).
        """
        now = self._now_ms()

        def collect(c: sqlite3.Connection) -> tuple[list[Any], ...]:
            return (
                c.execute(
                    "SELECT channel, count(*), sum(lease_until>?), min(id), sum(lease_until<=? AND priority<1024) "
                    "FROM inbox GROUP BY channel", (now, now)
                ).fetchall(),
                c.execute("SELECT channel, count(*) FROM delayed GROUP BY channel").fetchall(),
                c.execute("SELECT channel, count(*) FROM dead WHERE peer IS NULL GROUP BY channel").fetchall(),
                c.execute(
                    "SELECT peer, count(*), sum(claim_until>?), min(id) FROM outbox GROUP BY peer", (now,)
                ).fetchall(),
                c.execute("SELECT peer, count(*) FROM dead WHERE peer IS NOT NULL GROUP BY peer").fetchall(),
                c.execute("SELECT id, name FROM channels").fetchall(),
                c.execute("SELECT id, name FROM peers").fetchall(),
            )

        inbox, delayed, dead, outbox, pdead, chans, peers = self._read(collect)
        names = dict(chans)
        pnames = dict(peers)
        acc: dict[int, dict[str, Any]] = {i: {} for i in names}
        for ch, total, leased, oldest, urgent in inbox:
            acc.setdefault(ch, {}).update(ready=total - leased, leased=leased, urgent=urgent,
                                          oldest_age=max_(0.0, (now - _ms_of(oldest)) / 1000.0))
        for ch, total in delayed:
            acc.setdefault(ch, {})["delayed"] = total
        for ch, total in dead:
            acc.setdefault(ch, {})["dead"] = total
        channels = {names.get(ch, f"#{ch}"): ChannelStats(**v) for ch, v in sorted(acc.items(),
                    key=lambda kv: names.get(kv[0], ""))}
        pacc: dict[int, dict[str, Any]] = {i: {} for i in pnames}
        for p, total, inflight, oldest in outbox:
            pacc.setdefault(p, {}).update(outbox=total, in_flight=inflight,
                                          oldest_age=max_(0.0, (now - _ms_of(oldest)) / 1000.0))
        for p, total in pdead:
            pacc.setdefault(p, {})["dead"] = total
        peers_out = {pnames.get(p, f"#{p}"): PeerStats(**v) for p, v in sorted(pacc.items())}
        return Stats(channels=channels, peers=peers_out)

    def _dead_from_row(self, r: tuple[Any, ...]) -> DeadLetter:
        _seq, idb, ch, peer, pri, attempts, job, body, hdrs, expires, origin, deliver_at, reason, detail, died = r
        msg = Message(
            id=id_text_from_bytes(idb),
            channel=self._channel_name(ch),
            body=body,
            headers=decode_headers(hdrs),
            priority=pri,
            created_at=_ms_of(idb) / 1000.0,
            deliver_at=deliver_at / 1000.0 if deliver_at else None,
            expires_at=expires / 1000.0 if expires else None,
            attempts=attempts,
            origin=self._origin_name(origin),
            job=job,
            state="dead",
        )
        return DeadLetter(
            message=msg,
            reason=reason,
            detail=detail,
            died_at=died / 1000.0,
            peer=self._peer_name(peer) if peer is not None else None,
        )

    def _dead_where(
        self,
        channel: str | None,
        reason: str | None,
        older_than: float | None,
        newer_than: float | None,
        ids: Sequence[str] | None = None,
    ) -> tuple[str, list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        if channel is not None:
            ch = self._channel_id(channel, create=False)
            where.append("channel=?")
            args.append(ch if ch is not None else -1)
        if reason is not None:
            where.append("reason=?")
            args.append(reason)
        now = self._now_ms()
        if older_than is not None:
            where.append("died_at<=?")
            args.append(now - int(check_seconds("older_than", older_than) * 1000))  # type: ignore[operator]
        if newer_than is not None:
            where.append("died_at>=?")
            args.append(now - int(check_seconds("newer_than", newer_than) * 1000))  # type: ignore[operator]
        if ids is not None:
            idbs = [id_bytes(i) for i in ids]
            where.append("id IN (" + ",".join("?" * len(idbs)) + ")")
            args.extend(idbs)
        return (" WHERE " + " AND ".join(where)) if where else "", args

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
        sql = f"SELECT {_SQL_DEAD_COLS} FROM dead{where} ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._read(lambda c: c.execute(sql, args).fetchall())
        return [self._dead_from_row(r) for r in rows]

    def dead_letter(self, message_id: str) -> DeadLetter:
        """Show one dead letter by message id.

        Raises:
            NotFound: no dead letter has that id.
        """
        idb = id_bytes(message_id)
        row = self._read(
            lambda c: c.execute(f"SELECT {_SQL_DEAD_COLS} FROM dead WHERE id=? ORDER BY seq DESC LIMIT 1", (idb,))
            .fetchone()
        )
        if row is None:
            raise NotFound(
                f"no dead letter with id {message_id}",
                hint="list them with spool.dead_letters() or `spoolq dead ls`",
            )
        return self._dead_from_row(row)

    def retry_dead(
        self,
        ids: Sequence[str] | None = None,
        *,
        channel: str | None = None,
        reason: str | None = None,
        older_than: float | None = None,
        newer_than: float | None = None,
        dry_run: bool = False,
    ) -> list[DeadLetter]:
        """Put dead letters back: ready in their channel (attempts reset, TTL cleared), or into the
        outbox of the peer they were going to.

        Select them by ``ids`` and/or the filters of :meth:`dead_letters`;
        with no selection at all, every dead letter is retried.

        Returns:
            The dead letters that were (or, with ``dry_run``, would be) retried.
        """
        where, args = self._dead_where(channel, reason, older_than, newer_than, ids)

        def retry(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            rows = conn.execute(f"SELECT {_SQL_DEAD_COLS} FROM dead{where} ORDER BY seq", args).fetchall()
            if dry_run or not rows:
                return rows
            missing_jobs = sum(1 for r in rows if r[6] is None and r[3] is None)
            job = self._alloc_jobs(conn, missing_jobs) if missing_jobs else 0
            for r in rows:
                seq, idb, ch, peer, pri, _att, jb, body, hdrs, _exp, origin, deliver_at, *_ = r
                if peer is None:
                    if jb is None:
                        jb, job = job, job + 1
                    conn.execute(
                        "INSERT OR IGNORE INTO inbox(channel, priority, id, job, body, headers, origin, deliver_at) "
                        "VALUES (?,?,?,?,?,?,?,?)",
                        (ch, pri, idb, jb, body, hdrs, origin, deliver_at),
                    )
                else:
                    conn.execute(
                        f"INSERT OR IGNORE INTO outbox{_OUTBOX_COLS} VALUES (?,?,?,?,?,?,?,?,?)",
                        (peer, pri, idb, ch, body, hdrs, None, origin, deliver_at),
                    )
                conn.execute("DELETE FROM dead WHERE seq=?", (seq,))
            return rows

        rows = self._txn(self._mw, retry)
        out = [self._dead_from_row(r) for r in rows]
        if not dry_run:
            for d in out:
                self.bells.ring(_bell.OUTBOX if d.peer else _bell.channel_bell(d.channel))
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
    ) -> int:
        """Delete dead letters for good (selected as in :meth:`retry_dead`). Returns how many."""
        where, args = self._dead_where(channel, reason, older_than, newer_than, ids)
        if dry_run:
            return int(self._read(lambda c: c.execute(f"SELECT count(*) FROM dead{where}", args).fetchone()[0]))
        return int(self._txn(self._mw, lambda c: c.execute(f"DELETE FROM dead{where}", args).rowcount))

    def peek(self, channel: str, *, limit: int = 10) -> list[Message]:
        """The next ``limit`` ready messages of ``channel``, in lease order, without leasing them."""
        ch = self._channel_id(channel, create=False)
        if ch is None:
            return []
        now = self._now_ms()
        rows = self._read(lambda c: c.execute(
            "SELECT priority, id, attempts, job, body, headers, expires, origin, deliver_at FROM inbox "
            "WHERE channel=? AND lease_until<=? ORDER BY priority, id LIMIT ?", (ch, now, int(limit))).fetchall())
        return [
            Message(id=id_text_from_bytes(idb), channel=channel, body=body, headers=decode_headers(h), priority=pri,
                    created_at=_ms_of(idb) / 1000.0, deliver_at=da / 1000.0 if da else None,
                    expires_at=ex / 1000.0 if ex else None, attempts=att, origin=self._origin_name(orig), job=job)
            for pri, idb, att, job, body, h, ex, orig, da in rows
        ]

    # -- upkeep ----------------------------------------------------------------------------------

    def sweep(self) -> dict[str, int]:
        """Do the time-driven chores: move due delayed messages to ready, dead-letter messages
        whose TTL passed while waiting (inbox, delayed, outbox), forget expired dedup ids.

        The daemon calls this periodically; a lease does the first part for its
        own channel anyway. Returns counts of what was done.
        """
        now = self._now_ms()

        def scan(c: sqlite3.Connection) -> tuple[list[Any], ...]:
            return (
                [(ch,) for (ch,) in c.execute("SELECT id FROM channels")
                 if (r := c.execute(_SQL_NEXT_DELAYED, (ch,)).fetchone()) and r[0] <= now],
                # the partial indexes on expires make these cost what has a TTL, not the queue's size
                c.execute("SELECT channel, priority, id FROM inbox WHERE expires IS NOT NULL AND expires<=? "
                          "AND lease_until<=?", (now, now)).fetchall(),
                c.execute("SELECT channel, due, id FROM delayed WHERE expires IS NOT NULL AND expires<=?",
                          (now,)).fetchall(),
                c.execute("SELECT peer, priority, id FROM outbox WHERE expires IS NOT NULL AND expires<=? "
                          "AND claim_until<=?", (now, now)).fetchall(),
            )

        due_chans, exp_inbox, exp_delayed, exp_outbox = self._read(scan)
        cutoff = ((now - self.seen_retention_ms) << 80).to_bytes(16, "big") if now > self.seen_retention_ms else b""

        def work(c: sqlite3.Connection) -> dict[str, int]:
            expired = 0
            for ch, due, idb in exp_delayed:  # first, so nothing expired is promoted
                if c.execute(_SQL_DELAYED_TO_DEAD, ("expired", "ttl passed while delayed", now, ch, due, idb)).rowcount:
                    c.execute("DELETE FROM delayed WHERE channel=? AND due=? AND id=?", (ch, due, idb))
                    expired += 1
            promoted = 0
            for (ch,) in due_chans:
                promoted += c.execute(_SQL_PROMOTE, (ch, now)).rowcount
                c.execute(_SQL_PROMOTE_DELETE, (ch, now))
            for ch, pri, idb in exp_inbox:
                # re-check inside the write transaction: it may have been leased or acked since the scan
                if c.execute("SELECT 1 FROM inbox WHERE channel=? AND priority=? AND id=? AND expires<=? "
                             "AND lease_until<=?", (ch, pri, idb, now, now)).fetchone():
                    self._inbox_to_dead(c, ch, pri, idb, "expired", "ttl passed before delivery", now)
                    expired += 1
            for p, pri, idb in exp_outbox:
                if c.execute("SELECT 1 FROM outbox WHERE peer=? AND priority=? AND id=? AND claim_until<=?",
                             (p, pri, idb, now)).fetchone():
                    c.execute(_SQL_OUTBOX_TO_DEAD, ("expired", "ttl passed before it could be forwarded", now,
                                                    p, pri, idb))
                    c.execute("DELETE FROM outbox WHERE peer=? AND priority=? AND id=?", (p, pri, idb))
                    expired += 1
            forgotten = c.execute("DELETE FROM seen WHERE id<? AND until<=?", (cutoff, now)).rowcount if cutoff else 0
            return {"promoted": promoted, "expired": expired, "forgotten": forgotten}

        result = self._txn(self._mw, work)
        if result["promoted"]:
            for (ch,) in due_chans:
                self.bells.ring(_bell.channel_bell(self._channel_name(ch)))
        return result

    # -- life cycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database connections. Pending sends finish first."""
        if self._closed:
            return
        if self._executor is not None:
            self._executor.shutdown(wait=True)  # pending asend()s finish first (it needs _wlock)
        with self._wlock, self._rlock:
            self._closed = True
            for c in self._conns:
                try:
                    c.close()
                except sqlite3.Error:
                    pass
            self._conns.clear()
            self.bells.close()
            for w in list(self._watches):
                w.close()
        os.close(self._xfd)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r}, durability={self.durability!r})"


class _Rollback(Exception):
    pass


def max_(a: Any, b: Any) -> Any:
    return a if a > b else b


def _too_large(size: int, limit: int) -> SpoolqError:
    from .errors import MessageTooLarge

    return MessageTooLarge(
        f"body and headers of {size} bytes are larger than max_message_size ({limit} bytes)",
        size=size,
        limit=limit,
        hint="store large payloads elsewhere and send a reference, or raise max_message_size",
    )


def check_peer(name: object) -> str:
    """A peer is a configured name (like a channel name) or an http(s) URL."""
    if type(name) is not str:
        raise InvalidType(f"to= must be a peer name or URL, not {type(name).__name__}")
    if FAILOVER_SEP in name:  # a failover group, as routes store it
        for part in name.split(FAILOVER_SEP):
            check_peer(part)
        return name
    if name.startswith(("http://", "https://")):
        if len(name) > 2000 or any(ch.isspace() for ch in name):
            raise InvalidArgument(f"bad peer URL {name[:80]!r}", hint="use http://host:port or https://host:port")
        return name
    try:
        check_channel(name)
    except SpoolqError:
        raise InvalidArgument(
            f"bad peer {name[:80]!r}",
            hint="use a peer name from the node config ([A-Za-z0-9._-]) or a URL like http://host:7070",
        ) from None
    return name


_SQL_CACHE: dict[tuple[str, str, int, str], str] = {}


def _insert_sql(table: str, cols: str, width: int, size: int, verb: str) -> str:
    key = (verb, table, size, cols)
    sql = _SQL_CACHE.get(key)
    if sql is None:
        row = "(" + ",".join("?" * width) + ")"
        sql = f"{verb} INTO {table}{cols} VALUES " + ",".join([row] * size)
        _SQL_CACHE[key] = sql
    return sql


def _upsert_seen_sql(n: int) -> str:
    key = ("upsert", "seen", n, "")
    sql = _SQL_CACHE.get(key)
    if sql is None:
        sql = ("INSERT INTO seen(id, until) VALUES " + ",".join(["(?,?)"] * n) +
               " ON CONFLICT(id) DO UPDATE SET until=excluded.until WHERE seen.until<=? RETURNING id")
        _SQL_CACHE[key] = sql
    return sql


def _insert_many(
    conn: sqlite3.Connection, table: str, cols: str, width: int, params: list[Any], *, verb: str = "INSERT OR IGNORE"
) -> None:
    """Insert rows (flattened in ``params``) with multi-row VALUES statements.

    One statement per chunk binds many rows at once, which is about twice as
    fast as ``executemany``; chunk sizes are powers of two so few distinct
    statements reach the statement cache.
    """
    total = len(params) // width
    pos = 0
    while total:
        for size in _CHUNKS:
            if size <= total:
                break
        sql = _insert_sql(table, cols, width, size, verb)
        n = size * width
        conn.execute(sql, params[pos : pos + n] if (pos or n != len(params)) else params)
        pos += n
        total -= size


def _many_options(options: dict[str, Any]) -> dict[str, Any]:
    out = dict(options)
    if "id" in out:
        i = out.pop("id")
        if i is not None:
            out["ids"] = [i]
    return out
