"""The per-message event log behind ``spoolq trace``.

Theory of operation
===================

``events`` holds one row per thing that happened to a message on this node:
``(seq, id, at, kind, detail)``, ``at`` in Unix ms, ``detail`` a small JSON
object as text. Rows are written by :func:`record`, always on the connection
and inside the transaction of the state change they describe (a send's
group commit, a lease, an ack, a settled batch): the log costs no extra
transaction and no extra sync, and a rolled-back change leaves no event.
The one exception is a forward attempt that failed before the peer answered:
nothing else changes then, so its events are a small transaction of their own.

The hot paths hand over *flat* parameter lists (``id, at, kind, detail`` per
row) so that no object is built per event; details are JSON strings built once
per request or lease round (see ``detail``) and reused for every row.

The log is bounded by the node, off its event loop (:meth:`EventLog.prune`):
by age (``trace_retention``) and by rows (``trace_max_rows``), in chunks of
``PRUNE_CHUNK`` rows per transaction so a large prune never holds the write
lock for long. ``seq`` grows with time, so both bounds are one range delete.

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
import json
import sqlite3
from collections.abc import Callable
from typing import Any, Final

from ..errors import SpoolqError
from . import sql
from .db import Database

__all__ = ["ACTOR", "EventLog", "record", "detail"]

# Who is acting, for the ``created`` event: set by a front-end for the requests it serves
# (the HTTP API: the token's name and the client's address). A library call is "library".
ACTOR: contextvars.ContextVar[tuple[str, str | None]] = contextvars.ContextVar(
    "spoolq_actor", default=("library", None))

PRUNE_CHUNK: Final = 5000
MAX_EVENTS: Final = 10_000  # per id, read at most
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

    ``blocks``: ``(statement, params)`` of ``sql.EVENTS_OF_*_BLOCK``: the ``created`` events of a
    block of consecutive new ids (``send_many``), copied from the rows just written in SQL."""
    if flat:
        sql.insert_many(conn, "events", sql.EVENT_COLS, 4, flat)
    if blocks:
        for statement, params in blocks:
            conn.execute(statement, params)


class EventLog:
    """Reading and bounding one spool's event log."""

    def __init__(self, db: Database, clock: Callable[[], float], enabled: bool) -> None:
        self.db = db
        self.clock = clock
        self.enabled = enabled

    def of(self, idb: bytes, limit: int = MAX_EVENTS) -> list[dict[str, Any]]:
        """The events of one message id, oldest first: ``{"at": Unix seconds, "kind", "detail"}``."""
        try:
            rows = self.db.read(lambda c: c.execute(sql.EVENTS_OF, (idb, limit)).fetchall())
        except SpoolqError as e:  # a v1 spool opened read-only has no events table: nothing logged
            if "no such table" in str(e):
                return []
            raise
        out = []
        for at, kind, text in rows:
            try:
                d = json.loads(text) if text else {}
            except ValueError:
                d = {"text": text}
            out.append({"at": at / 1000.0, "kind": str(kind), "detail": d if isinstance(d, dict) else {"value": d}})
        return out

    def forward_failed(self, peer: str, ids: list[bytes], target: tuple[str, str], error: str) -> None:
        """Log a failed attempt to forward ``ids`` to ``target`` (name, URL); they stay in the outbox.
        Its own small transaction: nothing else changes (see the module docstring)."""
        if not self.enabled or not ids:
            return
        d = detail(peer=peer, target=target[0], url=target[1], error=error[:500])
        now = int(self.clock() * 1000)
        flat: list[Any] = []
        for idb in ids:
            flat += (idb, now, "forward_failed", d)
        self.db.txn(self.db.move, lambda c: record(c, flat))

    def prune(self, max_age: float | None, max_rows: int | None) -> int:
        """Delete events older than ``max_age`` seconds and the oldest beyond ``max_rows``;
        returns how many. Runs in chunks of ``PRUNE_CHUNK`` rows, one transaction each."""
        bound = self._bound(max_age, max_rows)
        if bound is None:
            return 0
        total = 0
        while True:
            def step(c: sqlite3.Connection) -> int:
                first = c.execute(sql.EVENTS_FIRST).fetchone()[0]
                if first is None or first >= bound:
                    return 0
                return int(c.execute(sql.EVENTS_DELETE_BEFORE, (min(bound, first + PRUNE_CHUNK),)).rowcount)

            n = self.db.txn(self.db.move, step)
            total += n
            if not n:
                return total

    def _bound(self, max_age: float | None, max_rows: int | None) -> int | None:
        """The first ``seq`` to keep."""
        now = int(self.clock() * 1000)

        def look(c: sqlite3.Connection) -> int | None:
            keep: int | None = None
            last = c.execute(sql.EVENTS_LAST).fetchone()[0]
            if last is None:
                return None
            if max_age is not None:
                row = c.execute(sql.EVENTS_FIRST_KEPT, (now - int(max_age * 1000),)).fetchone()
                keep = int(row[0]) if row is not None else int(last) + 1
            if max_rows is not None:
                by_rows = int(last) - max_rows + 1
                keep = by_rows if keep is None else max(keep, by_rows)
            return keep

        return self.db.read(look)
