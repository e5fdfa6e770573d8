"""The outbox (messages waiting for peers) and receiving (messages from peers).

``outbox`` is keyed ``(peer, priority, id)``. The daemon is the only forwarder
of a spool (it holds a lock) and reads batches with a cursor, so reading a
batch writes nothing; the peer's answer is settled in one transaction.

Received messages are recorded in ``seen`` and inserted in one durable commit
through the group commit; what comes back is the set of ids that were
duplicates. A small batch that arrives while nothing else is being committed
is written on the event loop, and only its sync goes to a thread (issue 15).
Neither side knows the wire format: records in, records out.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import sqlite3
from collections.abc import Collection, Sequence
from typing import Any, NamedTuple, Protocol

from .. import _bell
from ..message import decode_headers, encode_headers
from . import sql
from .commit import GroupCommit, WriteRequest
from .db import Database
from .events import TraceSetting, record
from .events import detail as event_detail
from .events import runs as event_runs
from .names import Names

__all__ = ["OutboxRecord", "Incoming", "Outbox"]

# a received batch up to this size may be written on the event loop (GroupCommit.wait_now): well under a
# millisecond of the loop; larger ones (a backlog) go to the writer thread, where concurrent batches share
RECEIVE_NOW_MESSAGES = 64
RECEIVE_NOW_BYTES = 256 << 10


class OutboxRecord(NamedTuple):
    """A message waiting in the outbox, as a peer needs it. The fields are in the order of a message
    of the peer wire format (``codec.WireMessage``; tests/test_forwarder.py checks), so a batch of
    records is encoded as it is read, without an object per message (issue 15)."""

    id: bytes
    channel: str
    body: bytes
    priority: int
    headers: dict[str, str] | None
    deliver_at: int | None  # Unix ms
    expires: int | None  # Unix ms
    origin: str | None  # node id of the node that created it; None: this node

    @property
    def key(self) -> tuple[int, bytes]:
        """Its key in the outbox: (priority, id)."""
        return (self.priority, self.id)


# builds records from rows without the Python-level __new__ a NamedTuple has (thousands per batch)
_records = functools.partial(tuple.__new__, OutboxRecord)
_BODY, _HEADERS, _KEY_PRIORITY, _KEY_ID = (operator.itemgetter(i) for i in (2, 4, 0, 1))


class Incoming(Protocol):
    """A message received from a peer (already validated by the receiver)."""

    @property
    def id(self) -> bytes: ...
    @property
    def channel(self) -> str: ...
    @property
    def body(self) -> bytes: ...
    @property
    def priority(self) -> int: ...
    @property
    def headers(self) -> dict[str, str] | None: ...
    @property
    def deliver_at(self) -> int | None: ...
    @property
    def expires(self) -> int | None: ...
    @property
    def origin(self) -> str | None: ...


def _delete_run(c: sqlite3.Connection, peer: int | None, priority: int, ids: list[bytes]) -> bool:
    """Delete the outbox rows ``ids`` (of one peer and priority) as a key range, if the range holds
    exactly these ids (in the settling transaction: nothing comes or goes in between). A range
    delete costs about half of finding each id; ``False`` (nothing deleted) when the range holds
    others too (messages retried or sent meanwhile), or lacks some."""
    run = sorted(ids)  # already sorted when it is a batch read in key order: one pass
    row = c.execute(sql.OUTBOX_RANGE_HEX, (peer, priority, run[0], run[-1])).fetchone()
    if row is None or row[0] != b"".join(run).hex().upper():
        return False
    c.execute(sql.OUTBOX_DELETE_RANGE, (peer, priority, run[0], run[-1]))
    return True


class Outbox:
    """Outbox batches, settling, and receiving, for one spool object."""

    def __init__(self, db: Database, names: Names, commit: GroupCommit, tracing: TraceSetting | None = None) -> None:
        self.db = db
        self.tracing = tracing or TraceSetting(None, False)
        self.names = names
        self.commit = commit


    @property
    def trace(self) -> bool:
        """Whether to write events (store/events.py): the spool's setting, re-read now and then."""
        return self.tracing.on

    def peers(self) -> list[str]:
        """Peers (names, URLs or failover groups) that have messages waiting in the outbox."""
        return [r[0] for r in self.db.read(lambda c: c.execute(sql.OUTBOX_PEERS).fetchall())]

    def batch(self, peer: str, after: tuple[int, bytes] | None, max_messages: int,
              max_bytes: int, *, nowait: bool = False) -> list[OutboxRecord] | None:
        """The next messages waiting for ``peer``, in priority then id order, after the key ``after``.

        ``nowait``: return ``None`` instead of waiting for anything (a lock, a name to look up).
        """
        if nowait:
            p = self.names.peers.get(peer)
            if p is None:
                return None
        else:
            p = self.names.peer(peer, create=False)
        if p is None:
            return []
        args: tuple[object, ...]
        if after is None:
            statement, args = sql.OUTBOX_FIRST, (p, max_messages)
        else:
            statement, args = sql.OUTBOX_AFTER, (p, after[0], after[1], max_messages)
        rows: list[Any]
        if nowait:
            done, got = self.db.read_nowait(lambda c: c.execute(statement, args).fetchall(), one_statement=True)
            if not done or got is None:
                return None
            rows = got
        else:
            rows = self.db.read(lambda c: c.execute(statement, args).fetchall())
        # per column, not per row: thousands of rows, and headers are rare
        headers = list(map(_HEADERS, rows))
        plain = headers.count(None) == len(headers)
        size = sum(map(len, map(_BODY, rows))) + 64 * len(rows)
        if not plain:
            size += sum(len(h) for h in headers if h)
        if size > max_bytes:  # the byte limit: cut where the running size passes it (at least one message)
            size = 0
            for i, r in enumerate(rows):
                size += len(r[2]) + (len(r[4]) if r[4] else 0) + 64
                if i and size > max_bytes:
                    rows = rows[:i]
                    break
        records: list[OutboxRecord] = list(map(_records, rows))
        if not plain:
            for i, r in enumerate(records):
                if r.headers is not None:  # stored as bytes, sent as a map
                    records[i] = r._replace(headers=decode_headers(rows[i][4]) or None)
        return records

    def settle(self, peer: str, now: int, done: Sequence[tuple[int, bytes]],
               dead: Sequence[tuple[tuple[int, bytes], str, str]], retry: Sequence[tuple[int, bytes]],
               target: tuple[str, str] | None = None, duplicates: Collection[bytes] = (), *,
               nowait: bool = False) -> bool:
        """Apply a peer's answer in one transaction (see ``Spool.outbox_settle``). ``nowait``: only if
        that needs no wait (for an event loop, see ``Database.txn_nowait``); ``False``: nothing done."""
        p = self.names.peers.get(peer) if nowait else self.names.peer(peer)
        if p is None:  # nowait: a name to look up
            return False
        blocks: list[tuple[str, tuple[Any, ...]]] = []
        ev = self._events(peer, now, done, dead, retry, target, duplicates, blocks) if self.trace else []
        by_priority: dict[int, list[bytes]] = {}
        priorities = set(map(_KEY_PRIORITY, done))
        if len(priorities) == 1:  # the usual batch: one priority, no loop per message
            by_priority[priorities.pop()] = list(map(_KEY_ID, done))
        else:
            for pri, idb in done:
                ids = by_priority.get(pri)
                if ids is None:
                    ids = by_priority[pri] = []
                ids.append(idb)

        def settle(c: sqlite3.Connection) -> None:
            for pri, ids in by_priority.items():
                blob = sql.ids_blob(ids)
                if blob is not None and _delete_run(c, p, pri, ids):
                    continue
                if blob is not None:  # a batch's ids as one blob: one statement, no parameter per id
                    c.execute(sql.OUTBOX_DELETE_IDS, (blob, p, pri))
                    continue
                for i in range(0, len(ids), 500):  # IN lists: faster than one statement per key
                    chunk = ids[i:i + 500]
                    c.execute(sql.outbox_delete_in(len(chunk)), (p, pri, *chunk))
            for (pri, idb), reason, detail in dead:
                c.execute(sql.OUTBOX_TO_DEAD, (reason, detail, now, p, pri, idb))
                c.execute(sql.OUTBOX_DELETE, (p, pri, idb))
            if retry:
                c.executemany(sql.OUTBOX_TRY, [(p, pri, idb) for pri, idb in retry])
            record(c, ev, blocks)

        if nowait:
            return self.db.txn_nowait(self.db.move, settle)[0]
        self.db.txn(self.db.move, settle)
        return True

    @staticmethod
    def _events(peer: str, now: int, done: Sequence[tuple[int, bytes]],
                dead: Sequence[tuple[tuple[int, bytes], str, str]], retry: Sequence[tuple[int, bytes]],
                target: tuple[str, str] | None, duplicates: Collection[bytes],
                blocks: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """The events of a settled batch (flat, see ``events.record``; the ``forwarded`` events of
        many ids as ``blocks``, one statement each)."""
        name, url = target if target is not None else (peer, None)
        ev: list[Any] = []
        if done:
            accepted = event_detail(peer=peer, target=name, url=url, result="accepted")
            ids = list(map(_KEY_ID, done))
            groups = [(ids, accepted)]
            if duplicates:
                dup = event_detail(peer=peer, target=name, url=url, result="duplicate")
                groups = [([i for i in ids if i not in duplicates], accepted),
                          ([i for i in ids if i in duplicates], dup)]
            for group, d in groups:
                event_runs(group, now, "forwarded", d, ev, blocks)  # one row per run of ids
        for (_pri, idb), reason, text in dead:
            ev += (idb, now, "dead", event_detail(reason=reason, detail=text, peer=peer))
        if retry:
            d = event_detail(peer=peer, target=name, url=url, error="the peer asked to retry it later")
            for _pri, idb in retry:
                ev += (idb, now, "forward_failed", d)
        return ev

    # -- receiving ----------------------------------------------------------------------------

    def receive_request(self, messages: Sequence[Incoming], sender: str, now: int) -> WriteRequest:
        """The write of a received batch: dedup by id, ready or delayed by ``deliver_at``."""
        w = WriteRequest()
        w.dedup = True
        w.probe = False
        w.sender = sender
        chans: dict[str, int] = {}
        origins: dict[str, int | None] = {}
        plain = all(m.headers is None and m.expires is None and (m.deliver_at is None or m.deliver_at <= now)
                    for m in messages)
        w.layout = "received" if plain else "full"
        rows = w.inbox
        for m in messages:
            ch = chans.get(m.channel)
            if ch is None:
                ch = chans[m.channel] = self.names.create_channel(m.channel)
            who = m.origin or sender
            if who in origins:
                origin = origins[who]
            else:
                origin = origins[who] = self.names.node_ref(who)
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

    async def receive(self, messages: Sequence[Incoming], sender: str, now: int) -> set[bytes]:
        """Store received messages in one durable commit; returns the ids that were duplicates."""
        if not messages:
            return set()
        known = self.names.channels
        if all(m.channel in known for m in messages) and self.names.knows_origins(m.origin or sender for m in messages):
            w = self.receive_request(messages, sender, now)
            if len(messages) <= RECEIVE_NOW_MESSAGES and sum(len(m.body) for m in messages) <= RECEIVE_NOW_BYTES:
                await self.commit.wait_now(w)  # a small batch may be written on the loop (issue 15, latency)
                return w.dups
        else:  # names to create: no SQLite write or lock wait on the event loop
            w = await asyncio.to_thread(self.receive_request, messages, sender, now)
        await self.commit.wait([w])
        return w.dups


