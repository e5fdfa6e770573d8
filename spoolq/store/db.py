"""Connections, transactions, the cross-process write gate and SQLite error mapping.

A :class:`Database` owns the three connections of one spool object:

``create``  writes that create messages (send, receive). Under ``full``
            durability they are synced before they return: the commit itself
            runs ``synchronous=NORMAL`` and :meth:`Database.sync_created` then
            syncs the WAL *outside* the write gate, so other writers (a
            consumer's acks, the daemon's settling) are not held up by the sync,
            and concurrent creators share one (issue 15). A lone sender while no
            other process writes lets SQLite sync inside its commit instead
            (``synchronous=FULL``, :meth:`Database.insert_created`; issue 9).
``move``    writes that only move or remove messages (lease, ack, nack, touch,
            dead-lettering, outbox clean-up): ``synchronous=NORMAL``. Losing
            one to a power cut only repeats a delivery.
``read``    snapshots for reads.

Every write transaction holds the :class:`WriteGate`. WAL frames are ordered,
so a synced commit also makes every earlier one durable.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from ..errors import (
    SpoolBusy,
    SpoolCorrupt,
    SpoolqError,
    SpoolUnavailable,
    SpoolVersionError,
    StorageError,
    StorageFull,
)
from ..message import _take_ids, id_text
from . import sql

__all__ = ["Database", "WriteGate", "is_busy", "storage_error", "DB_NAME", "BUSY_TIMEOUT"]

DB_NAME: Final = "spool.db"
RESERVE_FILE: Final = "reserve"
RESERVE_BYTES: Final = 8 << 20  # more than a WAL grows between checkpoints (1,000 pages)
WAL_ROOM_FRAMES: Final = 1_100  # the WAL's size given in advance (SQLite restarts it at 1,000 pages)
WAL_GROW_CHECK: Final = 256  # synced commits between two looks at the WAL's size (see _grow_wal)
# Under durability normal, the WAL pages after which a commit on `create` checkpoints (SQLite's default,
# and every other connection's, is 1,000): a checkpoint syncs the WAL and the database, and a send of the
# spool writes ~1.6 WAL pages, so at 1,000 a sender paid those two syncs every ~600 sends (issue 9)
CREATE_CHECKPOINT_PAGES: Final = 4_000
BUSY_TIMEOUT: Final = 30.0

T = TypeVar("T")
log = logging.getLogger("spoolq.spool")

# sqlite3 binds int, float, str and bytearray parameters as they are, but looks for an adapter for every
# other one, bytes included (message ids, bodies, lease keys): the registry, then PrepareProtocol's
# `__adapt__`, whose AttributeError it formats and clears (~3k instructions per bytes parameter; a
# beanstalkd put binds two). An adapter for exactly `bytes` that returns the object itself ends the search
# at the registry and changes no value bound (`bytes.__bytes__` of a bytes object is that object; its
# subclasses keep the search). One registered by the program before is left alone (issue 9).
if (bytes, sqlite3.PrepareProtocol) not in sqlite3.adapters:
    sqlite3.register_adapter(bytes, bytes.__bytes__)


def _spool_marks(path: Path, db_path: Path) -> list[str]:
    """What in the directory shows that it held a spool before this open."""
    try:
        if not db_path.exists():
            return []
        wal = db_path.with_name(db_path.name + "-wal")
        bells = path / "bells"
        marks = [p.name for p in (path / "write.lock", path / "node.json", path / "routes.json") if p.exists()]
        if wal.exists() and wal.stat().st_size:
            marks.append(wal.name)
        if bells.is_dir() and any(bells.iterdir()):
            marks.append("bells/")
        return marks
    except OSError:
        return []


def _wal_header_ok(head: bytes) -> bool:
    """Check the WAL header's own checksum (the first 24 bytes, Fibonacci-weighted 32-bit sums)."""
    big = head[3] & 1 == 1
    order: Literal["big", "little"] = "big" if big else "little"
    s0 = s1 = 0
    for i in range(0, 24, 8):
        x0 = int.from_bytes(head[i:i + 4], order)
        x1 = int.from_bytes(head[i + 4:i + 8], order)
        s0 = (s0 + x0 + s1) & 0xFFFFFFFF
        s1 = (s1 + x1 + s0) & 0xFFFFFFFF
    return s0 == int.from_bytes(head[24:28], "big") and s1 == int.from_bytes(head[28:32], "big")


class WriteGate:
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
    __slots__ = ("_db", "_depth", "_fd", "_lock", "_owner", "_queue_until", "held")

    def __init__(self, db: Database, fd: int) -> None:
        self._lock = threading.RLock()
        self._fd = fd
        self._depth = 0
        self.held = False
        self._owner = 0
        self._queue_until = 0.0
        self._db = db

    def __enter__(self) -> None:
        self._lock.acquire()
        if self._depth == 0 and not self._queue_until and not self._db.closed:  # the common case, inline
            self._owner = threading.get_ident()
            self._depth = 1
            return
        self._enter(True)

    def enter_nowait(self) -> bool:
        """Enter the gate if that needs no wait (for an event loop, or work that can be skipped); ``False``:
        it would wait, and it was not entered. Leave it with ``__exit__`` as after ``with``."""
        if not self._lock.acquire(blocking=False):
            return False
        return self._enter(False)

    def _enter(self, wait: bool) -> bool:
        """The rest of entering, with ``_lock`` taken: the ``flock`` while queueing (``wait``: block in it;
        else give up, release ``_lock`` and return False)."""
        if self._depth == 0:
            if self._db.closed:
                self._lock.release()
                self._db.check_open()
            if self._queue_until and time.monotonic() < self._queue_until:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    self._queue_until = time.monotonic() + self.STICKY  # others queue too: keep queueing
                    if not wait:
                        self._lock.release()
                        return False
                    fcntl.flock(self._fd, fcntl.LOCK_EX)
                self.held = True
            self._owner = threading.get_ident()
        self._depth += 1
        return True

    def contended(self) -> bool:
        """Whether other processes were found writing lately (this gate queues in the ``flock``)."""
        until = self._queue_until
        return bool(until) and time.monotonic() < until

    def escalate(self) -> None:
        """SQLite said busy: from now on (for a while) wait in the queue. Call with the gate held."""
        self._queue_until = time.monotonic() + self.STICKY
        if not self.held:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            self.held = True

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._owner = 0
            if self.held:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                self.held = False
        self._lock.release()

    def owned(self) -> bool:
        return self._owner == threading.get_ident()


def is_busy(e: sqlite3.Error) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
    return "locked" in str(e) or "busy" in str(e)


def storage_error(e: sqlite3.Error, path: Path) -> SpoolqError:
    """The spoolq error for an SQLite error: whose fault it is and what to do."""
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


_FD_LINKS: Final = "/proc/self/fd/"  # Linux: a descriptor's file name, " (deleted)" once unlinked
_datasync: Final = getattr(os, "fdatasync", os.fsync)  # what SQLite uses for the WAL on Linux; fsync elsewhere


class Database:
    """The SQLite side of one spool object: directory, connections, transactions.

    Args:
        path: the spool directory.
        durability: ``"full"`` or ``"normal"`` (the ``create`` connection's sync).
        busy_timeout: seconds to wait for another process's write lock.
    """

    def __init__(self, path: Path, durability: str, busy_timeout: float = BUSY_TIMEOUT, *,
                 read_only: bool = False) -> None:
        self.path = path
        self.db_path = path / DB_NAME
        self.busy_timeout = busy_timeout
        self.closed = False
        self.read_only = read_only
        self.version = sql.SCHEMA_VERSION  # the schema version of the open spool
        self._conns: list[sqlite3.Connection] = []
        self.read_lock = threading.Lock()
        self.on_rollback: Callable[[], None] = lambda: None
        self._marks = _spool_marks(path, self.db_path)
        self.sync_creates = durability == "full" and not read_only
        self._create_full = False  # `create` syncs inside its commits right now (see insert_created)
        self._commits = 0  # commits on `create` known to be done (sync_created), and how many are synced
        self._synced = 0
        self._count_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._wal_fd = -1
        self._wal_link: str | None = "" if os.path.isdir(_FD_LINKS) else None  # see _wal_unlinked
        self._grow_count = 0  # synced commits since the last look at the WAL's size (see _grow_wal)
        self._db_fd = -1  # for sync(): never closed while connections are open (see there)
        self._refuse_damaged()
        if read_only:
            self._open_read_only()
            return
        self._open_dir()
        try:
            self._gate_fd = os.open(path / "write.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise SpoolUnavailable(f"cannot open {path / 'write.lock'}: {e.strerror or e}") from e
        try:
            self.gate = WriteGate(self, self._gate_fd)
            self.create = self._connect("FULL" if durability == "full" else "NORMAL")
            self._create_cursor = self.create.cursor()  # used under the gate only (insert_created)
            if not self.sync_creates:
                self.create.execute(f"PRAGMA wal_autocheckpoint={CREATE_CHECKPOINT_PAGES}")
            self.move = self._connect("NORMAL")
            self.read_conn = self._connect("NORMAL")
            self.node_id = self._init_schema()
            if self.sync_creates:  # creating commits are synced by sync_created() from now on
                self.retry(lambda: self.create.execute("PRAGMA synchronous=NORMAL"))
            self.ensure_reserve()
        except BaseException:
            self._close_conns()
            os.close(self._gate_fd)
            if self._db_fd >= 0:
                os.close(self._db_fd)
            raise
        self.sync_dir()

    # -- opening ------------------------------------------------------------------------------

    def _open_read_only(self) -> None:
        """For inspection (a read-only mount, another user's spool): nothing is created or written;
        every write raises :class:`SpoolUnavailable`."""
        if not self.db_path.is_file():
            raise SpoolUnavailable(f"there is no spool at {self.path} (no {DB_NAME})",
                                   hint="check the path; a read-only open never creates a spool")
        try:
            self._gate_fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise SpoolUnavailable(f"cannot open {self.path}: {e.strerror or e}") from e
        try:
            self.gate = WriteGate(self, self._gate_fd)
            conn = None
            for mode in ("mode=ro", "immutable=1"):  # immutable: a read-only mount cannot hold the -shm file
                try:
                    conn = sqlite3.connect(f"file:{self.db_path}?{mode}", uri=True, isolation_level=None,
                                           check_same_thread=False, timeout=5)
                    conn.execute(sql.USER_VERSION).fetchone()
                    break
                except sqlite3.Error:
                    if conn is not None:
                        conn.close()
                    conn = None
            if conn is None:
                raise SpoolUnavailable(f"cannot open {self.db_path} read-only", hint="check its permissions")
            self._conns.append(conn)
            self.create = self.move = self.read_conn = conn
            self._create_cursor = conn.cursor()  # a write through it fails as read-only
            version = conn.execute(sql.USER_VERSION).fetchone()[0]
            if version > sql.SCHEMA_VERSION:
                raise SpoolVersionError(
                    f"the spool at {self.path} has schema version {version}, newer than this spoolq "
                    f"understands ({sql.SCHEMA_VERSION})", hint="upgrade spoolq (pip install -U spoolq)")
            if version == 0:
                raise self._damaged() if self._marks else SpoolUnavailable(f"{self.db_path} holds no spool")
            self.node_id = str(conn.execute(sql.NODE_ID).fetchone()[0])
            self.version = int(version)  # may be older than SCHEMA_VERSION: nothing can migrate it
        except BaseException:
            self._close_conns()
            os.close(self._gate_fd)
            raise

    def _damaged(self) -> SpoolCorrupt:
        return SpoolCorrupt(
            f"{self.db_path} holds no spool, but {self.path} held one ({', '.join(self._marks)}): the database "
            "was truncated or its WAL damaged; nothing was changed",
            hint=f"run `spoolq check --spool {self.path}`, restore spool.db (and spool.db-wal) from a backup, "
                 "or move the directory aside to start an empty spool",
        )

    @staticmethod
    def refuse_damaged(path: Path) -> None:
        """Raise :class:`SpoolCorrupt` for a directory that held a spool whose database is now empty or
        whose WAL is garbage, without opening anything."""
        db = Database.__new__(Database)
        db.path, db.db_path = path, path / DB_NAME
        db._marks = _spool_marks(path, db.db_path)
        db._refuse_damaged()

    def _refuse_damaged(self) -> None:
        """Refuse, touching nothing, a directory that held a spool whose database is now empty.

        SQLite would take an empty ``spool.db`` (truncated, or beside a WAL
        overwritten with garbage, which SQLite ignores) for a new database, and
        a fresh spool with a new node id would silently replace every message.
        """
        if not self._marks:
            return
        try:
            size = self.db_path.stat().st_size
        except OSError:
            return  # unreadable: the open below says so
        wal = self.db_path.with_name(self.db_path.name + "-wal")
        try:
            wal_size = wal.stat().st_size
        except OSError:
            wal_size = 0
        if (size == 0 or wal_size) and not self._wal_holds_a_spool(wal):
            raise self._damaged()  # before any connection: closing one would checkpoint and delete the WAL

    @staticmethod
    def _wal_holds_a_spool(wal: Path) -> bool:
        """A valid WAL beside an empty database (a fresh spool never checkpointed) is fine."""
        try:
            with open(wal, "rb") as f:
                head = f.read(32)
        except OSError:
            return False
        # WAL header magic (big- or little-endian checksums), https://sqlite.org/fileformat.html#wal_file_format
        return len(head) == 32 and head[:4] in (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83") and \
            _wal_header_ok(head)

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
            raise storage_error(e, self.db_path) from e
        self._conns.append(conn)

        def setup() -> None:
            conn.execute("PRAGMA busy_timeout=0")
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":
                if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
                    raise SpoolUnavailable(f"cannot switch {self.db_path} to WAL mode")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.execute("PRAGMA secure_delete=FAST")

        self.retry(setup)
        return conn

    def _init_schema(self) -> str:
        def check(conn: sqlite3.Connection) -> bool:
            version = start = conn.execute(sql.USER_VERSION).fetchone()[0]
            if version > sql.SCHEMA_VERSION:
                raise SpoolVersionError(
                    f"the spool at {self.path} has schema version {version}, newer than this spoolq "
                    f"understands ({sql.SCHEMA_VERSION}); it was left untouched",
                    hint="upgrade spoolq (pip install -U spoolq) to open this spool",
                )
            if version == 0:
                if self._marks and not conn.execute(sql.TABLE_COUNT).fetchone()[0]:
                    raise self._damaged()
                if conn.execute(sql.TABLE_COUNT).fetchone()[0]:
                    raise SpoolUnavailable(
                        f"{self.db_path} is an SQLite database but not a spoolq spool; it was left untouched",
                        hint="choose an empty directory for the spool",
                    )
                for stmt in sql.SCHEMA.strip().split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute(sql.INIT_META, (id_text(_take_ids(1)), time.time()))
                version = 1
            while version < sql.SCHEMA_VERSION:  # one transaction: a crash leaves the old version whole
                for stmt in sql.MIGRATIONS[version].strip().split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                version += 1
            if version != start:  # an open of a current spool writes nothing (it may be on a full disk)
                conn.execute(f"PRAGMA user_version={sql.SCHEMA_VERSION}")
            return bool(version != start)

        if self.txn(self.move, check):
            # A new or upgraded schema is made durable now, whatever the durability: written on `move`
            # (synchronous=NORMAL) and lost in a crash, it would leave a directory with a spool's marks and
            # an empty database, which the next open refuses as damaged.
            self.sync()
        return str(self.read_conn.execute(sql.NODE_ID).fetchone()[0])

    def sync_dir(self) -> None:
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

    def sync(self) -> None:
        """fsync the database and its WAL now.

        The database's descriptor stays open until :meth:`close`. SQLite's locks are POSIX locks, which
        belong to the process: closing *any* descriptor of spool.db while this process has connections
        to it drops their locks, and another process closing its last connection could then take the
        spool for unused, checkpoint it and delete the WAL under our writers (a corrupt spool; see
        SQLite's "How To Corrupt", 2.2). Closing a WAL descriptor is harmless: SQLite locks none of it.
        """
        with self._sync_lock:
            if self._db_fd < 0:
                self._db_fd = os.open(self.db_path, os.O_RDONLY | os.O_CLOEXEC)
            os.fsync(self._db_fd)
            try:
                fd = os.open(f"{self.db_path}-wal", os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- transactions -------------------------------------------------------------------------

    def retry(self, fn: Callable[[], T]) -> T:
        """Run ``fn``, retrying with short sleeps while another process holds the lock."""
        delay = 0.0001
        deadline = 0.0
        while True:
            try:
                return fn()
            except sqlite3.Error as e:
                if not is_busy(e):
                    raise storage_error(e, self.db_path) from e
                now = time.monotonic()
                if self.gate.owned() and not self.gate.held:
                    self.gate.escalate()  # queue behind the other writers from now on
                    continue
                if deadline == 0.0:
                    deadline = now + self.busy_timeout
                elif now > deadline:
                    raise SpoolBusy(
                        f"the spool at {self.path} stayed locked for over {self.busy_timeout:.0f}s",
                        hint="another process holds a long write transaction; retry, or raise busy_timeout",
                    ) from e
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.005)

    def execute_write(self, conn: sqlite3.Connection, statement: str, params: object) -> int:
        """One autocommitted write statement (one transaction) under the gate; returns its rowcount."""
        with self.gate:
            try:
                return self.execute_gated(conn, statement, params)
            except StorageFull:
                if conn is not self.move or not self.make_room():
                    raise
                return self.execute_gated(conn, statement, params)

    def fetch_write(self, conn: sqlite3.Connection, statement: str, params: object) -> list[Any]:
        """One autocommitted write statement with ``RETURNING`` (one transaction) under the gate; its rows."""
        with self.gate:
            try:
                return conn.execute(statement, params).fetchall()  # type: ignore[arg-type]
            except sqlite3.Error as e:
                if not is_busy(e):
                    error = storage_error(e, self.db_path)
                    if not isinstance(error, StorageFull) or conn is not self.move or not self.make_room():
                        raise error from e
            return self.retry(lambda: conn.execute(statement, params).fetchall())  # type: ignore[arg-type]

    def insert_created(self, statement: str, params: tuple[Any, ...], synced: bool = False) -> None:
        """One autocommitted write on ``create`` by a caller that holds the gate, through a cursor kept for
        it (``Connection.execute`` makes and registers a new cursor per call; issue 9).

        ``synced``: SQLite syncs the WAL inside the commit (``synchronous=FULL``), as for a lone sender
        under ``full`` while no other process writes; the caller then skips :meth:`sync_created`.
        """
        if synced != self._create_full:
            self._create_synchronous(synced)
        try:
            self._create_cursor.execute(statement, params)
        except sqlite3.Error as e:
            if not is_busy(e):
                raise storage_error(e, self.db_path) from e
            self.retry(lambda: self._create_cursor.execute(statement, params))

    def _create_synchronous(self, full: bool) -> None:
        """Switch ``create`` between syncing inside its commits (FULL) and after them (NORMAL, then
        :meth:`sync_created`). Called under the gate; a pragma that touches no page takes no lock."""
        self.create.execute("PRAGMA synchronous=FULL" if full else "PRAGMA synchronous=NORMAL")
        self._create_full = full

    def execute_gated(self, conn: sqlite3.Connection, statement: str, params: object) -> int:
        """:meth:`execute_write` for a caller that already holds the gate."""
        if self._create_full and conn is self.create:
            self._create_synchronous(False)
        try:
            return conn.execute(statement, params).rowcount  # type: ignore[arg-type]
        except sqlite3.Error as e:
            if not is_busy(e):
                raise storage_error(e, self.db_path) from e
            return self.retry(lambda: conn.execute(statement, params).rowcount)  # type: ignore[arg-type]

    def txn_nowait(self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> tuple[bool, T | None]:
        """:meth:`txn` for an event loop, never waiting for a lock: ``(False, None)``, with nothing done,
        when the gate is held by another thread or queued for, or SQLite says busy (another process
        writes), or ``move`` is out of room (:meth:`txn` makes room); the caller then commits from a
        thread. Other errors are raised. A small transaction only: the loop waits for its writes."""
        gate = self.gate
        if not gate.enter_nowait():
            return False, None
        try:
            if self._create_full and conn is self.create:  # group commits sync outside the gate
                self._create_synchronous(False)
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                if is_busy(e):
                    return False, None
                raise storage_error(e, self.db_path) from e
            try:
                result = fn(conn)
                conn.execute("COMMIT")
                return True, result
            except BaseException as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self.on_rollback()
                if isinstance(e, sqlite3.Error):
                    if is_busy(e):  # nothing was written: the caller commits from a thread instead
                        return False, None
                    error = storage_error(e, self.db_path)
                    if isinstance(error, StorageFull) and conn is self.move:  # txn() makes room first
                        return False, None
                    raise error from e
                raise
        finally:
            gate.__exit__(None, None, None)

    def txn(self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
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
                self.on_rollback()  # e.g. a job block reserved in this transaction was rolled back with it
                raise

        with self.gate:
            if conn is not self.move:
                if self._create_full and conn is self.create:  # group commits sync outside the gate
                    self._create_synchronous(False)
                return self.retry(attempt)
            try:
                return self.retry(attempt)
            except StorageFull:
                if not self.make_room():
                    raise
                return self.retry(attempt)

    def sync_created(self) -> None:
        """Make the commit just done on ``create`` durable (under ``full``; a no-op under ``normal``).

        Call it after the commit, without holding the gate. WAL frames are written in order, so one
        ``fdatasync`` of the WAL makes every commit finished before it durable: a caller whose
        commit was covered by a sync that started after it returns at once, and concurrent callers
        share one sync. A checkpoint in between is safe too: under ``synchronous=NORMAL`` SQLite
        syncs the WAL before it checkpoints, and the database file after.

        Raises:
            StorageError: the sync failed (the commit may not be durable).
        """
        if not self.sync_creates:
            return
        with self._count_lock:
            self._commits += 1
            mine = self._commits
        with self._sync_lock:
            if self._synced >= mine:
                return
            target = self._commits
            try:
                fd = self._wal_fd
                if fd < 0 or self._wal_unlinked(fd):  # first use, or the WAL (or the spool) was removed
                    if fd >= 0:
                        os.close(fd)
                    self._wal_fd = -1
                    fd = self._wal_fd = os.open(f"{self.db_path}-wal", os.O_RDONLY | os.O_CLOEXEC)
                    self._wal_link = f"{_FD_LINKS}{fd}" if self._wal_link is not None else None
                _datasync(fd)
            except OSError as e:
                raise StorageError(f"cannot sync the spool at {self.path}: {e.strerror or e}",
                                   hint="check the disk; the last messages written may not be durable") from e
            self._synced = target
        self._grow_count += 1
        if self._grow_count >= WAL_GROW_CHECK:
            self._grow_wal()

    def check_created(self) -> None:
        """After a commit that SQLite synced itself (:meth:`insert_created` with ``synced``): the check
        :meth:`sync_created` makes, that the WAL was not removed; if it was (or is not open yet for this
        check), :meth:`sync_created` reopens it by name, and raises when it is gone."""
        fd = self._wal_fd
        if fd < 0 or self._wal_unlinked(fd):
            self.sync_created()
            return
        self._grow_count += 1
        if self._grow_count >= WAL_GROW_CHECK:
            self._grow_wal()

    def _grow_wal(self) -> None:
        """Give the WAL the size it reaches between two checkpoints, as written zeros, ahead of the commits.

        A synced commit that appends past the WAL's end changes the file's size and allocates blocks, so
        its ``fdatasync`` also commits the inode through the filesystem's journal: ~30% fewer synced commits
        per second were measured while a fresh WAL grows (its first 1,000 pages after every open). Zeros past
        the last frame are what a WAL holds anyway once SQLite restarts it after a checkpoint: recovery
        stops at the first frame whose salt and checksum do not match. They are written only past the end
        of the file, while this connection holds SQLite's write lock (``BEGIN IMMEDIATE``, then rolled back),
        so no frame is written or moved meanwhile. Looked at every ``WAL_GROW_CHECK`` synced commits (one
        ``lseek``): a spool object that commits less never pays for it. Never raises: it only saves time.
        """
        self._grow_count = 0
        if self._wal_fd < 0 or self.closed:
            return
        gate = self.gate
        if not gate.enter_nowait():  # another writer now: look again later
            return
        try:
            try:
                conn = self.create
                if conn.in_transaction:
                    return
                page = conn.execute("PRAGMA page_size").fetchone()[0]
                want = 32 + WAL_ROOM_FRAMES * (24 + page)
                if os.lseek(self._wal_fd, 0, os.SEEK_END) >= want:  # not fstat: see _wal_unlinked
                    return
                conn.execute("BEGIN IMMEDIATE")  # busy (another process writes): look again later
                try:
                    fd = os.open(f"{self.db_path}-wal", os.O_WRONLY | os.O_CLOEXEC)
                    try:
                        end = os.lseek(fd, 0, os.SEEK_END)
                        if end < 32:  # no header yet: leave a fresh WAL to SQLite
                            return
                        zeros = memoryview(bytes(min(1 << 20, want - end)))
                        while end < want:
                            end += os.pwrite(fd, zeros[: want - end], end)
                        _datasync(fd)
                    finally:
                        os.close(fd)
                finally:
                    conn.execute("ROLLBACK")
            finally:
                gate.__exit__()
        except (OSError, sqlite3.Error) as e:  # a full disk, a busy database: the WAL grows as it would
            log.debug("could not give the WAL of %s its size in advance: %s", self.path, e)

    def _wal_unlinked(self, fd: int) -> bool:
        """Whether the WAL held open for syncing was unlinked: the spool directory was removed (or its WAL
        deleted) under this open spool. Then the sync reopens it by name, and a send into a removed spool
        raises instead of reporting a durable message (SQLite itself goes on writing into the old file).

        Not ``fstat``: since Linux 6.13 (multigrain timestamps) reading a file's times makes its next write
        update them at fine grain, and every ``fdatasync`` then also commits the inode: a stat per send made
        each sync 50-100 µs slower here (issue 9). ``/proc/self/fd/N`` names the file without reading its
        attributes, and ends in `` (deleted)`` once it is unlinked.
        """
        link = self._wal_link
        if link is not None:
            try:
                return os.readlink(link).endswith(" (deleted)")
            except OSError:  # no /proc: fstat from now on
                self._wal_link = None
        return os.fstat(fd).st_nlink == 0

    # -- the reserve: room for consumers to drain a full disk ---------------------------------

    def ensure_reserve(self) -> None:
        if self.read_only:
            return
        self._ensure_reserve()

    def _ensure_reserve(self) -> None:
        """Keep ``RESERVE_BYTES`` of disk for moves and removals (acks, leases) when the disk fills up.

        Created only while there is plenty of room (eight times its size), so a
        small disk is not filled by it; recreated by the sweep once space is back.
        """
        path = self.path / RESERVE_FILE
        try:
            if path.exists():
                return
            st = os.statvfs(self.path)
            if st.f_bavail * st.f_frsize < 8 * RESERVE_BYTES:
                return
            tmp = path.with_name(RESERVE_FILE + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                try:  # allocated blocks without writing them: an open costs no 8 MiB write
                    os.posix_fallocate(fd, 0, RESERVE_BYTES)
                except OSError:  # a filesystem without fallocate: write the zeros
                    os.ftruncate(fd, 0)
                    zeros = memoryview(bytes(RESERVE_BYTES))
                    while zeros:
                        zeros = zeros[os.write(fd, zeros):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError:
            pass

    def make_room(self) -> bool:
        """The disk is full during a move or removal: free the reserve, and restart the WAL from its
        beginning (a checkpoint), so that consumers can drain the spool. Returns whether to try again."""
        released = self.release_reserve()
        try:
            busy, _frames, _done = self.move.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error:
            return released
        return released or not busy

    def release_reserve(self) -> bool:
        """The disk is full: free the reserve so that acks can still drain the spool. Returns whether it did."""
        try:
            os.unlink(self.path / RESERVE_FILE)
        except OSError:
            return False
        log.warning("the disk of the spool at %s is full: released its %d KiB reserve so consumers can drain it",
                    self.path, RESERVE_BYTES >> 10)
        return True

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` as one read transaction (a consistent snapshot)."""
        conn = self.read_conn

        def attempt() -> T:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

        with self.read_lock:
            self.check_open()
            return self.retry(attempt)

    def read_nowait(self, fn: Callable[[sqlite3.Connection], T], *,
                    one_statement: bool = False) -> tuple[bool, T | None]:
        """:meth:`read`, but never waiting: ``(False, None)`` when the read connection is in use by
        another thread or SQLite says busy (the caller then reads from a thread). For an event loop
        (a WAL read does not wait for writers; ``busy_timeout`` is 0). ``one_statement``: ``fn`` runs
        one statement to its end, which is a read transaction of its own without BEGIN and COMMIT
        (two statements less on the event loop for each batch the forwarder reads, issue 15)."""
        if not self.read_lock.acquire(blocking=False):
            return False, None
        conn = self.read_conn
        try:
            self.check_open()
            if one_statement:
                return True, fn(conn)
            conn.execute("BEGIN")
            try:
                return True, fn(conn)
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        except sqlite3.Error as e:
            if is_busy(e):
                return False, None
            raise storage_error(e, self.db_path) from e
        finally:
            self.read_lock.release()

    def check_open(self) -> None:
        if self.closed:
            raise SpoolUnavailable(f"the spool at {self.path} is closed", hint="open a new Spool")

    # -- closing ------------------------------------------------------------------------------

    def _close_conns(self) -> None:
        for c in self._conns:
            try:
                c.close()
            except sqlite3.Error:
                pass
        self._conns.clear()

    def close(self) -> None:
        """Close the connections (pending writes must have finished: the caller stops its writers first)."""
        with self.gate, self.read_lock:
            self.closed = True
            self._close_conns()
        os.close(self._gate_fd)
        with self._sync_lock:
            if self._wal_fd >= 0:
                os.close(self._wal_fd)
                self._wal_fd = -1
            if self._db_fd >= 0:  # the connections are closed: no lock of ours to drop now
                os.close(self._db_fd)
                self._db_fd = -1
