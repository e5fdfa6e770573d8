"""The per-message event log behind ``spoolq trace``.

Theory of operation
===================

``events`` holds one row per thing that happened to a message on this node:
``(id, n, at, kind, detail)``, ``at`` in Unix ms, ``detail`` a small JSON
object as text. The table is keyed ``(id, n)`` *without rowid*: one b-tree,
so an event costs one page write, not a table page and an index page. ``n``
orders the events of one id within a millisecond: it comes from a per-process
counter that starts at a random point (statement number times 4096 plus the
row's place in the statement), so two processes logging the same id in the same
millisecond cannot clash in practice. Being per process, it does not order the
events of two processes: a message's timeline puts its arrival on the node
(``created``, ``received``) first within a millisecond, then sorts by ``n``
(a relay may lease a message in the millisecond the receiver logged it). ``INSERT OR IGNORE`` makes sure an event
can never fail the change it describes. Rows are written by :func:`record`, always on the connection
and inside the transaction of the state change they describe (a send's
group commit, a lease, an ack, a settled batch): the log costs no extra
transaction and no extra sync, and a rolled-back change leaves no event.
A group of plain sends writes its rows and their ``created`` events in one statement
instead (``sql.insert_traced``, numbered by :func:`statement_base`), still one transaction.
The one exception is a forward attempt that failed before the peer answered:
nothing else changes then, so its events are a small transaction of their own.

Events of many ids at once — a batch forwarded to a peer, or received from one — are one row
of ``event_runs`` instead (schema v3, issue 15): one kind, time and detail, and the ids as one
blob, with the least and greatest of them (``first``, ``last``). A row per id cost about as much
as storing the message itself (~1.5 us each way on the forwarding path, a quarter of the
forwarding CPU of both nodes). The ids of one run lie within ``RUN_SPAN`` of each other in id time
(their first 6 bytes), so the events of an id are found by looking only at runs whose ``first``
lies within ``RUN_SPAN`` below it (an index range) and then in their ``ids`` (see :func:`runs`;
batches wider than that are split, and pieces under ``sql.IDS_MIN`` ids become rows per id). A
run counts as its number of ids towards ``trace_max_rows``.

The hot paths hand over *flat* parameter lists (``id, at, kind, detail`` per
row) so that no object is built per event; details are JSON strings built once
per request or lease round (see ``detail``) and reused for every row.

Whether events are written at all is a setting of the spool, stored in its ``meta``
table (:class:`TraceSetting`), so that every process using the spool follows it: off
in a new spool, switched on by a node whose config says ``trace = true`` (the default)
when it starts, and by ``spoolq trace --enable``. A ``Spool(trace=True/False)`` decides
for itself instead. Processes re-read the stored setting at most once a ``REFRESH``.

The log is bounded by the node, off its event loop (:meth:`EventLog.prune`):
by age (``trace_retention``) and by rows (``trace_max_rows``), in chunks of
about ``PRUNE_CHUNK`` rows per transaction so a large prune never holds the
write lock for long. Ids begin with their creation time (ms), so events older
than the cutoff belong to ids below the cutoff's id: the age prune walks that
id range in chunks and deletes the rows whose ``at`` is old too (a long-lived
message keeps its recent events). The row bound counts the table (a scan of
the one b-tree, on the read connection) and drops the events of the oldest ids.

Kinds (``detail`` keys in brackets)::

    created         [channel, by, client, to, route]   sent on this node (to: the outbox peer)
    received        [channel, from, result]             from a peer; result "new" or "duplicate"
    forwarded       [peer, target, url, result]         the peer took it ("accepted" or "duplicate")
    forward_failed  [peer, target, url, error]          an attempt failed; it stays in the outbox
    leased          [until, attempt]
    lease_expired   [attempt]                           the lease ran out without ack or nack
    nacked          [delay, reason, attempt]
    acked           []
    dead            [reason, detail]
    retried         []                                  a dead letter put back
    relayed         [to]                                ``Lease.forward``: handed on under the same id
    held, released, requeued, deleted  [by]             admin actions (``spoolq hold`` ...)
"""

from __future__ import annotations

import contextvars
import itertools
import json
import random
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Final

from ..errors import SpoolqError
from . import sql
from .db import Database

__all__ = ["ACTOR", "EventLog", "TraceSetting", "record", "detail", "statement_base"]

# Who is acting, for the ``created`` event: set by a front-end for the requests it serves
# (the HTTP API: the token's name and the client's address). A library call is "library".
ACTOR: contextvars.ContextVar[tuple[str, str | None]] = contextvars.ContextVar(
    "spoolq_actor", default=("library", None))

PRUNE_CHUNK: Final = 5000
_STATEMENTS = itertools.count(random.getrandbits(40))  # next() is atomic: no lock
MAX_EVENTS: Final = 10_000  # per id, read at most
RUN_CHUNK: Final = 64  # runs deleted per transaction by the age prune (each up to thousands of ids)
RUN_SPAN: Final = 3_600_000  # ms of id time one run may span (the reach of a lookup below an id)
_DETAILS: dict[tuple[Any, ...], str] = {}


def detail(**fields: Any) -> str:
    """A detail as compact JSON text (``None`` fields left out)."""
    return json.dumps({k: v for k, v in fields.items() if v is not None}, separators=(",", ":"))


def cached_detail(key: tuple[Any, ...], make: Callable[[], str]) -> str:
    """A detail string reused for every row of the same kind of request (bounded cache)."""
    d = _DETAILS.get(key)
    if d is None:
        if len(_DETAILS) > 4096:
            _DETAILS.clear()
        d = _DETAILS[key] = make()
    return d


def record(conn: sqlite3.Connection, flat: list[Any], blocks: list[tuple[str, tuple[Any, ...]]] | None = None) -> None:
    """Write events, given flat as ``[id, at, kind, detail, id, at, kind, detail, ...]``, on ``conn``
    inside the caller's transaction. The one way an event is written.

    ``blocks``: ``(statement, params)`` of ``sql.EVENTS_OF_*_BLOCK`` without their first parameter
    (``n``): the ``created`` events of a block of consecutive new ids (``send_many``), copied from
    the rows just written in SQL."""
    total = len(flat) // 4
    pos = 0
    while total:
        for size in sql.CHUNKS:
            if size <= total:
                break
        end = pos + 4 * size
        params = flat[pos:end] if (pos or end != len(flat)) else flat[:]
        params.append(next(_STATEMENTS) << 12)
        conn.execute(sql.event_rows(size), params)
        pos = end
        total -= size
    if blocks:
        for statement, args in blocks:
            conn.execute(statement, (next(_STATEMENTS) << 12, *args))


def runs(ids: list[bytes], at: int, kind: str, text: str, flat: list[Any],
         blocks: list[tuple[str, tuple[Any, ...]]]) -> None:
    """The events of many distinct 16-byte ``ids`` (one kind, time and detail): as runs (one row of
    ``event_runs`` each, added to ``blocks`` for :func:`record`) when there are enough of them, else
    as rows per id (added to ``flat``). Ids more than ``RUN_SPAN`` apart in id time go to separate runs."""
    if sql.ids_blob(ids, distinct=True) is None:  # too few, not 16 bytes each, or repeated
        for idb in ids:
            flat += (idb, at, kind, text)
        return
    lo, hi = min(ids), max(ids)
    if _span(lo, hi) <= RUN_SPAN:  # the usual batch: consecutive ids made moments apart
        blocks.append((sql.EVENT_RUN_INSERT, (at, kind, text, lo, hi, len(ids), b"".join(ids))))
        return
    ordered = sorted(ids)
    start = 0
    for i in range(1, len(ordered) + 1):
        if i == len(ordered) or _span(ordered[start], ordered[i]) > RUN_SPAN:
            piece = ordered[start:i]
            if len(piece) >= sql.IDS_MIN:
                blocks.append((sql.EVENT_RUN_INSERT, (at, kind, text, piece[0], piece[-1], len(piece),
                                                       b"".join(piece))))
            else:
                for idb in piece:
                    flat += (idb, at, kind, text)
            start = i


def _span(lo: bytes, hi: bytes) -> int:
    """Milliseconds of id time between two ids (their first 6 bytes, big-endian)."""
    return int.from_bytes(hi[:6], "big") - int.from_bytes(lo[:6], "big")


def _holds(blob: bytes, idb: bytes) -> bool:
    """Whether ``idb`` is one of the 16-byte ids concatenated in ``blob``."""
    i = blob.find(idb)
    while i >= 0:
        if i % 16 == 0:
            return True
        i = blob.find(idb, i + 1)
    return False


_ARRIVALS: Final = frozenset({"created", "received"})


def _order(row: tuple[Any, ...]) -> tuple[int, bool, int]:
    """The timeline order of an event row ``(at, n, kind, ...)``, as ``sql.EVENTS_OF`` sorts: by time;
    within a millisecond the message's arrival on this node first, then by ``n``. ``n`` comes from a
    per-process counter, so it orders the events one process wrote, not those of two: a relay process
    may lease, in the millisecond the receiver logged it, a message the node had just received."""
    return (row[0], row[2] not in _ARRIVALS, row[1])


def statement_base() -> int:
    """The ``n`` of the first row of a statement that writes events (row ``i`` gets this plus ``i``): for
    the one statement besides :func:`record` that writes them, ``sql.insert_traced`` (plain sends and
    their ``created`` events together, see ``GroupCommit._write_plain``)."""
    return next(_STATEMENTS) << 12


class TraceSetting:
    """Whether one spool object writes events (``on``): the spool's stored setting, or the caller's own.

    The stored setting is read at open, then again by :meth:`refresh` (called at the entrance of a
    send and a lease) at most once every ``REFRESH`` seconds: a switch by ``spoolq trace --enable``
    or by a node starting reaches the processes that have the spool open already, within about that
    long, and no call pays a read for it. The re-read never waits (it is skipped while the read
    connection is in use), so it may run on an event loop. An explicit setting is never re-read.
    """

    REFRESH: Final = 1.0
    __slots__ = ("_db", "_due", "fixed", "on")

    def __init__(self, db: Database | None, explicit: bool | None) -> None:
        self._db = db
        self.fixed = explicit is not None or db is None or db.read_only  # a read-only spool cannot log anything
        self.on = bool(explicit) and db is not None and not db.read_only
        self._due = 0.0
        if not self.fixed:
            self.on = self.stored()
            self._due = time.monotonic() + self.REFRESH

    def refresh(self) -> None:
        """Re-read the stored setting if ``REFRESH`` seconds have passed (not for an explicit one)."""
        if self.fixed or time.monotonic() < self._due:
            return
        self._due = time.monotonic() + self.REFRESH
        assert self._db is not None  # not fixed
        try:
            ok, row = self._db.read_nowait(lambda c: c.execute(sql.TRACE_GET).fetchone())
        except SpoolqError:  # a closed spool: its next call says so
            return
        if ok:
            self.on = row is not None and bool(row[0])

    def stored(self) -> bool:
        """The setting stored in the spool (off in a spool that never had one)."""
        assert self._db is not None
        row = self._db.read(lambda c: c.execute(sql.TRACE_GET).fetchone())
        return row is not None and bool(row[0])

    def store(self, on: bool) -> None:
        """Store the setting for every process using the spool (made durable now, whatever the durability:
        it is rare, and an operator who switched it expects it to stay)."""
        assert self._db is not None
        self._db.txn(self._db.move, lambda c: c.execute(sql.TRACE_SET, (int(bool(on)),)))
        self._db.sync()
        if not self.fixed:
            self.on = bool(on)
            self._due = time.monotonic() + self.REFRESH


class EventLog:
    """Reading and bounding one spool's event log."""

    def __init__(self, db: Database, clock: Callable[[], float], setting: TraceSetting) -> None:
        self.db = db
        self.clock = clock
        self.setting = setting

    def of(self, idb: bytes, limit: int = MAX_EVENTS) -> list[dict[str, Any]]:
        """The events of one message id, oldest first: ``{"at": Unix seconds, "kind", "detail"}``."""
        try:
            rows = self.db.read(lambda c: c.execute(sql.EVENTS_OF, (idb, limit)).fetchall())
        except SpoolqError as e:  # a v1 spool opened read-only has no events table: nothing logged
            if "no such table" in str(e):
                return []
            raise
        if len(idb) == 16:
            low = max(0, int.from_bytes(idb[:6], "big") - RUN_SPAN).to_bytes(6, "big") + bytes(10)
            try:
                found = self.db.read(lambda c: c.execute(sql.EVENT_RUNS_OF, (low, idb, idb)).fetchall())
            except SpoolqError as e:  # a v2 spool opened read-only has no runs
                if "no such table" not in str(e):
                    raise
                found = []
            hits = [(at, n, kind, text) for at, n, kind, text, blob in found if _holds(blob, idb)]
            if hits:
                rows = sorted([*rows, *hits], key=_order)[:limit]
        out = []
        for at, _n, kind, text in rows:
            try:
                d = json.loads(text) if text else {}
            except ValueError:
                d = {"text": text}
            out.append({"at": at / 1000.0, "kind": str(kind), "detail": d if isinstance(d, dict) else {"value": d}})
        return out

    def forward_failed(self, peer: str, ids: list[bytes], target: tuple[str, str], error: str) -> None:
        """Log a failed attempt to forward ``ids`` to ``target`` (name, URL); they stay in the outbox.
        Its own small transaction: nothing else changes (see the module docstring)."""
        if not self.setting.on or not ids:
            return
        d = detail(peer=peer, target=target[0], url=target[1], error=error[:500])
        now = int(self.clock() * 1000)
        flat: list[Any] = []
        for idb in ids:
            flat += (idb, now, "forward_failed", d)
        self.db.txn(self.db.move, lambda c: record(c, flat))

    def prune(self, max_age: float | None, max_rows: int | None) -> int:
        """Delete events older than ``max_age`` seconds and those of the oldest ids beyond
        ``max_rows``; returns how many. About ``PRUNE_CHUNK`` rows per transaction."""
        total = 0
        if max_age is not None:
            cutoff = int(self.clock() * 1000) - int(max_age * 1000)
            if cutoff > 0:
                total += self._prune_age(cutoff)
        if max_rows is not None:
            total += self._prune_rows(max_rows)
        return total

    def _prune_age(self, cutoff: int) -> int:
        top = (cutoff << 80).to_bytes(16, "big")  # ids made before the cutoff sort below this
        low = b""
        total = 0
        while low < top:
            row = self._one(sql.EVENTS_BOUNDARY, (low, top, PRUNE_CHUNK))
            high = top if row is None else bytes(row[0])
            total += self._delete(sql.EVENTS_DELETE_OLD, (low, high, cutoff))
            low = high
        if self.db.version >= 3:  # runs whose ids are all older, logged before the cutoff too (counted by ids)
            args = (top, cutoff, RUN_CHUNK)
            while counts := self.db.txn(self.db.move,
                                        lambda c: c.execute(sql.EVENT_RUNS_DELETE_OLD, args).fetchall()):
                total += sum(int(r[0]) for r in counts)
        return total

    def _prune_rows(self, max_rows: int) -> int:
        """Drop the events of the oldest ids, per id or as whole runs (a run counts as its ids),
        until at most ``max_rows`` are left."""
        total = 0
        row = self._one(sql.EVENTS_COUNT, ())
        excess = (int(row[0]) if row is not None else 0) - max_rows
        runs = self.db.version >= 3
        if runs:
            row = self._one(sql.EVENT_RUNS_COUNT, ())
            excess += int(row[0]) if row is not None else 0
        while excess > 0:
            row = self._one(sql.EVENTS_NTH, (min(excess, PRUNE_CHUNK),))
            oldest = self._one(sql.EVENT_RUNS_OLDEST, ()) if runs else None
            if oldest is not None and (row is None or bytes(oldest[1]) < bytes(row[0])):
                if not self._delete(sql.EVENT_RUN_DELETE, (oldest[0],)):
                    break
                n = int(oldest[2])
            elif row is not None:
                n = self._delete(sql.EVENTS_DELETE_BELOW, (bytes(row[0]),))
            else:  # fewer per-id rows than the excess, and no run
                n = self._delete(sql.EVENTS_DELETE_ALL, ())
            if not n:
                break
            total += n
            excess -= n
        return total

    def _one(self, statement: str, args: tuple[Any, ...]) -> Any:
        return self.db.read(lambda c: c.execute(statement, args).fetchone())

    def _delete(self, statement: str, args: tuple[Any, ...]) -> int:
        return int(self.db.txn(self.db.move, lambda c: c.execute(statement, args).rowcount))
