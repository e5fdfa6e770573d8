"""The spool's schema and every SQL statement, each written once.

Nothing here runs a statement: ``db.py`` owns the connections and the other
store modules execute these strings. A statement that differs only in a
``WHERE`` clause is a statement of its own, never built by string surgery.
"""

from __future__ import annotations

from typing import Any, Final

SCHEMA_VERSION: Final = 3

SCHEMA: Final = """
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
# v2's tables are created by MIGRATIONS[1], for a new spool as for an old one

# Each step takes a spool from version N to N+1; a new spool runs SCHEMA and then every step.
MIGRATIONS: Final[dict[int, str]] = {
    # v2: held messages (Postfix's hold queue: neither leased nor forwarded until released),
    # the audit of destructive admin actions, the per-message event log behind trace, and the
    # beanstalkd front-end's per-job counters (stats-job after a restart, as beanstalkd's binlog keeps them).
    1: """
CREATE TABLE held(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id BLOB NOT NULL, place INTEGER NOT NULL,
    channel INTEGER NOT NULL, peer INTEGER, priority INTEGER NOT NULL, due INTEGER,
    job INTEGER, attempts INTEGER NOT NULL DEFAULT 0, body BLOB NOT NULL, headers BLOB,
    expires INTEGER, origin INTEGER, deliver_at INTEGER, held_at INTEGER NOT NULL);
CREATE INDEX held_by_id ON held(id);
CREATE INDEX held_by_channel ON held(channel, seq);
CREATE INDEX held_by_peer ON held(peer, seq) WHERE peer IS NOT NULL;
CREATE TABLE audit(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, who TEXT NOT NULL,
    action TEXT NOT NULL, target TEXT NOT NULL, count INTEGER NOT NULL, detail TEXT NOT NULL DEFAULT '');
CREATE TABLE events(
    id BLOB NOT NULL, n INTEGER NOT NULL, at INTEGER NOT NULL,
    kind TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (id, n)) WITHOUT ROWID;
CREATE TABLE job_stats(
    job INTEGER PRIMARY KEY, delay INTEGER NOT NULL, reserves INTEGER NOT NULL, timeouts INTEGER NOT NULL,
    releases INTEGER NOT NULL, buries INTEGER NOT NULL, kicks INTEGER NOT NULL);
""",
    # v3: events of many ids at once (a forwarded or received batch) as one row holding the ids
    # (issue 15: a row per id cost about as much as storing the message itself)
    2: """
CREATE TABLE event_runs(
    seq INTEGER PRIMARY KEY, first BLOB NOT NULL, last BLOB NOT NULL, n INTEGER NOT NULL,
    at INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', count INTEGER NOT NULL,
    ids BLOB NOT NULL);
CREATE INDEX event_runs_by_first ON event_runs(first, last);
""",
}

# -- beanstalkd per-job counters (only jobs that were released, buried, kicked or timed out have a row) ---

JOB_STATS_ALL: Final = "SELECT job, delay, reserves, timeouts, releases, buries, kicks FROM job_stats"
JOB_STATS_PUT: Final = "INSERT OR REPLACE INTO job_stats VALUES (?, ?, ?, ?, ?, ?, ?)"
JOB_STATS_DELETE: Final = "DELETE FROM job_stats WHERE job=?"
JOB_STATS_PRUNE: Final = """DELETE FROM job_stats WHERE job NOT IN (
    SELECT job FROM inbox UNION ALL SELECT job FROM delayed UNION ALL SELECT job FROM dead WHERE job IS NOT NULL)"""

# -- opening ---------------------------------------------------------------------------------

USER_VERSION: Final = "PRAGMA user_version"
TABLE_COUNT: Final = "SELECT count(*) FROM sqlite_master"
INIT_META: Final = (
    "INSERT INTO meta(key, value) VALUES ('node_id', ?), ('created_at', ?), ('next_job', 1), ('trace', 0)"
)
NODE_ID: Final = "SELECT value FROM meta WHERE key='node_id'"
# the spool's event-log setting (store/events.py, TraceSetting); a spool made before it has no row: off
TRACE_GET: Final = "SELECT value FROM meta WHERE key='trace'"
TRACE_SET: Final = "INSERT OR REPLACE INTO meta(key, value) VALUES ('trace', ?)"
NEXT_JOB_BLOCK: Final = "UPDATE meta SET value=value+? WHERE key='next_job' RETURNING value"
# A process that owns the spool (names.JobNumbers.own) reserves numbers in blocks like any other and
# notes its last block; when it starts, numbering goes back to the last number it may have shown plus
# one: past every stored job, every number it took away (job_hw) and its block's start, and only if
# nobody reserved numbers after that block. A number goes away from the tables when its row is
# deleted; the owner's connections note the highest such (job_hw) through TEMP triggers, which live on
# those connections only (nothing in the spool file changes), and fire only when the row deleted holds
# the last number the process issued (spoolq_last_job(), a function of the connection).
OWNED_BLOCK: Final = "INSERT OR REPLACE INTO meta(key, value) VALUES ('owned_start', ?), ('owned_end', ?)"
OWNED_STATE: Final = "SELECT key, value FROM meta WHERE key IN ('next_job', 'job_hw', 'owned_start', 'owned_end')"
JOB_HW_INIT: Final = "INSERT OR IGNORE INTO meta(key, value) VALUES ('job_hw', 0)"
JOB_HW_RAISE: Final = "UPDATE meta SET value=?1 WHERE key='job_hw' AND value<?1"
JOB_HW_TRIGGERS: Final = tuple(
    f"CREATE TEMP TRIGGER IF NOT EXISTS job_hw_{t} AFTER DELETE ON main.{t} WHEN old.job>=spoolq_last_job() "
    "BEGIN UPDATE meta SET value=old.job+1 WHERE key='job_hw' AND value<=old.job; END"
    for t in ("inbox", "delayed", "dead", "held")
)
MAX_JOB: Final = (
    "SELECT max(m) FROM (SELECT max(job) AS m FROM inbox UNION ALL SELECT max(job) FROM delayed "
    "UNION ALL SELECT max(job) FROM dead UNION ALL SELECT max(job) FROM held)"
)
SET_NEXT_JOB: Final = "UPDATE meta SET value=? WHERE key='next_job'"

# -- names -----------------------------------------------------------------------------------

CHANNEL_ID: Final = "SELECT id FROM channels WHERE name=?"
CHANNEL_INSERT: Final = "INSERT OR IGNORE INTO channels(name) VALUES (?)"
PEER_ID: Final = "SELECT id FROM peers WHERE name=?"
PEER_INSERT: Final = "INSERT OR IGNORE INTO peers(name) VALUES (?)"
NODE_REF: Final = "SELECT id FROM nodes WHERE node_id=?"
NODE_INSERT: Final = "INSERT OR IGNORE INTO nodes(node_id) VALUES (?)"
ALL_CHANNELS: Final = "SELECT id, name FROM channels"
ALL_PEERS: Final = "SELECT id, name FROM peers"
ALL_NODES: Final = "SELECT id, node_id FROM nodes"
CHANNEL_MAX_ATTEMPTS: Final = "SELECT id, max_attempts FROM channels"
SET_MAX_ATTEMPTS: Final = "UPDATE channels SET max_attempts=? WHERE id=?"
CHANNEL_IDS: Final = "SELECT id FROM channels"

# -- creating messages -----------------------------------------------------------------------

INBOX_SIMPLE_COLS: Final = "(channel, priority, id, job, body)"
INBOX_RECEIVED_COLS: Final = "(channel, priority, id, job, body, origin)"
INBOX_FULL_COLS: Final = "(channel, priority, id, job, body, headers, expires, origin, attempts, deliver_at)"
DELAYED_COLS: Final = "(channel, due, id, job, priority, body, headers, expires, origin, attempts)"
OUTBOX_COLS: Final = "(peer, priority, id, channel, body, headers, expires, origin, deliver_at)"

INSERT_ONE: Final = f"INSERT OR IGNORE INTO inbox{INBOX_SIMPLE_COLS} VALUES (?,?,?,?,?)"
INBOX_HAS: Final = "SELECT 1 FROM inbox WHERE channel=? AND priority=? AND id=?"
DELAYED_HAS: Final = "SELECT 1 FROM delayed WHERE channel=? AND id=?"
OUTBOX_HAS: Final = "SELECT 1 FROM outbox WHERE peer=? AND priority=? AND id=?"

# -- leasing ---------------------------------------------------------------------------------

LEASE_SELECT: Final = (
    "SELECT priority, id, attempts, job, body, headers, expires, origin, deliver_at FROM inbox "
    "WHERE channel=? AND lease_until<=? ORDER BY priority, id LIMIT ?"
)
LEASE_UPDATE: Final = "UPDATE inbox SET lease_until=?, attempts=attempts+1 WHERE channel=? AND priority=? AND id=?"
# One ready message leased by one autocommitted statement: the front row of the channel, unless it is
# spent (attempts used up, TTL passed) or delayed messages are due (they may go before it). Then nothing
# is returned and the caller takes the general path (LEASE_SELECT ... in a transaction).
LEASE_ONE: Final = (
    "UPDATE inbox SET lease_until=?1, attempts=attempts+1 "
    "WHERE channel=?2 AND (priority, id)=(SELECT priority, id FROM inbox WHERE channel=?2 AND lease_until<=?3 "
    "ORDER BY priority, id LIMIT 1) AND attempts<?4 AND (expires IS NULL OR expires>?3) "
    "AND NOT EXISTS (SELECT 1 FROM delayed WHERE channel=?2 AND due<=?3) "
    "RETURNING priority, id, attempts, job, body, headers, expires, origin, deliver_at"
)
NEXT_DELAYED: Final = "SELECT due FROM delayed WHERE channel=? ORDER BY due LIMIT 1"
# Whether a channel holds any message: ready or leased, delayed, or dead (a beanstalkd tube exists while it
# holds a job). Three index seeks.
HOLDS_ANY: Final = (
    "SELECT EXISTS (SELECT 1 FROM inbox WHERE channel=?1) OR EXISTS (SELECT 1 FROM delayed WHERE channel=?1) "
    "OR EXISTS (SELECT 1 FROM dead WHERE channel=?1)"
)
# Whether a lease of the channel has anything to do now: a row whose lease ended (or never began), or a
# delayed message that is due. Read-only: an empty look takes no write lock (issue 15).
READY_OR_DUE: Final = (
    "SELECT EXISTS (SELECT 1 FROM inbox WHERE channel=?1 AND lease_until<=?2) "
    "OR EXISTS (SELECT 1 FROM delayed WHERE channel=?1 AND due<=?2)"
)
NEXT_LEASE_END: Final = "SELECT min(lease_until) FROM inbox WHERE channel=? AND lease_until>?"
_PROMOTE_SELECT: Final = (
    "INSERT OR IGNORE INTO inbox(channel, priority, id, job, body, headers, expires, origin, attempts, deliver_at) "
    "SELECT channel, priority, id, job, body, headers, expires, origin, attempts, due FROM delayed "
)
PROMOTE_DUE: Final = _PROMOTE_SELECT + "WHERE channel=? AND due<=?"
PROMOTE_DUE_DELETE: Final = "DELETE FROM delayed WHERE channel=? AND due<=?"
PROMOTE_ONE: Final = _PROMOTE_SELECT + "WHERE channel=? AND due=? AND id=?"
DELAYED_DELETE: Final = "DELETE FROM delayed WHERE channel=? AND due=? AND id=?"
ACK: Final = "DELETE FROM inbox WHERE channel=? AND priority=? AND id=? AND attempts=? AND lease_until>?"
LEASE_STATE: Final = "SELECT attempts, lease_until FROM inbox WHERE channel=? AND priority=? AND id=?"
TOUCH: Final = "UPDATE inbox SET lease_until=? WHERE channel=? AND priority=? AND id=? AND attempts=? AND lease_until>?"
RELEASE: Final = "UPDATE inbox SET lease_until=0 WHERE channel=? AND priority=? AND id=?"
# give a lease back as if it never happened (its consumer is gone): ready, and not an attempt
RELEASE_UNCOUNTED: Final = (
    "UPDATE inbox SET lease_until=0, attempts=attempts-1 "
    "WHERE channel=? AND priority=? AND id=? AND attempts=? AND lease_until>0"
)
REKEY_READY: Final = (
    "INSERT OR REPLACE INTO inbox(channel, priority, id, lease_until, attempts, job, body, headers, "
    "expires, origin, deliver_at) SELECT channel, ?, id, 0, attempts, job, body, headers, expires, "
    "origin, deliver_at FROM inbox WHERE channel=? AND priority=? AND id=?"
)
INBOX_TO_DELAYED: Final = (
    "INSERT OR REPLACE INTO delayed(channel, due, id, job, priority, body, headers, expires, origin, "
    "attempts) SELECT channel, ?, id, job, ?, body, headers, expires, origin, attempts FROM inbox "
    "WHERE channel=? AND priority=? AND id=?"
)
INBOX_DELETE: Final = "DELETE FROM inbox WHERE channel=? AND priority=? AND id=?"
# a leased message handed on to a peer (a relay): copied into the outbox, then acked
LEASED_TO_OUTBOX: Final = (
    "INSERT OR IGNORE INTO outbox(peer, priority, id, channel, body, headers, expires, origin, deliver_at) "
    "SELECT ?, priority, id, channel, body, headers, expires, origin, deliver_at FROM inbox "
    "WHERE channel=? AND priority=? AND id=? AND attempts=? AND lease_until>?"
)
PEEK_READY: Final = LEASE_SELECT

# -- dead letters ----------------------------------------------------------------------------

_DEAD_INSERT: Final = (
    "INSERT INTO dead(id, channel, peer, priority, attempts, job, body, headers, expires, origin, deliver_at, "
    "reason, detail, died_at) "
)
INBOX_TO_DEAD: Final = _DEAD_INSERT + (
    "SELECT id, channel, NULL, priority, attempts, job, body, headers, expires, origin, "
    "deliver_at, ?, ?, ? FROM inbox WHERE channel=? AND priority=? AND id=?"
)
DELAYED_TO_DEAD: Final = _DEAD_INSERT + (
    "SELECT id, channel, NULL, priority, attempts, job, body, headers, expires, origin, "
    "due, ?, ?, ? FROM delayed WHERE channel=? AND due=? AND id=?"
)
OUTBOX_TO_DEAD: Final = _DEAD_INSERT + (
    "SELECT id, channel, peer, priority, tries, NULL, body, headers, expires, origin, "
    "deliver_at, ?, ?, ? FROM outbox WHERE peer=? AND priority=? AND id=?"
)
DEAD_SET_PRIORITY: Final = "UPDATE dead SET priority=? WHERE seq=last_insert_rowid()"
DEAD_COLS: Final = (
    "seq, id, channel, peer, priority, attempts, job, body, headers, expires, origin, deliver_at, "
    "reason, detail, died_at"
)
DEAD_BY_ID: Final = f"SELECT {DEAD_COLS} FROM dead WHERE id=? ORDER BY seq DESC LIMIT 1"
DEAD_ONE: Final = "SELECT id, channel, priority, job, body, headers, origin, deliver_at FROM dead WHERE seq=?"
DEAD_DELETE: Final = "DELETE FROM dead WHERE seq=?"
RESTORE_TO_INBOX: Final = (
    "INSERT OR IGNORE INTO inbox(channel, priority, id, job, body, headers, origin, deliver_at) "
    "VALUES (?,?,?,?,?,?,?,?)"
)
RESTORE_TO_OUTBOX: Final = f"INSERT OR IGNORE INTO outbox{OUTBOX_COLS} VALUES (?,?,?,?,?,?,?,?,?)"


def dead_select(where: str) -> str:
    return f"SELECT {DEAD_COLS} FROM dead{where} ORDER BY seq"


def dead_count(where: str) -> str:
    return f"SELECT count(*) FROM dead{where}"


def dead_purge(where: str) -> str:
    return f"DELETE FROM dead{where}"


# -- jobs (by job number) --------------------------------------------------------------------

JOB_IN_INBOX: Final = "SELECT channel, priority, id, lease_until, attempts, body, headers FROM inbox WHERE job=?"
JOB_IN_DELAYED: Final = "SELECT channel, priority, id, due, attempts, body, headers FROM delayed WHERE job=?"
JOB_IN_DEAD: Final = (
    "SELECT channel, priority, id, NULL, attempts, body, headers FROM dead "
    "WHERE job=? AND peer IS NULL ORDER BY seq DESC LIMIT 1"
)
JOB_DELAYED_KEY: Final = "SELECT channel, due, id FROM delayed WHERE job=?"
JOB_DEAD_SEQ: Final = "SELECT seq FROM dead WHERE job=? AND peer IS NULL ORDER BY seq DESC LIMIT 1"
JOB_LEASE_ROW: Final = (
    "SELECT channel, priority, id, lease_until, attempts, body, headers, expires, origin, deliver_at "
    "FROM inbox WHERE job=?"
)
JOB_DELETE_READY: Final = "DELETE FROM inbox WHERE job=? AND lease_until<=?"
# The same by the message's key, when a look-up found it (no scan under the write lock): ready, delayed
JOB_DELETE_READY_KEY: Final = "DELETE FROM inbox WHERE channel=? AND priority=? AND id=? AND job=? AND lease_until<=?"
JOB_DELETE_DELAYED_KEY: Final = "DELETE FROM delayed WHERE channel=? AND due=? AND id=? AND job=?"
JOB_DELETE_DELAYED: Final = "DELETE FROM delayed WHERE job=?"
JOB_DELETE_DEAD: Final = "DELETE FROM dead WHERE job=? AND peer IS NULL"
RELEASE_ALL_LEASES: Final = "UPDATE inbox SET lease_until=0 WHERE lease_until>?"
KICK_DEAD: Final = "SELECT seq, job FROM dead WHERE channel=? AND peer IS NULL ORDER BY seq LIMIT ?"
KICK_DELAYED: Final = "SELECT due, id, job FROM delayed WHERE channel=? ORDER BY due, id LIMIT ?"
PEEK_DELAYED: Final = (
    "SELECT job, priority, id, due, attempts, body, headers FROM delayed WHERE channel=? ORDER BY due, id LIMIT 1"
)
PEEK_BURIED: Final = (
    "SELECT job, priority, id, NULL, attempts, body, headers FROM dead WHERE channel=? AND peer IS NULL "
    "ORDER BY seq LIMIT 1"
)


def kicked_deliver_at(n: int) -> str:
    return "UPDATE inbox SET deliver_at=? WHERE channel=? AND id IN (" + ",".join("?" * n) + ")"


# -- outbox ----------------------------------------------------------------------------------

OUTBOX_PEERS: Final = "SELECT name FROM peers WHERE EXISTS (SELECT 1 FROM outbox WHERE outbox.peer = peers.id)"
# a batch to forward: the message's fields in the order of the peer wire format, names included (a join
# per row costs SQLite less than mapping the numbers in Python), origin NULL for this node (issue 15)
_OUTBOX_READ: Final = (
    "SELECT o.id, coalesce(c.name, '#' || o.channel), o.body, o.priority, o.headers, o.deliver_at, o.expires, "
    "CASE WHEN o.origin IS NULL THEN NULL ELSE coalesce(n.node_id, '#' || o.origin) END "
    "FROM outbox o LEFT JOIN channels c ON c.id = o.channel LEFT JOIN nodes n ON n.id = o.origin WHERE o.peer=? "
)
OUTBOX_FIRST: Final = _OUTBOX_READ + "ORDER BY o.priority, o.id LIMIT ?"
OUTBOX_AFTER: Final = _OUTBOX_READ + "AND (o.priority, o.id) > (?, ?) ORDER BY o.priority, o.id LIMIT ?"
OUTBOX_DELETE: Final = "DELETE FROM outbox WHERE peer=? AND priority=? AND id=?"
OUTBOX_TRY: Final = "UPDATE outbox SET tries=tries+1 WHERE peer=? AND priority=? AND id=?"


# -- statements over many 16-byte ids passed as ONE blob (issue 15) ----------------------------
# Binding thousands of parameters from Python costs more than SQLite's own work per row (a seen
# upsert of 4,000 ids: ~2 us/row as multi-row VALUES with RETURNING, ~0.9 us/row this way), so the
# ids of a batch go in as their concatenation and SQL splits them: k.i is each id's 1-based offset.
# The blob must be non-empty and hold 16-byte ids only (see ``ids_blob``).


def _ids(p: int) -> str:
    return f"WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i+16 FROM k WHERE i+16<=length(?{p})) "


# changes() counts the ids that were new or whose entry had expired: all of them, or there were duplicates
SEEN_UPSERT_IDS: Final = _ids(1) + (
    "INSERT INTO seen(id, until) SELECT substr(?1, i, 16), ?2 FROM k WHERE true "
    "ON CONFLICT(id) DO UPDATE SET until=excluded.until WHERE seen.until<=?3"
)
OUTBOX_DELETE_IDS: Final = _ids(1) + (
    "DELETE FROM outbox WHERE peer=?2 AND priority=?3 AND id IN (SELECT substr(?1, i, 16) FROM k)"
)
# A settled batch is usually a whole run of keys: delete the range, once the range is seen to hold
# exactly those ids (hex of the ids in key order; an order or set that differs only costs the IN path)
OUTBOX_RANGE_HEX: Final = (
    "SELECT group_concat(hex(id), '') FROM "
    "(SELECT id FROM outbox WHERE peer=? AND priority=? AND id BETWEEN ? AND ? ORDER BY id)"
)
OUTBOX_DELETE_RANGE: Final = "DELETE FROM outbox WHERE peer=? AND priority=? AND id BETWEEN ? AND ?"
IDS_MIN: Final = 16  # fewer ids than this: bound one by one (the blob statements cost a little more to start)


def ids_blob(ids: list[bytes], distinct: bool = False) -> bytes | None:
    """The concatenation of ``ids`` for the ``*_IDS`` statements, or ``None`` when they cannot take
    them: too few (see ``IDS_MIN``), one not 16 bytes long, or (``distinct``) one repeated."""
    if len(ids) < IDS_MIN or set(map(len, ids)) != {16} or (distinct and len(set(ids)) != len(ids)):
        return None
    return b"".join(ids)


def outbox_delete_in(n: int) -> str:
    return "DELETE FROM outbox WHERE peer=? AND priority=? AND id IN (" + ",".join("?" * n) + ")"


# -- upkeep and inspection -------------------------------------------------------------------

EXPIRED_INBOX: Final = (
    "SELECT channel, priority, id FROM inbox WHERE expires IS NOT NULL AND expires<=? AND lease_until<=?"
)
EXPIRED_DELAYED: Final = "SELECT channel, due, id FROM delayed WHERE expires IS NOT NULL AND expires<=?"
EXPIRED_OUTBOX: Final = (
    "SELECT peer, priority, id FROM outbox WHERE expires IS NOT NULL AND expires<=? AND claim_until<=?"
)
STILL_EXPIRED_INBOX: Final = (
    "SELECT 1 FROM inbox WHERE channel=? AND priority=? AND id=? AND expires<=? AND lease_until<=?"
)
STILL_IN_OUTBOX: Final = "SELECT 1 FROM outbox WHERE peer=? AND priority=? AND id=? AND claim_until<=?"
FORGET_SEEN: Final = "DELETE FROM seen WHERE id<? AND until<=?"
STATS_INBOX: Final = (
    "SELECT channel, count(*), sum(lease_until>?), min(id), sum(lease_until<=? AND priority<1024) "
    "FROM inbox GROUP BY channel"
)
STATS_DELAYED: Final = "SELECT channel, count(*) FROM delayed GROUP BY channel"
STATS_DEAD: Final = "SELECT channel, count(*) FROM dead WHERE peer IS NULL GROUP BY channel"
STATS_OUTBOX: Final = "SELECT peer, count(*), sum(claim_until>?), min(id) FROM outbox GROUP BY peer"
STATS_PEER_DEAD: Final = "SELECT peer, count(*) FROM dead WHERE peer IS NOT NULL GROUP BY peer"
STATS_HELD: Final = "SELECT channel, count(*) FROM held WHERE peer IS NULL GROUP BY channel"
STATS_PEER_HELD: Final = "SELECT peer, count(*) FROM held WHERE peer IS NOT NULL GROUP BY peer"


# -- statements of many rows -----------------------------------------------------------------

CHUNKS: Final = (256, 128, 64, 32, 16, 8, 4, 2, 1)
_CACHE: dict[tuple[str, str, int, str], str] = {}


def insert_rows(table: str, cols: str, width: int, size: int, verb: str = "INSERT OR IGNORE") -> str:
    """``verb INTO table cols VALUES (?,..),(?,..)...`` for ``size`` rows of ``width`` columns (cached)."""
    key = (verb, table, size, cols)
    sql = _CACHE.get(key)
    if sql is None:
        row = "(" + ",".join("?" * width) + ")"
        sql = f"{verb} INTO {table}{cols} VALUES " + ",".join([row] * size)
        _CACHE[key] = sql
    return sql


def upsert_seen(n: int) -> str:
    """Record ``n`` ids in ``seen``; ``RETURNING`` names those that were new (or whose entry had expired)."""
    key = ("upsert", "seen", n, "")
    sql = _CACHE.get(key)
    if sql is None:
        sql = ("INSERT INTO seen(id, until) VALUES " + ",".join(["(?,?)"] * n) +
               " ON CONFLICT(id) DO UPDATE SET until=excluded.until WHERE seen.until<=? RETURNING id")
        _CACHE[key] = sql
    return sql


def insert_many(conn: Any, table: str, cols: str, width: int, params: list[Any]) -> None:
    """Insert rows (flattened in ``params``) with multi-row VALUES statements.

    One statement per chunk binds many rows at once, which is about twice as
    fast as ``executemany``; chunk sizes are powers of two so few distinct
    statements reach the statement cache.
    """
    total = len(params) // width
    pos = 0
    while total:
        for size in CHUNKS:
            if size <= total:
                break
        sql = insert_rows(table, cols, width, size)
        n = size * width
        conn.execute(sql, params[pos : pos + n] if (pos or n != len(params)) else params)
        pos += n
        total -= size


# -- the event log (trace) ------------------------------------------------------------------

# the "created" events of a block of consecutive new ids, from the rows just written (no row in Python)
_EVENTS_OF_BLOCK: Final = "INSERT OR IGNORE INTO events(id, n, at, kind, detail) SELECT id, ?, ?, 'created', ? "
EVENTS_OF_INBOX_BLOCK: Final = _EVENTS_OF_BLOCK + "FROM inbox WHERE channel=? AND priority=? AND id BETWEEN ? AND ?"
EVENTS_OF_DELAYED_BLOCK: Final = _EVENTS_OF_BLOCK + "FROM delayed WHERE channel=? AND due=? AND id BETWEEN ? AND ?"
EVENTS_OF_OUTBOX_BLOCK: Final = _EVENTS_OF_BLOCK + "FROM outbox WHERE peer=? AND priority=? AND id BETWEEN ? AND ?"
# within a millisecond a message's arrival (created, received) comes first: ``n`` orders the events
# of one process, not those of two (a relay may lease what the receiver logged in the same ms)
EVENTS_OF: Final = (
    "SELECT at, n, kind, detail FROM events WHERE id=? "
    "ORDER BY at, kind NOT IN ('created', 'received'), n LIMIT ?"
)
# a run: the events of many distinct ids (one kind, time and detail) as one row; ``ids`` is their
# concatenation, first/last the least and greatest, all within RUN_SPAN of id time (see events.py)
EVENT_RUN_INSERT: Final = (
    "INSERT INTO event_runs(n, at, kind, detail, first, last, count, ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
EVENT_RUNS_OF: Final = "SELECT at, n, kind, detail, ids FROM event_runs WHERE first BETWEEN ? AND ? AND last >= ?"
EVENT_RUNS_COUNT: Final = "SELECT coalesce(sum(count), 0) FROM event_runs"
EVENT_RUNS_OLDEST: Final = "SELECT seq, first, count FROM event_runs ORDER BY first LIMIT 1"
EVENT_RUN_DELETE: Final = "DELETE FROM event_runs WHERE seq=?"
EVENT_RUNS_DELETE_OLD: Final = (
    "DELETE FROM event_runs WHERE seq IN (SELECT seq FROM event_runs WHERE last<? AND at<? LIMIT ?) RETURNING count"
)
EVENTS_COUNT: Final = "SELECT count(*) FROM events"
EVENTS_BOUNDARY: Final = "SELECT id FROM events WHERE id>=? AND id<? ORDER BY id LIMIT 1 OFFSET ?"
EVENTS_DELETE_OLD: Final = "DELETE FROM events WHERE id>=? AND id<? AND at<?"
EVENTS_NTH: Final = "SELECT id FROM events ORDER BY id LIMIT 1 OFFSET ?"
EVENTS_DELETE_BELOW: Final = "DELETE FROM events WHERE id<?"
EVENTS_DELETE_ALL: Final = "DELETE FROM events"


# Plain sends and their `created` events as ONE autocommitted statement (issue 9): rows inserted into this
# view of the create connection's TEMP schema are written to `inbox` and `events` by its trigger, so a group
# of traced sends is one statement (one GIL hand-off for the writer thread), not BEGIN, two INSERTs and
# COMMIT. Both stay in the connection (TEMP): nothing in the spool file changes, other processes and older
# versions never see them. A TEMP trigger's body names the main tables unqualified (SQLite refuses
# qualified names there); the statement's OR IGNORE applies to both of its INSERTs.
SEND_TRACED_VIEW: Final = (
    "CREATE TEMP VIEW IF NOT EXISTS send_traced(channel, priority, id, job, body, n, at, detail) AS "
    "SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL WHERE 0",
    "CREATE TEMP TRIGGER IF NOT EXISTS send_traced_insert INSTEAD OF INSERT ON send_traced BEGIN "
    "INSERT INTO inbox(channel, priority, id, job, body) "
    "VALUES (NEW.channel, NEW.priority, NEW.id, NEW.job, NEW.body); "
    "INSERT INTO events(id, n, at, kind, detail) VALUES (NEW.id, NEW.n, NEW.at, 'created', NEW.detail); END",
)


def insert_traced(size: int) -> str:
    """Insert ``size`` plain inbox rows with their ``created`` events through ``SEND_TRACED_VIEW``: params
    are 6 per row (channel, priority, id, job, body, detail), then the ``n`` base and ``at`` shared by all;
    row ``i`` gets ``n = base + i``. Cached."""
    key = ("traced", "send_traced", size, "")
    statement = _CACHE.get(key)
    if statement is None:
        base, at = 6 * size + 1, 6 * size + 2
        rows = ",".join(f"(?{6 * i + 1},?{6 * i + 2},?{6 * i + 3},?{6 * i + 4},?{6 * i + 5},?{base}+{i},?{at},"
                        f"?{6 * i + 6})" for i in range(size))
        statement = _CACHE[key] = ("INSERT OR IGNORE INTO temp.send_traced(channel, priority, id, job, body, n, at, "
                                   f"detail) VALUES {rows}")
    return statement


def event_rows(size: int) -> str:
    """Insert ``size`` events: params are 4 per row (id, at, kind, detail), then one ``n`` base;
    row ``i`` gets ``n = base + i`` (no per-row number built in Python). Cached."""
    key = ("events", "events", size, "")
    statement = _CACHE.get(key)
    if statement is None:
        base = 4 * size + 1
        rows = ",".join(f"(?{4 * i + 1},?{base}+{i},?{4 * i + 2},?{4 * i + 3},?{4 * i + 4})" for i in range(size))
        statement = _CACHE[key] = f"INSERT OR IGNORE INTO events(id, n, at, kind, detail) VALUES {rows}"
    return statement


# -- checking (read-only) --------------------------------------------------------------------

CHECK_INTEGRITY: Final = "PRAGMA integrity_check"
CHECK_META: Final = "SELECT key, value FROM meta WHERE key IN ('node_id', 'next_job')"
CHECK_ORPHANS: Final = (
    ("inbox rows of unknown channels", "SELECT count(*) FROM inbox WHERE channel NOT IN (SELECT id FROM channels)"),
    ("delayed rows of unknown channels",
     "SELECT count(*) FROM delayed WHERE channel NOT IN (SELECT id FROM channels)"),
    ("outbox rows of unknown peers", "SELECT count(*) FROM outbox WHERE peer NOT IN (SELECT id FROM peers)"),
    ("dead letters of unknown channels", "SELECT count(*) FROM dead WHERE channel NOT IN (SELECT id FROM channels)"),
    ("ids that are not 16 bytes", "SELECT (SELECT count(*) FROM inbox WHERE length(id)<>16) + "
     "(SELECT count(*) FROM delayed WHERE length(id)<>16) + (SELECT count(*) FROM outbox WHERE length(id)<>16)"),
    ("negative attempts", "SELECT count(*) FROM inbox WHERE attempts<0"),
)
CHECK_MAX_JOB: Final = "SELECT max(j) FROM (SELECT max(job) AS j FROM inbox UNION ALL SELECT max(job) FROM delayed)"
