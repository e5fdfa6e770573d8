"""The statements of queue administration (``store/admin.py``), each written once.

Browsing reads one *source* table at a time in its own key order (keyset
paging, never ``OFFSET``), and every browse statement yields the same row:

    src, channel, peer, priority, k, id, lease_until, attempts, size, headers, due, place

``src`` is the table (0 inbox, 1 delayed, 2 outbox, 3 held), ``k`` the key
column after the group column (priority, due, priority, seq) and ``place``
where a held message goes back to (0 inbox, 1 delayed, 2 outbox).
"""

from __future__ import annotations

from typing import Final

_INBOX_ROW: Final = (
    "SELECT 0, channel, NULL, priority, priority, id, lease_until, attempts, length(body), headers, NULL, 0 "
    "FROM inbox "
)
_DELAYED_ROW: Final = (
    "SELECT 1, channel, NULL, priority, due, id, 0, attempts, length(body), headers, due, 1 FROM delayed "
)
_OUTBOX_ROW: Final = (
    "SELECT 2, channel, peer, priority, priority, id, claim_until, tries, length(body), headers, NULL, 2 "
    "FROM outbox "
)
_HELD_ROW: Final = (
    "SELECT 3, channel, peer, priority, seq, id, 0, attempts, length(body), headers, due, place FROM held "
)

# -- browsing: one group (a channel, or a peer) or all of a table, after a key ---------------------

BROWSE_INBOX_ONE: Final = _INBOX_ROW + "WHERE channel=? AND (priority, id) > (?, ?) ORDER BY priority, id LIMIT ?"
BROWSE_INBOX_ALL: Final = (
    _INBOX_ROW + "WHERE (channel, priority, id) > (?, ?, ?) ORDER BY channel, priority, id LIMIT ?"
)
BROWSE_DELAYED_ONE: Final = _DELAYED_ROW + "WHERE channel=? AND (due, id) > (?, ?) ORDER BY due, id LIMIT ?"
BROWSE_DELAYED_ALL: Final = _DELAYED_ROW + "WHERE (channel, due, id) > (?, ?, ?) ORDER BY channel, due, id LIMIT ?"
BROWSE_OUTBOX_ONE: Final = _OUTBOX_ROW + "WHERE peer=? AND (priority, id) > (?, ?) ORDER BY priority, id LIMIT ?"
BROWSE_OUTBOX_ALL: Final = (
    _OUTBOX_ROW + "WHERE (peer, priority, id) > (?, ?, ?) ORDER BY peer, priority, id LIMIT ?"
)
BROWSE_HELD_CHANNEL: Final = _HELD_ROW + "WHERE channel=? AND peer IS NULL AND seq>? ORDER BY seq LIMIT ?"
BROWSE_HELD_PEER: Final = _HELD_ROW + "WHERE peer=? AND seq>? ORDER BY seq LIMIT ?"
BROWSE_HELD_ALL: Final = _HELD_ROW + "WHERE seq>? ORDER BY seq LIMIT ?"

PREVIEW_INBOX: Final = "SELECT substr(body, 1, ?) FROM inbox WHERE channel=? AND priority=? AND id=?"
PREVIEW_DELAYED: Final = "SELECT substr(body, 1, ?) FROM delayed WHERE channel=? AND due=? AND id=?"
PREVIEW_OUTBOX: Final = "SELECT substr(body, 1, ?) FROM outbox WHERE peer=? AND priority=? AND id=?"
PREVIEW_HELD: Final = "SELECT substr(body, 1, ?) FROM held WHERE seq=?"
HELD_MAX_SEQ: Final = "SELECT ifnull(max(seq), 0) FROM held"

# -- finding by id: the inbox and outbox are keyed (group, priority, id), so an id is looked up in
# each (group, priority) pair found by skipping through the key; delayed rows by one scan.

INBOX_NEXT_GROUP: Final = (
    "SELECT channel, priority FROM inbox WHERE (channel, priority) > (?, ?) ORDER BY channel, priority LIMIT 1"
)
OUTBOX_NEXT_GROUP: Final = (
    "SELECT peer, priority FROM outbox WHERE (peer, priority) > (?, ?) ORDER BY peer, priority LIMIT 1"
)
LOCATE_INBOX: Final = _INBOX_ROW + "WHERE channel=? AND priority=? AND id=?"
LOCATE_OUTBOX: Final = _OUTBOX_ROW + "WHERE peer=? AND priority=? AND id=?"
LOCATE_HELD: Final = _HELD_ROW + "WHERE id=? ORDER BY seq"
_CACHE: dict[tuple[str, int], str] = {}


def _in_list(base: str, n: int) -> str:
    key = (base, n)
    s = _CACHE.get(key)
    if s is None:
        s = base + "WHERE id IN (" + ",".join("?" * n) + ")"
        _CACHE[key] = s
    return s


def locate_delayed(n: int) -> str:
    """Delayed rows of ``n`` ids: one scan of ``delayed`` for them all."""
    return _in_list(_DELAYED_ROW, n)


def locate_inbox_scan(n: int) -> str:
    """Inbox rows of ``n`` ids by one scan (when the key has too many (channel, priority) pairs to skip)."""
    return _in_list(_INBOX_ROW, n)


def locate_outbox_scan(n: int) -> str:
    """Outbox rows of ``n`` ids by one scan (as :func:`locate_inbox_scan`)."""
    return _in_list(_OUTBOX_ROW, n)


# the rest of one located row: body, job, expires, origin, deliver_at
DETAIL_INBOX: Final = (
    "SELECT body, job, expires, origin, deliver_at FROM inbox WHERE channel=? AND priority=? AND id=?"
)
DETAIL_DELAYED: Final = "SELECT body, job, expires, origin, NULL FROM delayed WHERE channel=? AND due=? AND id=?"
DETAIL_OUTBOX: Final = (
    "SELECT body, NULL, expires, origin, deliver_at FROM outbox WHERE peer=? AND priority=? AND id=?"
)
DETAIL_HELD: Final = "SELECT body, job, expires, origin, deliver_at FROM held WHERE seq=?"


# -- moves in and out of the hold queue ------------------------------------------------------------

_TO_HELD: Final = (
    "INSERT INTO held(id, place, channel, peer, priority, due, job, attempts, body, headers, expires, origin, "
    "deliver_at, held_at) "
)
INBOX_TO_HELD: Final = _TO_HELD + (
    "SELECT id, 0, channel, NULL, priority, NULL, job, attempts, body, headers, expires, origin, deliver_at, ? "
    "FROM inbox WHERE channel=? AND priority=? AND id=? AND lease_until<=?"
)
DELAYED_TO_HELD: Final = _TO_HELD + (
    "SELECT id, 1, channel, NULL, priority, due, job, attempts, body, headers, expires, origin, NULL, ? "
    "FROM delayed WHERE channel=? AND due=? AND id=?"
)
OUTBOX_TO_HELD: Final = _TO_HELD + (
    "SELECT id, 2, channel, peer, priority, NULL, NULL, tries, body, headers, expires, origin, deliver_at, ? "
    "FROM outbox WHERE peer=? AND priority=? AND id=?"
)
HELD_TO_INBOX: Final = (
    "INSERT OR IGNORE INTO inbox(channel, priority, id, lease_until, attempts, job, body, headers, expires, "
    "origin, deliver_at) SELECT channel, priority, id, 0, attempts, job, body, headers, expires, origin, "
    "ifnull(deliver_at, due) FROM held WHERE seq=? AND job IS NOT NULL"
)
HELD_TO_DELAYED: Final = (
    "INSERT OR IGNORE INTO delayed(channel, due, id, job, priority, body, headers, expires, origin, attempts) "
    "SELECT channel, due, id, job, priority, body, headers, expires, origin, attempts FROM held "
    "WHERE seq=? AND due IS NOT NULL AND job IS NOT NULL"
)
HELD_TO_OUTBOX: Final = (
    "INSERT OR IGNORE INTO outbox(peer, priority, id, tries, channel, body, headers, expires, origin, deliver_at) "
    "SELECT peer, priority, id, attempts, channel, body, headers, expires, origin, deliver_at FROM held "
    "WHERE seq=? AND peer IS NOT NULL"
)
HELD_DELETE: Final = "DELETE FROM held WHERE seq=?"

# -- deleting for good (a leased message is its consumer's: never deleted under it) ----------------

INBOX_DELETE_UNLEASED: Final = "DELETE FROM inbox WHERE channel=? AND priority=? AND id=? AND lease_until<=?"

# -- the audit of destructive actions --------------------------------------------------------------

AUDIT_INSERT: Final = "INSERT INTO audit(at, who, action, target, count, detail) VALUES (?,?,?,?,?,?)"
AUDIT_TRIM: Final = "DELETE FROM audit WHERE seq<=?"
AUDIT_LIST: Final = "SELECT at, who, action, target, count, detail FROM audit ORDER BY seq DESC LIMIT ?"
