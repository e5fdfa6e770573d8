"""What an outbox row holds, how it is checked and how it goes into the spool.

An outbox row is a message that the application's own transaction wrote next to
its data. It carries everything ``Spool.send`` takes, checked with the very same
functions at ``send`` time, so a row that commits can always be handed off.

Rows keep the time they were written (``created_ms``): a ``delay`` or ``ttl`` runs
from the application's commit, not from the relay's hand-off.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..message import (
    DEFAULT_PRIORITY,
    check_body,
    check_channel,
    check_headers,
    check_priority,
    check_seconds,
    encode_headers,
    id_bytes,
    id_text_from_bytes,
    new_id,
)
from ..routing import check_to
from ..spool import DEFAULT_MAX_MESSAGE_SIZE, Spool

TABLE = "spoolq_outbox"
NOTIFY_CHANNEL = "spoolq_outbox"


@dataclass(frozen=True, slots=True)
class Row:
    """One committed outbox row, as the relay reads it."""

    seq: int
    id: str
    channel: str
    body: bytes
    options: dict[str, Any]
    created_ms: int


def check_send(
    body: object,
    channel: object,
    *,
    to: str | Sequence[str] | None = None,
    priority: int = DEFAULT_PRIORITY,
    delay: float = 0,
    ttl: float | None = None,
    headers: dict[str, str] | None = None,
    id: str | bytes | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> tuple[str, bytes, str, str]:
    """Validate ``send`` arguments exactly as :meth:`Spool.send` does.

    Returns:
        (id text, body, channel, options as JSON text).

    Raises:
        InvalidArgument (and its subclasses): nothing is to be written.
    """
    name = check_channel(channel)
    raw = check_body(body, max_message_size)
    check_priority(priority)
    d = check_seconds("delay", delay) or 0.0
    t = check_seconds("ttl", ttl, allow_zero=False, allow_none=True)
    hdrs = check_headers(headers)
    hblob = encode_headers(hdrs)
    if hblob is not None and len(raw) + len(hblob) > max_message_size:
        check_body(raw + hblob, max_message_size)  # raises MessageTooLarge with the usual wording
    peers = check_to(to)
    mid = new_id() if id is None else id_text_from_bytes(id_bytes(id))
    opts: dict[str, Any] = {}
    if peers is not None:
        opts["to"] = peers
    if priority != DEFAULT_PRIORITY:
        opts["priority"] = priority
    if d:
        opts["delay"] = d
    if t is not None:
        opts["ttl"] = t
    if hdrs:
        opts["headers"] = hdrs
    return mid, raw, name, json.dumps(opts, separators=(",", ":"))


def now_ms() -> int:
    return int(time.time() * 1000)


def hand_off(spool: Spool, rows: Sequence[Row], to: str | Sequence[str] | None, now: float) -> None:
    """Put rows into the spool under their own ids (idempotent: the spool drops ids it has seen).

    Rows with the same channel and options go in one ``send_many``: one transaction each.
    """
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.channel, json.dumps(r.options, sort_keys=True)), []).append(r)
    for (channel, _), group in groups.items():
        opts = dict(group[0].options)
        if "to" not in opts and to is not None:
            opts["to"] = to
        if "delay" in opts or "ttl" in opts:  # times run from the commit: each row on its own
            for r in group:
                o = dict(opts)
                age = max(0.0, now - r.created_ms / 1000)
                if "delay" in o:
                    o["delay"] = max(0.0, o["delay"] - age)
                if "ttl" in o:
                    o["ttl"] = max(0.001, o["ttl"] - age)
                spool.send_many([r.body], channel, ids=[r.id], **o)
        else:
            spool.send_many([r.body for r in group], channel, ids=[r.id for r in group], **opts)
