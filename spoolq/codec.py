"""Peer batches on the wire: MessagePack (msgspec), versioned. No I/O here.

Framing rules
=============

A node forwards messages to a peer as one HTTP ``POST /v1/batches`` whose body
is a single MessagePack value, a **batch**; the peer answers with a **reply**.
Both are MessagePack *arrays* (positional, so they are small and fast), and
both start with the protocol version. A decoder

* refuses a body over ``max_bytes`` before looking at it (``too_large``),
* refuses anything that is not exactly the shape below (``malformed``; a
  truncated body is malformed),
* refuses another version (``unsupported_version``),
* refuses more than ``max_messages`` messages (``too_many_messages``),

and raises :class:`~spoolq.errors.CodecError` with that code, and nothing else.
Those are faults of the whole batch. A single message that breaks a rule
(channel name, priority range, size, headers) is not a decoding error: the
batch is accepted and that message is *rejected* in the reply, for good.

Batch, version 1::

    fixarray(3)
    ├─ v         uint         1
    ├─ sender    str          node id of the sending node
    └─ messages  array(n)     n <= max_messages, each:
       fixarray(8)
       ├─ id          bin 16      the message id (UUIDv7 bytes); dedup key
       ├─ channel     str         [A-Za-z0-9._-]{1,200}
       ├─ body        bin
       ├─ priority    uint        0 .. 2**32-1
       ├─ headers     map|nil     str -> str
       ├─ deliver_at  int|nil     Unix ms; not ready before (delay)
       ├─ expires     int|nil     Unix ms; dead letter after (TTL)
       └─ origin      str|nil     node id that created the message; nil: the sender did

Reply, version 1 (one result per message, in batch order)::

    fixarray(2)
    ├─ v         uint         1
    └─ results   array(n)
       fixarray(3)
       ├─ status     uint      0 accepted, 1 duplicate (already seen), 2 rejected
       ├─ reason     str|nil   why it was rejected
       └─ permanent  bool      rejected for good (true) or try again later (false)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

from .errors import CodecError
from .message import CHANNEL_RE, MAX_HEADER_NAME, MAX_HEADERS, MAX_PRIORITY

__all__ = [
    "VERSION",
    "ACCEPTED",
    "DUPLICATE",
    "REJECTED",
    "WireMessage",
    "WireRow",
    "Batch",
    "Result",
    "Reply",
    "encode_batch",
    "decode_batch",
    "encode_reply",
    "decode_reply",
    "check_message",
    "check_messages",
    "ACCEPTED_RESULT",
]

VERSION: Final = 1
ACCEPTED: Final = 0
DUPLICATE: Final = 1
REJECTED: Final = 2
DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
DEFAULT_MAX_MESSAGES: Final = 10_000
# what a sender puts in one batch by default (a receiver accepts up to the limits above)
BATCH_MESSAGES: Final = 4000  # issue 15: 1.65x the forwarding rate of 1,000 on a loaded 2-core box (same as 8,000)
BATCH_BYTES: Final = 4 << 20
MAX_IN_FLIGHT: Final = 4
MAX_SENDER: Final = 200  # a node id is 36 characters
# ids carry their creation time; a receiver refuses ids made too far from its own clock (they would never
# be forgotten from `seen`, or would age and order as if decades old)
MAX_ID_AHEAD_MS: Final = 86_400_000  # 1 day of clock skew
MAX_ID_AGE_MS: Final = 365 * 86_400_000


class WireMessage(msgspec.Struct, array_like=True, frozen=True):
    id: bytes
    channel: str
    body: bytes
    priority: int = 1024
    headers: dict[str, str] | None = None
    deliver_at: int | None = None
    expires: int | None = None
    origin: str | None = None


class Batch(msgspec.Struct, array_like=True, frozen=True):
    v: int
    sender: str
    messages: list[WireMessage]


class Result(msgspec.Struct, array_like=True, frozen=True):
    status: int
    reason: str | None = None
    permanent: bool = False


class Reply(msgspec.Struct, array_like=True, frozen=True):
    v: int
    results: list[Result]


class _Version(msgspec.Struct, array_like=True):
    v: int


# The decoders read fixed-length tuples, not the structs above: a struct with
# defaults would accept a message or result array with fields missing (and
# ignore extra ones), and the rule is "exactly the shape above".
_MessageTuple = tuple[bytes, str, bytes, int, dict[str, str] | None, int | None, int | None, str | None]
_ResultTuple = tuple[int, str | None, bool]
# What msgspec raises on bad input: DecodeError (ValidationError is a subclass),
# UnicodeDecodeError for a str that is not UTF-8, RecursionError for deep nesting.
_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)

_enc = msgspec.msgpack.Encoder()
_batch_dec = msgspec.msgpack.Decoder(tuple[int, str, list[_MessageTuple]])
_reply_dec = msgspec.msgpack.Decoder(tuple[int, list[_ResultTuple]])
_version_dec = msgspec.msgpack.Decoder(_Version)


# A message as a tuple of its fields in WireMessage order (an outbox record is one): encoded the same way
WireRow = tuple[bytes, str, bytes, int, dict[str, str] | None, int | None, int | None, str | None]


def encode_batch(sender: str, messages: Sequence[WireMessage] | Sequence[WireRow]) -> bytes:
    """A batch of ``messages``: ``WireMessage`` structs, or tuples of their fields in that order (the
    same bytes; a tuple costs no object per message when the caller has them already)."""
    return _enc.encode((VERSION, sender, messages))


def encode_reply(results: list[Result]) -> bytes:
    return _enc.encode(Reply(VERSION, results))


def _check_version(raw: bytes, what: str) -> None:
    try:
        v = _version_dec.decode(raw).v
    except _DECODE_ERRORS:
        return  # not even the version is readable: the full decode reports it as malformed
    if v != VERSION:
        raise CodecError(
            f"{what} has protocol version {v}; this node speaks version {VERSION}",
            code="unsupported_version",
            hint="run the same spoolq protocol version on both nodes",
        )


def decode_batch(raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_messages: int = DEFAULT_MAX_MESSAGES) -> Batch:
    """Decode a peer batch, enforcing the whole-batch rules above.

    Raises:
        CodecError: with ``code`` ``too_large``, ``malformed``,
            ``unsupported_version`` or ``too_many_messages``.
    """
    if len(raw) > max_bytes:
        raise CodecError(
            f"batch of {len(raw)} bytes is over the limit of {max_bytes}",
            code="too_large",
            hint="send smaller batches",
        )
    _check_version(raw, "batch")
    try:
        v, sender, messages = _batch_dec.decode(raw)
    except _DECODE_ERRORS as e:
        raise CodecError(f"malformed batch: {e}", code="malformed") from None
    if not 0 < len(sender) <= MAX_SENDER:
        raise CodecError(
            f"batch sender must be a node id of 1 to {MAX_SENDER} characters, not {len(sender)}",
            code="malformed",
            hint="the sender is the sending node's id",
        )
    if len(messages) > max_messages:
        raise CodecError(
            f"batch of {len(messages)} messages is over the limit of {max_messages}",
            code="too_many_messages",
            hint="send smaller batches",
        )
    return Batch(v, sender, [WireMessage(*m) for m in messages])


ACCEPTED_RESULT: Final = Result(ACCEPTED)  # frozen: one instance serves every accepted message
_ACCEPTED_TUPLE: Final = (ACCEPTED, None, False)


def decode_reply(raw: bytes, *, expected: int) -> Reply:
    """Decode a peer's reply to a batch of ``expected`` messages.

    Raises:
        CodecError: malformed, another version, or not one result per message.
    """
    _check_version(raw, "reply")
    try:
        v, results = _reply_dec.decode(raw)
    except _DECODE_ERRORS as e:
        raise CodecError(f"malformed reply: {e}", code="malformed") from None
    if len(results) != expected:
        raise CodecError(f"reply has {len(results)} results for {expected} messages", code="malformed")
    if results.count(_ACCEPTED_TUPLE) == expected:  # the usual reply: no object built per message
        return Reply(v, [ACCEPTED_RESULT] * expected)
    reply = Reply(v, [Result(*r) for r in results])
    for r in reply.results:
        if r.status not in (ACCEPTED, DUPLICATE, REJECTED):
            raise CodecError(f"reply has unknown status {r.status}", code="malformed")
    return reply


def check_messages(messages: list[WireMessage], max_message_size: int, now_ms: int) -> list[str | None]:
    """:func:`check_message` for each message of a batch (with ``now_ms``), in order.

    A plain message (no headers, delay or TTL) of a channel name already found good in this batch
    is checked inline, without a call per message; any other goes through ``check_message``.
    """
    ok_channels: set[str] = set()
    # the id's time is its first 6 bytes, big-endian: compare whole 16-byte ids with the bounds
    low, high = now_ms - MAX_ID_AGE_MS, now_ms + MAX_ID_AHEAD_MS
    if 0 <= low and high < 1 << 48:
        lo, hi = low.to_bytes(6, "big") + bytes(10), high.to_bytes(6, "big") + b"\xff" * 10
    else:  # a clock beyond what 6 bytes of ids hold: every message goes through check_message
        lo, hi = b"\xff" * 17, b""
    out: list[str | None] = []
    for m in messages:
        idb = m.id
        if (m.channel in ok_channels and len(idb) == 16 and lo <= idb <= hi and m.headers is None
                and 0 <= m.priority <= MAX_PRIORITY and len(m.body) <= max_message_size
                and m.deliver_at is None and m.expires is None and (m.origin is None or 0 < len(m.origin) <= 200)):
            out.append(None)
            continue
        reason = check_message(m, max_message_size, now_ms)
        if reason is None:
            ok_channels.add(m.channel)
        out.append(reason)
    return out


def check_message(m: WireMessage, max_message_size: int, now_ms: int | None = None) -> str | None:
    """The per-message rules. Returns why ``m`` must be rejected (for good), or ``None``.

    With ``now_ms``, the id's time must lie within a day ahead of and a year behind it.
    """
    if len(m.id) != 16:
        return f"id must be 16 bytes, not {len(m.id)}"
    if now_ms is not None:
        made = int.from_bytes(m.id[:6], "big")
        if not now_ms - MAX_ID_AGE_MS <= made <= now_ms + MAX_ID_AHEAD_MS:
            return f"id time {made} ms is too far from this node's clock ({now_ms} ms)"
    if CHANNEL_RE.fullmatch(m.channel) is None:
        return f"bad channel name {m.channel[:210]!r}"
    if not 0 <= m.priority <= MAX_PRIORITY:
        return f"priority {m.priority} out of range"
    size = len(m.body)
    if m.headers:
        if len(m.headers) > MAX_HEADERS:
            return f"{len(m.headers)} headers is over the limit of {MAX_HEADERS}"
        for k in m.headers:
            if not k or len(k) > MAX_HEADER_NAME:
                return f"header name {k[:40]!r} must be 1 to {MAX_HEADER_NAME} characters"
        size += len(_enc.encode(m.headers))  # in bytes, as the spool counts them when it sends
    if size > max_message_size:
        return f"message of {size} bytes is over max_message_size ({max_message_size})"
    for t in (m.deliver_at, m.expires):
        if t is not None and not 0 <= t < 1 << 53:
            return "timestamps must be Unix milliseconds"
    if m.origin is not None and not 0 < len(m.origin) <= 200:
        return "origin must be a node id"
    return None
