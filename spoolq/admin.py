"""Queue administration on a spool: ``spool.admin`` (Postfix's mailq / postsuper for spoolq).

Every call validates what it is given (errors name the field) and works through
the store (``spoolq.store.admin`` holds the theory of operation: the hold queue,
keyset paging, what a leased message does). The CLI and the node's HTTP admin
API both call these methods; neither touches the store itself.

``spool.admin.browse(filters=None, after=None, limit=100) -> (list[AdminMessage], next_cursor | None)``
``spool.admin.find(message_id) -> list[AdminMessage]`` (every stored copy, with headers and body)
``spool.admin.hold / release / requeue / delete(ids=None, *, filter=None, dry_run=False, who="local",
progress=None) -> (matched, changed)``
``spool.admin.audit(who, action, target, count, detail="")`` and ``spool.admin.audit_log(limit=100)``

``filters`` is a :class:`Filter` or a mapping with the keys of the HTTP API:
``channel``, ``peer``, ``state`` (ready|delayed|leased|held), ``older_than`` /
``newer_than`` (seconds of age), ``min_priority`` / ``max_priority``,
``header`` (``"Name=value"``, exact match).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from .errors import InvalidArgument, NotFound
from .message import MAX_PRIORITY, MAX_SECONDS, check_channel, id_bytes, id_text_from_bytes
from .store.admin import ACTIONS, STATES, Action, Admin, AdminMessage, AuditEntry, Filter, Progress

__all__ = ["AdminOps", "AdminMessage", "AuditEntry", "Filter", "parse_filter", "FILTER_KEYS", "STATES",
           "ACTIONS", "MAX_LIMIT", "MAX_IDS"]

FILTER_KEYS: Final = ("channel", "peer", "state", "older_than", "newer_than", "min_priority", "max_priority",
                      "header")
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
MAX_IDS: Final = 10_000
MAX_AUDIT: Final = 10_000


def _bad(field: str, what: str, hint: str | None = None) -> InvalidArgument:
    return InvalidArgument(f"{field}: {what}", hint=hint)


def _number(field: str, value: object, strings: bool) -> float:
    if strings and isinstance(value, str):
        text = value
        try:
            value = float(text)
        except ValueError:
            raise _bad(field, f"not a number of seconds: {text[:50]!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(field, f"must be a number of seconds, not {type(value).__name__}")
    v = float(value)
    if not 0 <= v <= MAX_SECONDS:  # also refuses NaN
        raise _bad(field, f"must be 0 to {MAX_SECONDS:.0f} seconds, not {value!r}")
    return v


def _int(field: str, value: object, strings: bool, lo: int, hi: int) -> int:
    if strings and isinstance(value, str):
        text = value
        try:
            value = int(text) if len(text) <= 20 else None
        except ValueError:
            raise _bad(field, f"not an integer: {text[:50]!r}") from None
    if type(value) is not int:
        raise _bad(field, f"must be an integer, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise _bad(field, f"must be {lo} to {hi}, not {value}")
    return value


def _name(field: str, value: object) -> str:
    if type(value) is not str:
        raise _bad(field, f"must be a string, not {type(value).__name__}")
    if not 1 <= len(value) <= 1000:
        raise _bad(field, "must be 1 to 1000 characters")
    return value


def parse_filter(value: Filter | Mapping[str, Any] | None, *, strings: bool = False) -> Filter:
    """Validate a filter given as a mapping (JSON object, or query string values with ``strings``).

    Raises:
        InvalidArgument: naming the bad field (an unknown key, a wrong type or range).
    """
    if value is None:
        return Filter()
    if isinstance(value, Filter):
        value = {k: getattr(value, k) for k in FILTER_KEYS if getattr(value, k) is not None}
    if not isinstance(value, Mapping):
        raise _bad("filter", f"must be an object, not {type(value).__name__}")
    unknown = [k for k in value if k not in FILTER_KEYS]
    if unknown:
        raise _bad(f"filter.{str(unknown[0])[:50]}", "unknown filter", hint=f"use {', '.join(FILTER_KEYS)}")
    get = {k: v for k, v in value.items() if v is not None}
    state = get.get("state")
    if state is not None and state not in STATES:
        raise _bad("state", f"must be one of {', '.join(STATES)}, not {str(state)[:50]!r}")
    header = get.get("header")
    pair: tuple[str, str] | None = None
    if header is not None:
        if isinstance(header, (list, tuple)) and len(header) == 2 and all(type(x) is str for x in header):
            pair = (header[0], header[1])
        elif type(header) is str and "=" in header:
            name, _, val = header.partition("=")
            pair = (name, val)
        else:
            raise _bad("header", "must be 'Name=value'", hint="e.g. header=tenant=acme (exact match)")
        if not pair[0] or len(pair[0]) + len(pair[1]) > 8192:
            raise _bad("header", "needs a name, and at most 8 KiB in all")
    channel = get.get("channel")
    if channel is not None:
        try:
            check_channel(channel)
        except InvalidArgument as e:
            raise _bad("channel", str(e), e.hint) from None
    lo = hi = None
    if "min_priority" in get:
        lo = _int("min_priority", get["min_priority"], strings, 0, MAX_PRIORITY)
    if "max_priority" in get:
        hi = _int("max_priority", get["max_priority"], strings, 0, MAX_PRIORITY)
    return Filter(
        channel=channel,
        peer=None if get.get("peer") is None else _name("peer", get["peer"]),
        state=state,
        older_than=None if "older_than" not in get else _number("older_than", get["older_than"], strings),
        newer_than=None if "newer_than" not in get else _number("newer_than", get["newer_than"], strings),
        min_priority=lo, max_priority=hi, header=pair)


def parse_ids(ids: object) -> list[bytes]:
    """Validate a list of message ids (at most ``MAX_IDS``); duplicates are dropped."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise _bad("ids", "must be a list of message ids", hint='e.g. {"ids": ["0190c6a2-..."]}')
    if len(ids) > MAX_IDS:
        raise _bad("ids", f"at most {MAX_IDS} ids per call, not {len(ids)}", hint="split the list, or use a filter")
    out: dict[bytes, None] = {}
    for i, x in enumerate(ids):
        try:
            out[id_bytes(x)] = None
        except InvalidArgument as e:
            raise _bad(f"ids[{i}]", str(e), e.hint) from None
    return list(out)


def describe(ids: Sequence[bytes] | None, f: Filter | None) -> str:
    """The audit's ``target`` for a selection."""
    if ids is not None:
        shown = ", ".join(id_text_from_bytes(b) for b in ids[:3])
        return f"ids {shown}" + (f" (+{len(ids) - 3} more)" if len(ids) > 3 else "")
    assert f is not None
    parts = [f"{k}={getattr(f, k)!r}" if k != "header" else f"header={f.header[0]}={f.header[1]}"  # type: ignore[index]
             for k in FILTER_KEYS if getattr(f, k) is not None]
    return "filter " + (" ".join(parts) if parts else "(everything)")


class AdminOps:
    """A spool's queue administration (``spool.admin``): see the module docstring."""

    def __init__(self, admin: Admin) -> None:
        self._admin = admin

    def browse(self, filters: Filter | Mapping[str, Any] | None = None, after: str | None = None,
               limit: int = DEFAULT_LIMIT) -> tuple[list[AdminMessage], str | None]:
        """List messages without leasing them, a page at a time.

        Args:
            filters: which messages (see :func:`parse_filter`).
            after: the ``next`` cursor of the previous page (opaque).
            limit: 1 to 1000 messages.

        Returns:
            ``(messages, next)``: ``next`` is ``None`` at the end. A very selective filter may
            return fewer messages than ``limit`` (even none) with a ``next`` to go on from.

        Raises:
            InvalidArgument: a bad filter, limit or cursor (naming it).
        """
        f = parse_filter(filters)
        n = _int("limit", limit, False, 1, MAX_LIMIT)
        if after is not None and type(after) is not str:
            raise _bad("after", "must be the string a previous page gave as 'next'")
        return self._admin.browse(f, after, n)

    def find(self, message_id: str) -> list[AdminMessage]:
        """Every stored copy of one message (inbox, delayed, outbox, held), with headers and body.

        Raises:
            NotFound: the id is nowhere (a dead letter is shown by ``spool.dead_letter``).
        """
        try:
            idb = id_bytes(message_id)
        except InvalidArgument as e:
            raise _bad("id", str(e), e.hint) from None
        found = self._admin.find([idb])
        if not found:
            raise NotFound(f"no message with id {message_id} is stored (not in any inbox, outbox or hold)",
                           hint="it may have been acked or forwarded; dead letters: spool.dead_letter(id)")
        return found

    def _act(self, action: Action, ids: object, filter: Filter | Mapping[str, Any] | None, dry_run: bool,
             who: str, progress: Progress | None) -> tuple[int, int]:
        if (ids is None) == (filter is None):
            raise InvalidArgument(f"{action}: give either ids or a filter (one of them)",
                                  hint="an empty filter ({}) selects every message")
        if type(dry_run) is not bool:
            raise _bad("dry_run", f"must be true or false, not {type(dry_run).__name__}")
        who = _name("who", who)
        idbs = parse_ids(ids) if ids is not None else None
        f = parse_filter(filter) if filter is not None else None
        matched, changed = self._admin.act(action, idbs, f, dry_run, progress)
        if not dry_run:
            self._admin.audit(who, action, describe(idbs, f), changed, f"matched {matched}")
        return matched, changed

    def hold(self, ids: Sequence[str] | None = None, *, filter: Filter | Mapping[str, Any] | None = None,
             dry_run: bool = False, who: str = "local", progress: Progress | None = None) -> tuple[int, int]:
        """Hold messages (by ``ids`` or ``filter``): neither leased nor forwarded until released.

        Leased messages are skipped (matched, not changed). ``progress(matched, changed)`` is called
        after each page. Not a dry run: recorded in the audit as ``who``.

        Returns:
            ``(matched, changed)``.
        """
        return self._act("hold", ids, filter, dry_run, who, progress)

    def release(self, ids: Sequence[str] | None = None, *, filter: Filter | Mapping[str, Any] | None = None,
                dry_run: bool = False, who: str = "local", progress: Progress | None = None) -> tuple[int, int]:
        """Put held messages back exactly where they were (ready, delayed until their due time, or in
        their peer's outbox). Returns ``(matched, changed)``."""
        return self._act("release", ids, filter, dry_run, who, progress)

    def requeue(self, ids: Sequence[str] | None = None, *, filter: Filter | Mapping[str, Any] | None = None,
                dry_run: bool = False, who: str = "local", progress: Progress | None = None) -> tuple[int, int]:
        """Make delayed or held messages ready now (held outbox messages go back to their outbox).
        Returns ``(matched, changed)``."""
        return self._act("requeue", ids, filter, dry_run, who, progress)

    def delete(self, ids: Sequence[str] | None = None, *, filter: Filter | Mapping[str, Any] | None = None,
               dry_run: bool = False, who: str = "local", progress: Progress | None = None) -> tuple[int, int]:
        """Remove messages for good (not leased ones). Returns ``(matched, changed)``."""
        return self._act("delete", ids, filter, dry_run, who, progress)

    def audit(self, who: str, action: str, target: str, count: int, detail: str = "") -> None:
        """Record a destructive action done elsewhere (e.g. ``dead retry``) in the audit."""
        self._admin.audit(_name("who", who), _name("action", action), str(target), int(count), str(detail))

    def audit_log(self, limit: int = DEFAULT_LIMIT) -> list[AuditEntry]:
        """The newest audit entries, newest first (the spool keeps the newest 10,000)."""
        return self._admin.audit_log(_int("limit", limit, False, 1, MAX_AUDIT))
