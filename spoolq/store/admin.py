"""Queue administration: browse messages without leasing them, hold, release, requeue, delete; the audit.

Theory of operation
===================

``held``    Postfix's hold queue. A held message is *moved* out of ``inbox``,
            ``delayed`` or ``outbox`` into ``held`` (with ``place``: 0 inbox,
            1 delayed, 2 outbox, and every column it needs to go back), so the
            lease and forward paths never see it and pay nothing for it.
            ``release`` puts it back exactly where it was: ready in its channel
            (attempts and job number kept), delayed until its old due time, or
            in its peer's outbox. ``requeue`` puts it back ready now.
``audit``   who did what to how many (newest ``AUDIT_KEEP`` rows are kept).

A **leased** message belongs to its consumer: hold and delete skip it (it
counts as matched, not changed), so the consumer's ack never meets a message
that vanished under it. Hold it again once the lease ends.

A held message keeps its TTL, but the TTL does not fire while it is held:
sweeps look at the inbox, delayed and outbox tables only. Once released, an
expired message is dead-lettered by the next sweep or lease, as usual.

Browsing reads one source table at a time (inbox, delayed, outbox, held), in
that table's key order, with **keyset** paging: the cursor is the key of the
last row read, so a page costs what it reads, whatever the depth. Filters that
the key cannot serve (age, priority range, state, header) are applied to the
rows as they are read, and one call reads at most ``SCAN_BUDGET`` rows: a very
selective filter may return fewer rows than asked (even none) with a cursor to
go on from. Scope: with ``channel`` (and no ``peer``) the channel's inbox,
delayed and held messages; with ``peer`` that peer's outbox and held messages
(``channel`` then narrows them); with neither, everything.

Actions by filter go page by page (one write transaction per page of
``ACT_PAGE`` rows, so a hold of 100k messages never blocks producers for
long); each page re-checks every row by its key inside the transaction.
Actions by id find every copy of each id (one message sent to two peers is
two outbox rows).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from .. import _bell
from ..errors import InvalidArgument, SpoolUnavailable
from ..message import _ms_of, decode_headers, id_text_from_bytes
from . import sql, sql_admin
from .db import Database
from .events import ACTOR, TraceSetting, record
from .events import detail as event_detail
from .names import Names

__all__ = ["Admin", "AdminMessage", "AuditEntry", "Filter", "STATES", "ACTIONS", "SCAN_BUDGET", "AUDIT_KEEP"]

STATES: Final = ("ready", "delayed", "leased", "held")
ACTIONS: Final = ("hold", "release", "requeue", "delete")
Action = Literal["hold", "release", "requeue", "delete"]
SCAN_BUDGET: Final = 20_000  # rows one browse call may read
ACT_PAGE: Final = 500  # rows per write transaction of an action by filter
AUDIT_KEEP: Final = 10_000
PREVIEW_BYTES: Final = 64
MAX_GROUPS: Final = 1024  # (channel, priority) pairs worth skipping through to find an id by its key
ID_CHUNK: Final = 256

INBOX, DELAYED, OUTBOX, HELD = 0, 1, 2, 3
_PLACES = ("inbox", "inbox", "outbox")
# which source tables can hold messages in each state
_SOURCES_OF = {"ready": (INBOX, OUTBOX), "leased": (INBOX, OUTBOX), "delayed": (DELAYED,), "held": (HELD,)}
# the states each action works on when it selects by filter
_SCOPE: dict[str, frozenset[str]] = {
    "hold": frozenset(("ready", "delayed", "leased")),
    "release": frozenset(("held",)),
    "requeue": frozenset(("delayed", "held")),
    "delete": frozenset(STATES),
    "browse": frozenset(STATES),
}
Row = tuple[Any, ...]  # src, channel, peer, priority, k, id, lease_until, attempts, size, headers, due, place
Key = tuple[int, int, int, bytes]  # src, group, k, id
Progress = Callable[[int, int], None]
Scanner = tuple[list[tuple[int, int | None, bool]], Callable[[Row], bool]]


@dataclass(frozen=True, slots=True)
class Filter:
    """Which messages (all optional; validated by ``spoolq.admin.parse_filter``).

    ``older_than`` / ``newer_than`` are seconds of age (since the message was
    created); ``header`` is ``(name, value)``, an exact match."""

    channel: str | None = None
    peer: str | None = None
    state: str | None = None
    older_than: float | None = None
    newer_than: float | None = None
    min_priority: int | None = None
    max_priority: int | None = None
    header: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class AdminMessage:
    """One stored message as the admin view shows it (times in Unix seconds, sizes in bytes).

    ``headers`` and ``body`` are set by ``find`` only."""

    id: str
    place: str  # inbox | outbox
    channel: str
    peer: str | None
    state: str  # ready | delayed | leased | held
    priority: int
    attempts: int
    age: float
    size: int
    due: float | None
    lease_until: float | None
    preview: str
    headers: dict[str, str] | None = None
    body: bytes | None = None
    job: int | None = None
    expires_at: float | None = None
    origin: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of the HTTP admin API (``MSG``), without the body."""
        return {"id": self.id, "place": self.place, "channel": self.channel, "peer": self.peer,
                "state": self.state, "priority": self.priority, "attempts": self.attempts, "age": self.age,
                "size": self.size, "due": self.due, "lease_until": self.lease_until, "preview": self.preview}


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: float
    who: str
    action: str
    target: str
    count: int
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "who": self.who, "action": self.action, "target": self.target,
                "count": self.count, "detail": self.detail}


def _bad_cursor(why: str) -> InvalidArgument:
    return InvalidArgument(f"after: not a cursor this node gave out ({why})",
                           hint="pass the 'next' value of the previous page unchanged, or omit 'after'")


def encode_cursor(key: Key) -> str:
    src, g, k, idb = key
    raw = json.dumps([src, g, k, idb.hex()], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> Key:
    """Parse a cursor from :func:`encode_cursor`; anything else is an ``InvalidArgument`` naming ``after``."""
    if type(text) is not str or not 1 <= len(text) <= 200:
        raise _bad_cursor("a cursor is a short string")
    try:
        value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error):
        raise _bad_cursor("it does not decode") from None
    if (type(value) is not list or len(value) != 4 or value[0] not in (0, 1, 2, 3)
            or any(type(v) is not int or not -1 <= v < 1 << 63 for v in value[:3]) or type(value[3]) is not str):
        raise _bad_cursor("wrong shape")
    try:
        idb = bytes.fromhex(value[3])
    except ValueError:
        raise _bad_cursor("bad id") from None
    if len(idb) not in (0, 16):
        raise _bad_cursor("bad id")
    return value[0], value[1], value[2], idb


class Admin:
    """Queue administration over one spool's database (see the module docstring)."""

    def __init__(self, db: Database, names: Names, bells: _bell.Bells, clock: Callable[[], float],
                 tracing: TraceSetting | None = None) -> None:
        self.db = db
        self.names = names
        self.bells = bells
        self.clock = clock
        self.tracing = tracing or TraceSetting(None, False)  # log held/released/requeued/deleted (events.py)
        self.v2 = db.version >= 2  # a v1 spool opened read-only has no v2 tables: they read as empty


    @property
    def trace(self) -> bool:
        """Whether to write events (store/events.py): the spool's setting, re-read now and then."""
        return self.tracing.on

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- browsing -----------------------------------------------------------------------------

    def _plan(self, f: Filter, scope: str) -> list[tuple[int, int | None, bool]]:
        """The source tables to read, in order, each with its group (a channel or, when the third item
        is true, a peer id) or None for all."""
        states = _SCOPE[scope] if f.state is None else (_SCOPE[scope] & {f.state})
        srcs = {s for st in states for s in _SOURCES_OF[st]}
        if not self.v2:
            srcs.discard(HELD)
        if f.peer is not None:
            pid = self.names.peer(f.peer, create=False)
            if pid is None:
                return []
            if f.channel is not None and self.names.channel(f.channel, create=False) is None:
                return []
            return [(s, pid, True) for s in (OUTBOX, HELD) if s in srcs]
        if f.channel is not None:
            ch = self.names.channel(f.channel, create=False)
            if ch is None:
                return []
            return [(s, ch, False) for s in (INBOX, DELAYED, HELD) if s in srcs]
        return [(s, None, False) for s in (INBOX, DELAYED, OUTBOX, HELD) if s in srcs]

    def _matcher(self, f: Filter, now: int) -> Callable[[Row], bool]:
        older = None if f.older_than is None else now - int(f.older_than * 1000)
        newer = None if f.newer_than is None else now - int(f.newer_than * 1000)
        ch = self.names.channel(f.channel, create=False) if (f.channel is not None and f.peer is not None) else None
        lo, hi, state, header = f.min_priority, f.max_priority, f.state, f.header

        def match(r: Row) -> bool:
            if state is not None and _state(r, now) != state:
                return False
            if ch is not None and r[1] != ch:
                return False
            if (lo is not None and r[3] < lo) or (hi is not None and r[3] > hi):
                return False
            if older is not None or newer is not None:
                made = _ms_of(r[5])
                if (older is not None and made > older) or (newer is not None and made < newer):
                    return False
            if header is not None and decode_headers(r[9]).get(header[0]) != header[1]:
                return False
            return True

        return match

    def _scanner(self, f: Filter, scope: str) -> Scanner:
        """What ``_scan`` needs, looked up before its read transaction (name lookups read too)."""
        return self._plan(f, scope), self._matcher(f, self.now_ms())

    @staticmethod
    def _scan(conn: sqlite3.Connection, scanner: Scanner, after: Key | None, limit: int,
              held_max: int | None = None) -> tuple[list[Row], Key | None]:
        """Up to ``limit`` matching rows after ``after``, reading at most ``SCAN_BUDGET`` rows."""
        plan, match = scanner
        out: list[Row] = []
        budget = SCAN_BUDGET
        chunk = min(1000, limit + 1)
        for src, group, by_peer in plan:
            if after is not None and src < after[0]:
                continue
            key: Key = after if after is not None and src == after[0] else (src, -1, -1, b"")
            while True:
                n = min(chunk, budget)
                if n <= 0:
                    return out, key
                rows = conn.execute(*_browse_statement(src, group, by_peer, key, n)).fetchall()
                budget -= len(rows)
                chunk = 1000
                for r in rows:
                    if src == HELD and held_max is not None and r[4] > held_max:
                        rows = []
                        break
                    key = _key(r)
                    if match(r):
                        out.append(r)
                        if len(out) >= limit:
                            return out, key
                if len(rows) < n:
                    break
        return out, None

    def browse(self, f: Filter, after: str | None, limit: int) -> tuple[list[AdminMessage], str | None]:
        """A page of messages (see the module docstring); ``after`` is the previous page's ``next``."""
        start = decode_cursor(after) if after is not None else None
        scanner = self._scanner(f, "browse")

        def read(conn: sqlite3.Connection) -> tuple[list[tuple[Row, bytes]], Key | None]:
            rows, nxt = self._scan(conn, scanner, start, limit)
            return [(r, _preview(conn, r)) for r in rows], nxt

        rows, nxt = self.db.read(read)
        now = self.now_ms()
        return [self._message(r, now, p) for r, p in rows], (None if nxt is None else encode_cursor(nxt))

    def find(self, idbs: Sequence[bytes]) -> list[AdminMessage]:
        """Every stored copy (inbox, delayed, outbox, held; not dead) of the ids, with headers and body."""

        def read(conn: sqlite3.Connection) -> list[tuple[Row, Row]]:
            return [(r, conn.execute(*_detail_statement(r)).fetchone()) for r in self._locate(conn, idbs)]

        now = self.now_ms()
        out = []
        for r, d in self.db.read(read):
            if d is None:
                continue
            body, job, expires, origin, _deliver_at = d
            out.append(dataclasses.replace(
                self._message(r, now, body[:PREVIEW_BYTES]), headers=decode_headers(r[9]), body=body, job=job,
                expires_at=expires / 1000.0 if expires else None, origin=self.names.origin_name(origin)))
        return out

    def _locate(self, conn: sqlite3.Connection, idbs: Sequence[bytes]) -> list[Row]:
        """Every row of these ids, in inbox, delayed, outbox and held."""
        out: list[Row] = []
        for statement, scan, next_group in ((sql_admin.LOCATE_INBOX, sql_admin.locate_inbox_scan,
                                             sql_admin.INBOX_NEXT_GROUP),
                                            (sql_admin.LOCATE_OUTBOX, sql_admin.locate_outbox_scan,
                                             sql_admin.OUTBOX_NEXT_GROUP)):
            groups = _groups(conn, next_group)
            if groups is not None and len(groups) * len(idbs) <= 50_000:
                for g, p in groups:
                    for idb in idbs:
                        row = conn.execute(statement, (g, p, idb)).fetchone()
                        if row is not None:
                            out.append(row)
            else:
                for i in range(0, len(idbs), ID_CHUNK):
                    part = list(idbs[i:i + ID_CHUNK])
                    out.extend(conn.execute(scan(len(part)), part).fetchall())
        for i in range(0, len(idbs), ID_CHUNK):
            part = list(idbs[i:i + ID_CHUNK])
            out.extend(conn.execute(sql_admin.locate_delayed(len(part)), part).fetchall())
        if self.v2:
            for idb in idbs:
                out.extend(conn.execute(sql_admin.LOCATE_HELD, (idb,)).fetchall())
        return out

    def _message(self, r: Row, now: int, preview: bytes) -> AdminMessage:
        _src, ch, peer, pri, _k, idb, lease_until, attempts, size, _h, due, place = r
        state = _state(r, now)
        return AdminMessage(
            id=id_text_from_bytes(idb), place=_PLACES[place], channel=self.names.channel_name(ch),
            peer=None if peer is None else self.names.peer_name(peer), state=state, priority=pri,
            attempts=attempts, age=max(0.0, (now - _ms_of(idb)) / 1000.0), size=size,
            due=due / 1000.0 if due is not None else None,
            lease_until=lease_until / 1000.0 if state == "leased" else None,
            preview=preview.decode("utf-8", "replace"))

    # -- acting -------------------------------------------------------------------------------

    def act(self, action: Action, idbs: Sequence[bytes] | None, f: Filter | None, dry_run: bool,
            progress: Progress | None = None) -> tuple[int, int]:
        """Hold, release, requeue or delete the messages with these ids, or matching ``f``.

        Returns ``(matched, changed)``: with ids, matched counts every stored copy of them; with a
        filter, the messages in the action's scope (hold: ready, delayed, leased; release: held;
        requeue: delayed, held; delete: all). Leased messages are matched but never changed.
        """
        if self.db.read_only and not dry_run:
            raise SpoolUnavailable(f"the spool at {self.db.path} is open read-only: cannot {action} messages",
                                   hint="open it writable (or try the same call with dry_run)")
        matched = changed = 0
        if idbs is not None:
            for i in range(0, len(idbs), ID_CHUNK):
                part = idbs[i:i + ID_CHUNK]
                # found in a read (a chunk of ids may need a scan: never under the write lock), then
                # moved by key in the write transaction, each row re-checked there
                rows = self.db.read(functools.partial(self._locate, idbs=part))
                if dry_run:
                    now = self.now_ms()
                    m, n = len(rows), sum(1 for r in rows if _can(action, r, now))
                else:
                    m, n = self._apply(action, functools.partial(_given, rows))
                matched += m
                changed += n
                if progress is not None:
                    progress(matched, changed)
            return matched, changed
        assert f is not None
        held_max = int(self.db.read(lambda c: c.execute(sql_admin.HELD_MAX_SEQ).fetchone()[0]))
        cursor: Key | None = None
        while True:
            page = functools.partial(self._scan, scanner=self._scanner(f, action), after=cursor, limit=ACT_PAGE,
                                     held_max=held_max)
            rows, cursor = self.db.read(page)
            matched += len(rows)
            if dry_run:
                now = self.now_ms()
                changed += sum(1 for r in rows if _can(action, r, now))
            elif rows:
                changed += self._apply(action, functools.partial(_given, rows))[1]
            if progress is not None:
                progress(matched, changed)
            if cursor is None:
                return matched, changed

    def _apply(self, action: Action, select: Callable[[sqlite3.Connection], list[Row]]) -> tuple[int, int]:
        """One write transaction: the rows ``select`` names, each moved by ``action`` if it still can be."""
        rang: set[str] = set()

        def work(conn: sqlite3.Connection) -> tuple[int, int]:
            rows = select(conn)
            now = self.now_ms()
            n = 0
            ev: list[Any] = []
            for r in rows:
                if _move(conn, action, r, now):
                    n += 1
                    if self.trace:
                        ev += (r[5], now, _EVENT_OF[action], by)
                    if action in ("release", "requeue"):
                        back_to = r[11] if r[0] == HELD else INBOX
                        rang.add(_bell.OUTBOX if back_to == OUTBOX else _bell.channel_bell(
                            self.names.channel_name(r[1])))
            record(conn, ev)
            return len(rows), n

        by = event_detail(by=ACTOR.get()[0]) if self.trace else ""
        result = self.db.txn(self.db.move, work)
        for bell in rang:
            self.bells.ring(bell)
        return result

    # -- the audit ----------------------------------------------------------------------------

    def audit(self, who: str, action: str, target: str, count: int, detail: str = "") -> None:
        """Record one destructive action; the table keeps its newest ``AUDIT_KEEP`` rows."""
        at = self.now_ms()

        def write(conn: sqlite3.Connection) -> None:
            seq = conn.execute(sql_admin.AUDIT_INSERT, (at, who[:200], action[:50], target[:1000], count,
                                                        detail[:2000])).lastrowid
            if seq is not None and seq > AUDIT_KEEP:
                conn.execute(sql_admin.AUDIT_TRIM, (seq - AUDIT_KEEP,))

        self.db.txn(self.db.move, write)

    def audit_log(self, limit: int) -> list[AuditEntry]:
        """The newest ``limit`` audit entries, newest first."""
        if not self.v2:
            return []
        rows = self.db.read(lambda c: c.execute(sql_admin.AUDIT_LIST, (limit,)).fetchall())
        return [AuditEntry(at / 1000.0, who, action, target, count, detail)
                for at, who, action, target, count, detail in rows]


# -- rows --------------------------------------------------------------------------------------


def _state(r: Row, now: int) -> str:
    src = r[0]
    if src == HELD:
        return "held"
    if src == DELAYED:
        return "delayed"
    return "leased" if r[6] > now else "ready"


def _key(r: Row) -> Key:
    src = r[0]
    if src == HELD:
        return (HELD, 0, r[4], b"")
    return (src, r[2] if src == OUTBOX else r[1], r[4], r[5])


def _browse_statement(src: int, group: int | None, by_peer: bool, key: Key,
                      n: int) -> tuple[str, tuple[Any, ...]]:
    _src, g, k, idb = key
    if src == HELD:
        if group is None:
            return sql_admin.BROWSE_HELD_ALL, (k, n)
        return (sql_admin.BROWSE_HELD_PEER if by_peer else sql_admin.BROWSE_HELD_CHANNEL), (group, k, n)
    one, every = {INBOX: (sql_admin.BROWSE_INBOX_ONE, sql_admin.BROWSE_INBOX_ALL),
                  DELAYED: (sql_admin.BROWSE_DELAYED_ONE, sql_admin.BROWSE_DELAYED_ALL),
                  OUTBOX: (sql_admin.BROWSE_OUTBOX_ONE, sql_admin.BROWSE_OUTBOX_ALL)}[src]
    if group is None:
        return every, (g, k, idb, n)
    return one, (group, k, idb, n)


def _preview(conn: sqlite3.Connection, r: Row) -> bytes:
    statement, params = _detail_key(r)
    row = conn.execute(statement, (PREVIEW_BYTES, *params)).fetchone()
    if row is None or row[0] is None:
        return b""
    value = row[0]
    return value.encode("utf-8", "replace") if isinstance(value, str) else bytes(value)  # a damaged row: shown


def _detail_key(r: Row) -> tuple[str, tuple[Any, ...]]:
    src = r[0]
    if src == INBOX:
        return sql_admin.PREVIEW_INBOX, (r[1], r[3], r[5])
    if src == DELAYED:
        return sql_admin.PREVIEW_DELAYED, (r[1], r[4], r[5])
    if src == OUTBOX:
        return sql_admin.PREVIEW_OUTBOX, (r[2], r[3], r[5])
    return sql_admin.PREVIEW_HELD, (r[4],)


def _detail_statement(r: Row) -> tuple[str, tuple[Any, ...]]:
    src = r[0]
    if src == INBOX:
        return sql_admin.DETAIL_INBOX, (r[1], r[3], r[5])
    if src == DELAYED:
        return sql_admin.DETAIL_DELAYED, (r[1], r[4], r[5])
    if src == OUTBOX:
        return sql_admin.DETAIL_OUTBOX, (r[2], r[3], r[5])
    return sql_admin.DETAIL_HELD, (r[4],)


def _groups(conn: sqlite3.Connection, next_group: str) -> list[tuple[int, int]] | None:
    """The distinct (group, priority) pairs of a key, by skipping through it; None when there are too many."""
    out: list[tuple[int, int]] = []
    g, p = -1, -1
    while True:
        row = conn.execute(next_group, (g, p)).fetchone()
        if row is None:
            return out
        g, p = row
        out.append((g, p))
        if len(out) > MAX_GROUPS:
            return None


def _given(rows: list[Row], _conn: sqlite3.Connection) -> list[Row]:
    return rows


def _can(action: str, r: Row, now: int) -> bool:
    """Whether ``action`` would change this row (a dry run's count)."""
    state = _state(r, now)
    if action == "hold":
        return state in ("ready", "delayed")
    if action == "release":
        return state == "held"
    if action == "requeue":
        return state in ("delayed", "held")
    return state != "leased"


_EVENT_OF = {"hold": "held", "release": "released", "requeue": "requeued", "delete": "deleted"}


def _move(conn: sqlite3.Connection, action: str, r: Row, now: int) -> bool:
    """Apply ``action`` to one row by its key; False when it no longer can (gone, leased, not its state)."""
    src, ch, peer, pri, k, idb, _lu, _att, _size, _h, _due, place = r
    if action == "hold":
        if src == INBOX:
            if conn.execute(sql_admin.INBOX_TO_HELD, (now, ch, pri, idb, now)).rowcount:
                conn.execute(sql.INBOX_DELETE, (ch, pri, idb))
                return True
        elif src == DELAYED:
            if conn.execute(sql_admin.DELAYED_TO_HELD, (now, ch, k, idb)).rowcount:
                conn.execute(sql.DELAYED_DELETE, (ch, k, idb))
                return True
        elif src == OUTBOX:
            if conn.execute(sql_admin.OUTBOX_TO_HELD, (now, peer, pri, idb)).rowcount:
                conn.execute(sql.OUTBOX_DELETE, (peer, pri, idb))
                return True
        return False
    if action == "release":
        if src != HELD:
            return False
        back = (sql_admin.HELD_TO_INBOX, sql_admin.HELD_TO_DELAYED, sql_admin.HELD_TO_OUTBOX)[place]
        return _out_of_hold(conn, back, k)
    if action == "requeue":
        if src == DELAYED:
            if conn.execute(sql.PROMOTE_ONE, (ch, k, idb)).rowcount:
                conn.execute(sql.DELAYED_DELETE, (ch, k, idb))
                return True
            return False
        if src == HELD:
            back = sql_admin.HELD_TO_OUTBOX if place == OUTBOX else sql_admin.HELD_TO_INBOX
            return _out_of_hold(conn, back, k)
        return False
    if src == INBOX:
        return bool(conn.execute(sql_admin.INBOX_DELETE_UNLEASED, (ch, pri, idb, now)).rowcount)
    if src == DELAYED:
        return bool(conn.execute(sql.DELAYED_DELETE, (ch, k, idb)).rowcount)
    if src == OUTBOX:
        return bool(conn.execute(sql.OUTBOX_DELETE, (peer, pri, idb)).rowcount)
    return bool(conn.execute(sql_admin.HELD_DELETE, (k,)).rowcount)


def _out_of_hold(conn: sqlite3.Connection, statement: str, seq: int) -> bool:
    """Move held row ``seq`` back; it stays held if its place is taken (the same key exists there again)."""
    if conn.execute(statement, (seq,)).rowcount:
        conn.execute(sql_admin.HELD_DELETE, (seq,))
        return True
    return False
