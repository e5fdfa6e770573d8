"""Small integers for names, and job numbers.

Channels, peers and origin nodes are stored as small integers so rows stay
narrow; :class:`Names` keeps both directions cached (names are never renamed
or reused, so a cache entry never goes stale). A name is created in its own
short transaction, only once everything else about a request was validated.

Every message has a ``job``: a small integer, unique within the node and never
reused (the beanstalkd front-end shows it as the job id). Each process reserves
numbers in blocks from ``meta`` inside the write transaction that uses them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from ..message import check_channel
from ..routing import check_peer
from . import sql
from .db import Database

__all__ = ["Names", "JobNumbers"]


class Names:
    """Name <-> id maps of one spool object."""

    def __init__(self, db: Database, node_id: str, default_max_attempts: int) -> None:
        self.db = db
        self.node_id = node_id
        self.default_max_attempts = default_max_attempts
        self.channels: dict[str, int] = {}
        self._channel_names: dict[int, str] = {}
        self.peers: dict[str, int] = {}
        self._peer_names: dict[int, str] = {}
        self._nodes: dict[int, str] = {}
        self._node_ids: dict[str, int] = {}
        self._max_attempts: dict[int, int | None] = {}
        self._max_attempts_at = 0.0

    def _insert(self, insert: str, select: str, name: str) -> int:
        def run(c: sqlite3.Connection) -> int:
            c.execute(insert, (name,))
            return int(c.execute(select, (name,)).fetchone()[0])

        return self.db.txn(self.db.move, run)

    def channel(self, name: str, *, create: bool) -> int | None:
        """The id of channel ``name`` (validated); ``None`` if it does not exist and ``create`` is false."""
        ch = self.channels.get(name)
        if ch is not None:
            return ch
        check_channel(name)
        row = self.db.read(lambda c: c.execute(sql.CHANNEL_ID, (name,)).fetchone())
        if row is None:
            if not create:
                return None
            ch = self._insert(sql.CHANNEL_INSERT, sql.CHANNEL_ID, name)
        else:
            ch = int(row[0])
        self.channels[name] = ch
        self._channel_names[ch] = name
        return ch

    def create_channel(self, name: str) -> int:
        ch = self.channel(name, create=True)
        assert ch is not None
        return ch

    def knows_channel_ref(self, ch: int) -> bool:
        """Whether :meth:`channel_name` answers without reading the database."""
        return ch in self._channel_names

    def knows_origin_ref(self, ref: int | None) -> bool:
        """Whether :meth:`origin_name` answers without reading the database."""
        return ref is None or ref in self._nodes

    def channel_name(self, ch: int) -> str:
        name = self._channel_names.get(ch)
        if name is None:
            self.load()
            name = self._channel_names.get(ch, f"#{ch}")
        return name

    def peer(self, name: str, *, create: bool = True) -> int | None:
        p = self.peers.get(name)
        if p is not None:
            return p
        if create:
            check_peer(name)
            p = self._insert(sql.PEER_INSERT, sql.PEER_ID, name)
        else:
            row = self.db.read(lambda c: c.execute(sql.PEER_ID, (name,)).fetchone())
            if row is None:
                return None
            p = int(row[0])
        self.peers[name] = p
        self._peer_names[p] = name
        return p

    def peer_name(self, p: int) -> str:
        name = self._peer_names.get(p)
        if name is None:
            self.load()
            name = self._peer_names.get(p, f"#{p}")
        return name

    def node_ref(self, node_id: str | None) -> int | None:
        """Small integer for an origin node id (None for this node)."""
        if node_id is None or node_id == self.node_id:
            return None
        n = self._node_ids.get(node_id)
        if n is not None:
            return n
        n = self._insert(sql.NODE_INSERT, sql.NODE_REF, node_id)
        self._node_ids[node_id] = n
        self._nodes[n] = node_id
        return n

    def knows_origins(self, node_ids: Iterable[str]) -> bool:
        """Whether every one of ``node_ids`` has its number cached (or is this node)."""
        known = self._node_ids
        return all(n == self.node_id or n in known for n in node_ids)

    def origin_name(self, ref: int | None) -> str:
        if ref is None:
            return self.node_id
        name = self._nodes.get(ref)
        if name is None:
            self.load()
            name = self._nodes.get(ref, f"#{ref}")
        return name

    def load(self) -> None:
        def load(c: sqlite3.Connection) -> tuple[list[Any], list[Any], list[Any]]:
            return (c.execute(sql.ALL_CHANNELS).fetchall(), c.execute(sql.ALL_PEERS).fetchall(),
                    c.execute(sql.ALL_NODES).fetchall())

        chans, peers, nodes = self.db.read(load)
        for i, n in chans:
            self.channels[n] = i
            self._channel_names[i] = n
        for i, n in peers:
            self.peers[n] = i
            self._peer_names[i] = n
        for i, n in nodes:
            self._node_ids[n] = i
            self._nodes[i] = n

    def max_attempts(self, ch: int) -> int:
        """Deliveries before a message of channel ``ch`` is dead-lettered (re-read at most once a second)."""
        now = time.monotonic()
        if now - self._max_attempts_at > 1.0:
            rows = self.db.read(lambda c: c.execute(sql.CHANNEL_MAX_ATTEMPTS).fetchall())
            self._max_attempts = {i: m for i, m in rows}
            self._max_attempts_at = now
        m = self._max_attempts.get(ch)
        return m if m is not None else self.default_max_attempts

    def set_max_attempts(self, name: str, max_attempts: int | None) -> None:
        ch = self.create_channel(name)
        self.db.txn(self.db.move, lambda c: c.execute(sql.SET_MAX_ATTEMPTS, (max_attempts, ch)))
        self._max_attempts_at = 0.0


class JobNumbers:
    """Job numbers reserved in blocks (inside the write transaction that uses them)."""

    def __init__(self) -> None:
        self.next = 0
        self.end = 0
        self.last = -1  # the highest number shown (committed) so far, as far as this object knows
        self.owned = False
        self._block = 16
        self._max_block = 4096

    def own(self, last: int) -> None:
        """The caller owns the spool (see ``sql.OWNED_BLOCK``): each block it reserves is noted, so that
        the next owner can take back the numbers never shown. ``last``: the highest number that may
        have been shown before."""
        self.owned = True
        self.last = max(self.last, last)

    def shown(self, job: int) -> None:
        """``job`` was committed and is about to be shown (a beanstalkd put). Numbers given out
        otherwise are not noted: ``last`` may only lag behind, which makes the triggers note more
        deletes than needed, never fewer."""
        if job > self.last:
            self.last = job

    def last_job(self) -> int:
        """The highest number noted as shown (for ``sql.JOB_HW_TRIGGERS``)."""
        return self.last

    def forget(self) -> None:
        """A transaction that reserved a block was rolled back: the block is gone with it."""
        self.next = self.end = 0

    def take_reserved(self, n: int) -> int | None:
        """``n`` numbers from the block already reserved, or None when it has fewer left."""
        first = self.next
        if self.end - first < n:
            return None
        self.next = first + n
        return first

    def alloc(self, conn: sqlite3.Connection, n: int) -> int:
        """Reserve ``n`` job numbers inside the caller's write transaction; returns the first."""
        first = self.take_reserved(n)
        if first is not None:
            return first
        size = max(n, self._block)
        self._block = min(self._block * 2, self._max_block)
        end = int(conn.execute(sql.NEXT_JOB_BLOCK, (size,)).fetchone()[0])
        first = end - size
        if self.owned:
            conn.execute(sql.OWNED_BLOCK, (first, end))
        self.next = first + n
        self.end = end
        return first
