"""Transactional outbox on the application's own SQLite database (stdlib sqlite3).

This module speaks SQL through ``sqlite3`` although only ``spoolq/store`` may do so
on the *spool*: the database here is the user's, not the spool. ``send`` inserts
into ``spoolq_outbox`` with the caller's cursor, in the caller's transaction; the
relay opens its own connection to the same file and polls (SQLite has no NOTIFY).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..spool import Spool
from ._rows import TABLE, Row, check_send, now_ms
from .relay import Relay

DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL,
    channel    TEXT NOT NULL,
    body       BLOB NOT NULL,
    options    TEXT NOT NULL,
    created_ms INTEGER NOT NULL
)"""

_INSERT = f"INSERT INTO {TABLE} (id, channel, body, options, created_ms) VALUES (?, ?, ?, ?, ?)"


class SQLiteOutbox:
    """A transactional outbox in the application's SQLite database.

    Args:
        database: the database file (or an open ``sqlite3.Connection`` to it).
        spool: the spool (or its directory) the relay hands messages to.
        create: create the ``spoolq_outbox`` table if it is missing.
    """

    def __init__(
        self, database: str | Path | sqlite3.Connection, *, spool: Spool | str | Path | None = None,
        create: bool = True,
    ) -> None:
        if isinstance(database, sqlite3.Connection):
            row = database.execute("PRAGMA database_list").fetchone()
            self.path = Path(row[2])
        else:
            self.path = Path(database)
        self._spool = spool
        self.max_message_size = spool.max_message_size if isinstance(spool, Spool) else 1 << 20
        if create:
            c = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                c.execute(DDL)
            finally:
                c.close()

    def send(self, cur: sqlite3.Cursor | sqlite3.Connection, body: bytes, channel: str, **options: Any) -> str:
        """Add a message to the caller's transaction (see :meth:`PostgresOutbox.send`)."""
        mid, raw, name, opts = check_send(body, channel, max_message_size=self.max_message_size, **options)
        cur.execute(_INSERT, (mid, name, raw, opts, now_ms()))
        return mid

    def pending(self) -> int:
        c = sqlite3.connect(self.path, timeout=30)
        try:
            return int(c.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])
        finally:
            c.close()

    def relay(
        self, spool: Spool | None = None, *, to: str | Sequence[str] | None = None, batch: int = 500,
        poll_interval: float = 0.2,
    ) -> Relay:
        """A relay loop for this outbox (polls every ``poll_interval`` seconds)."""
        target = spool if spool is not None else self._spool
        if target is None:
            raise TypeError("relay() needs a spool: SQLiteOutbox(..., spool=...) or relay(spool)")
        if not isinstance(target, Spool):
            target = Spool(target)
        return Relay(_SQLiteBackend(self.path), target, to=to, batch=batch, poll_interval=poll_interval)


class _SQLiteBackend:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        return self._conn

    def claim(self, batch: int) -> tuple[list[Row], object]:
        rows = self._connection().execute(
            f"SELECT seq, id, channel, body, options, created_ms FROM {TABLE} ORDER BY seq LIMIT ?", (batch,)
        ).fetchall()
        return [Row(r[0], r[1], r[2], bytes(r[3]), json.loads(r[4]), r[5]) for r in rows], None

    def settle(self, token: object, rows: Sequence[Row]) -> None:
        seqs = [r.seq for r in rows]
        marks = ",".join("?" * len(seqs))
        self._connection().execute(f"DELETE FROM {TABLE} WHERE seq IN ({marks})", seqs)

    def abandon(self, token: object) -> None:
        pass

    def wait(self, timeout: float) -> bool:
        return False

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
