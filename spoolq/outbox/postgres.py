"""Transactional outbox on the application's own PostgreSQL database (psycopg 3).

``PostgresOutbox.send(cur, ...)`` inserts into ``spoolq_outbox`` with the caller's
cursor, inside the caller's transaction, and issues ``NOTIFY spoolq_outbox`` in the
same statement: PostgreSQL delivers the notification at commit, and drops it (with
the row) on rollback. The relay LISTENs on its own connection and otherwise polls.

The relay claims rows with ``SELECT ... FOR UPDATE SKIP LOCKED`` so that several
relays share the work; it keeps that transaction open while the spool stores the
rows, then deletes them and commits.

psycopg is imported here only: install ``spoolq[postgres]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from ..spool import Spool
from ._rows import NOTIFY_CHANNEL, TABLE, Row, check_send, now_ms
from .relay import Relay

DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    seq        bigserial PRIMARY KEY,
    id         text NOT NULL,
    channel    text NOT NULL,
    body       bytea NOT NULL,
    options    text NOT NULL,
    created_ms bigint NOT NULL
)"""

_INSERT = (
    f"WITH row AS (INSERT INTO {TABLE} (id, channel, body, options, created_ms) VALUES (%s, %s, %s, %s, %s))"
    f" SELECT pg_notify('{NOTIFY_CHANNEL}', '')"
)
_CLAIM = f"SELECT seq, id, channel, body, options, created_ms FROM {TABLE} ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED"
_DELETE = f"DELETE FROM {TABLE} WHERE seq = ANY(%s)"


def _conninfo(conn_or_pool: Any) -> str:
    conninfo = getattr(conn_or_pool, "conninfo", None)  # psycopg_pool.ConnectionPool
    if isinstance(conninfo, str):
        return conninfo
    if isinstance(conn_or_pool, str):
        return conn_or_pool
    info = getattr(conn_or_pool, "info", None)
    if info is not None:
        dsn: str = info.dsn
        pw = getattr(info, "password", None)
        return f"{dsn} password={pw}" if pw and "password=" not in dsn else dsn
    raise TypeError("PostgresOutbox needs a psycopg Connection, a psycopg_pool pool or a conninfo string")


class PostgresOutbox:
    """A transactional outbox in the application's PostgreSQL database.

    Args:
        conn_or_pool: a psycopg 3 ``Connection``, a ``psycopg_pool.ConnectionPool`` or a
            conninfo string; the relay opens its own connections with the same conninfo.
        spool: the spool (or its directory) the relay hands messages to; its
            ``max_message_size`` also bounds ``send``.
        create: create the ``spoolq_outbox`` table if it is missing.
    """

    def __init__(self, conn_or_pool: Any, *, spool: Spool | str | Path | None = None, create: bool = True) -> None:
        self.conninfo = _conninfo(conn_or_pool)
        self._spool = spool
        self.max_message_size = spool.max_message_size if isinstance(spool, Spool) else 1 << 20
        if create:
            with psycopg.connect(self.conninfo, autocommit=True) as c:
                c.execute(DDL)

    def send(self, cur: Any, body: bytes, channel: str, **options: Any) -> str:
        """Add a message to the caller's transaction; it is sent if and only if that transaction commits.

        Args:
            cur: a psycopg cursor or connection inside the caller's transaction.
            body, channel, options: as :meth:`spoolq.Spool.send` (``to``, ``priority``,
                ``delay``, ``ttl``, ``headers``, ``id``), validated the same way.

        Returns:
            The message id, at once (the same id arrives in the spool).

        Raises:
            InvalidArgument: bad input; nothing is inserted.
        """
        mid, raw, name, opts = check_send(body, channel, max_message_size=self.max_message_size, **options)
        cur.execute(_INSERT, (mid, name, raw, opts, now_ms()))
        return mid

    async def asend(self, cur: Any, body: bytes, channel: str, **options: Any) -> str:
        """:meth:`send` with a psycopg ``AsyncCursor`` or ``AsyncConnection``."""
        mid, raw, name, opts = check_send(body, channel, max_message_size=self.max_message_size, **options)
        await cur.execute(_INSERT, (mid, name, raw, opts, now_ms()))
        return mid

    def pending(self) -> int:
        """How many committed rows wait for the relay."""
        with psycopg.connect(self.conninfo, autocommit=True) as c:
            row = c.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
            return int(row[0]) if row else 0

    def relay(
        self,
        spool: Spool | None = None,
        *,
        to: str | Sequence[str] | None = None,
        batch: int = 500,
        poll_interval: float = 1.0,
        listen: bool = True,
    ) -> Relay:
        """A relay loop for this outbox (``step()`` / ``run()`` / ``stop()``, then ``close()``).

        Args:
            spool: defaults to the one given to the constructor.
            to: forward to this peer instead of the local inbox (rows with their own ``to=`` keep it).
            listen: wake on ``NOTIFY`` (otherwise poll every ``poll_interval`` seconds).
        """
        target = spool if spool is not None else self._spool
        if target is None:
            raise TypeError("relay() needs a spool: PostgresOutbox(..., spool=...) or relay(spool)")
        if not isinstance(target, Spool):
            target = Spool(target)
        return Relay(_PgBackend(self.conninfo, listen), target, to=to, batch=batch, poll_interval=poll_interval)


class _PgBackend:
    def __init__(self, conninfo: str, listen: bool) -> None:
        self.conninfo = conninfo
        self.listen = listen
        self._conn: psycopg.Connection[Any] | None = None
        self._lconn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.conninfo, connect_timeout=5)
        return self._conn

    def claim(self, batch: int) -> tuple[list[Row], object]:
        conn = self._connection()
        try:
            rows = conn.execute(_CLAIM, (batch,)).fetchall()
        except BaseException:
            self._drop()
            raise
        return [Row(r[0], r[1], r[2], bytes(r[3]), _options(r[4]), r[5]) for r in rows], conn

    def settle(self, token: object, rows: Sequence[Row]) -> None:
        conn = self._connection()
        try:
            conn.execute(_DELETE, ([r.seq for r in rows],))
            conn.commit()
        except BaseException:
            self._drop()
            raise

    def abandon(self, token: object) -> None:
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.rollback()
            except psycopg.Error:
                self._drop()

    def wait(self, timeout: float) -> bool:
        if not self.listen:
            return False
        if self._lconn is None or self._lconn.closed or self._lconn.broken:
            self._lconn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
            self._lconn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            return True  # a notification may have been missed while not listening: look once
        try:
            woke = False
            for _ in self._lconn.notifies(timeout=timeout, stop_after=1):
                woke = True
            if woke:
                for _ in self._lconn.notifies(timeout=0):  # drain the rest of a burst
                    pass
            return woke
        except psycopg.Error:
            self._lconn.close()
            self._lconn = None
            raise

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._drop()
        if self._lconn is not None:
            self._lconn.close()
            self._lconn = None


def _options(text: str) -> dict[str, Any]:
    import json

    value = json.loads(text)
    return value if isinstance(value, dict) else {}
