"""The message model: ids, field rules, and the read-only views handed to callers.

Ids are 128-bit, time-ordered and unique across processes and hosts. They follow
the UUIDv7 layout of RFC 9562, so their text form is an ordinary UUID string and
sorts in creation order::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                     unix_ts_ms (48 bits)                      |
    +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                               | ver=7 |   rand_a (12 bits)    |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |var|                  rand_b (62 bits)                         |
    +-+-+                                                           +
    |                                                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

Within one process, ids made in the same millisecond count up from a random
start in ``rand_b`` (RFC 9562, "monotonic random"), so a batch of ``n`` ids is
``n`` consecutive integers: cheap to make and strictly increasing. Processes
draw independent random starts, and a forked child draws a new one.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from .errors import InvalidArgument, InvalidChannel, InvalidType, MessageTooLarge

__all__ = [
    "DEFAULT_PRIORITY",
    "MAX_PRIORITY",
    "DeadLetter",
    "Message",
    "id_time",
    "new_id",
]

DEFAULT_PRIORITY: Final = 1024
MAX_PRIORITY: Final = 0xFFFF_FFFF
MAX_HEADERS: Final = 64
MAX_HEADER_NAME: Final = 256
MAX_SECONDS: Final = 1e9  # durations (delay, ttl, visibility, wait): about 30 years
CHANNEL_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,200}")

_MASK62: Final = (1 << 62) - 1
_FIXED: Final = (0x7 << 76) | (0b10 << 62)  # version and variant bits


_rng = random.Random()  # seeded from os.urandom


class _IdGenerator:
    """Hands out blocks of consecutive, increasing ids (as 128-bit ints)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ms = 0
        self._next = 0

    def reset(self) -> None:
        """Forget the counter (called in a forked child, which must not repeat the parent)."""
        _rng.seed()  # from os.urandom
        self._lock = threading.Lock()
        self._ms = 0
        self._next = 0

    @staticmethod
    def _start(ms: int) -> int:
        # 80 random bits from a private Mersenne Twister seeded from os.urandom (and reseeded in
        # every forked child): all that uniqueness across processes needs, without a getrandom()
        # system call per millisecond. Private, so that a program calling random.seed() in every
        # process cannot make two processes draw the same ids.
        rnd = _rng.getrandbits(80)
        rand_a = rnd >> 68  # 12 bits
        rand_b = rnd & ((1 << 61) - 1)  # 61 bits: leaves 2**61 of room to count up
        return (ms << 80) | _FIXED | (rand_a << 64) | rand_b

    def take(self, n: int = 1) -> int:
        """Return the first of ``n`` consecutive new ids."""
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms > self._ms:
                self._ms = ms
                self._next = self._start(ms)
            first = self._next
            if (first & _MASK62) + n > _MASK62:  # counter would run into the variant bits
                self._ms += 1
                first = self._start(self._ms)
            self._next = first + n
            return first


_ids = _IdGenerator()
os.register_at_fork(after_in_child=_ids.reset)


_take_ids: Final = _ids.take  # the first of n new ids (the bound method: one call less per send)


_LOW48: Final = (1 << 48) - 1
# The text up to the last group of the id formatted last, by its bits above the low 48 (issue 9): ids taken
# in one millisecond differ in their low bits only, so most ids need only their last 12 digits formatted.
# One tuple, replaced whole: threads share it safely.
_id_prefix: tuple[int, str] = (-1, "")


def id_text(n: int) -> str:
    """Text form of an id given as an int (a UUID string)."""
    global _id_prefix
    hi, prefix = _id_prefix
    if hi != n >> 48:
        h = f"{n:032x}"
        prefix = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-"
        _id_prefix = (n >> 48, prefix)
    return prefix + "%012x" % (n & _LOW48)


def id_text_from_bytes(b: bytes) -> str:
    """Text form of an id given as its 16 stored bytes."""
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_id() -> str:
    """Make a new message id.

    Pass it to ``send(id=...)`` to make retries of that send idempotent.

    Returns:
        The id in text form (a UUID string that sorts in creation order).
    """
    return id_text(_ids.take(1))


def id_bytes(value: object) -> bytes:
    """Parse a caller-supplied id into its 16 stored bytes.

    Args:
        value: a UUID string, a :class:`uuid.UUID`, or 16 raw bytes.

    Raises:
        InvalidType: for other types.
        InvalidArgument: for a string that is not a UUID.
    """
    if isinstance(value, str):
        try:
            return uuid.UUID(value).bytes
        except ValueError:
            raise InvalidArgument(
                f"id {value!r} is not a 128-bit id in UUID text form",
                hint="use spoolq.new_id() to make one, or pass an id that send() returned",
            ) from None
    if isinstance(value, uuid.UUID):
        return value.bytes
    if isinstance(value, (bytes, bytearray)) and len(value) == 16:
        return bytes(value)
    raise InvalidType(
        f"id must be a UUID string, a uuid.UUID or 16 bytes, not {type(value).__name__}",
        hint="use spoolq.new_id() to make one",
    )


def id_time(message_id: str | bytes) -> float:
    """Creation time (Unix seconds) encoded in an id."""
    b = id_bytes(message_id)
    return int.from_bytes(b[:6], "big") / 1000.0


def _ms_of(b: bytes) -> int:
    return int.from_bytes(b[:6], "big")


# -- field rules ---------------------------------------------------------------


def check_channel(name: object) -> str:
    """Validate a channel name (``[A-Za-z0-9._-]{1,200}``) and return it."""
    if type(name) is not str:
        raise InvalidType(
            f"channel must be a str, not {type(name).__name__}",
            hint="channel names are short strings such as 'emails' or 'sync.orders'",
        )
    if CHANNEL_RE.fullmatch(name) is None:
        raise InvalidChannel(
            f"bad channel name {name[:210]!r}",
            hint="use 1 to 200 characters from A-Z a-z 0-9 . _ -",
        )
    return name


def check_priority(priority: object) -> int:
    """Validate a priority (unsigned 32-bit; lower is more urgent)."""
    if type(priority) is not int:
        raise InvalidType(
            f"priority must be an int, not {type(priority).__name__}",
            hint=f"use 0 (most urgent) to {MAX_PRIORITY}; the default is {DEFAULT_PRIORITY}",
        )
    if not 0 <= priority <= MAX_PRIORITY:
        raise InvalidArgument(
            f"priority {priority} is out of range",
            hint=f"use 0 (most urgent) to {MAX_PRIORITY}; the default is {DEFAULT_PRIORITY}",
        )
    return priority


def seconds_too_long(name: str, value: object) -> InvalidArgument:
    """The one error for a duration over MAX_SECONDS, whichever layer finds it."""
    return InvalidArgument(f"{name} of {value!r} seconds is too long",
                           hint=f"use at most {MAX_SECONDS:.0f} seconds (about 30 years)")


def check_seconds(name: str, value: object, *, allow_zero: bool = True, allow_none: bool = False) -> float | None:
    """Validate a duration in seconds (delay, ttl, visibility, wait)."""
    if value is None:
        if allow_none:
            return None
        raise InvalidType(f"{name} must be a number of seconds, not None")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidType(f"{name} must be a number of seconds, not {type(value).__name__}")
    v = float(value)
    if v != v or v in (float("inf"), float("-inf")):
        raise InvalidArgument(f"{name} must be a finite number of seconds, not {value!r}")
    if v > MAX_SECONDS:
        raise seconds_too_long(name, value)
    if v < 0 or (v == 0 and not allow_zero):
        raise InvalidArgument(
            f"{name} must be {'>= 0' if allow_zero else '> 0'} seconds, not {value!r}",
            hint=f"pass a {'non-negative' if allow_zero else 'positive'} number of seconds",
        )
    return v


def check_body(body: object, limit: int) -> bytes:
    """Validate a body: bytes-like and at most ``limit`` bytes. Returns ``bytes``."""
    if type(body) is not bytes:
        if isinstance(body, (bytearray, memoryview)):
            body = bytes(body)
        elif isinstance(body, str):
            raise InvalidType(
                "body must be bytes, not str",
                hint="encode text first, e.g. body=text.encode()",
            )
        else:
            raise InvalidType(
                f"body must be bytes, not {type(body).__name__}",
                hint="serialise the object first (json.dumps(obj).encode(), pickle.dumps(obj), ...)",
            )
    if len(body) > limit:  # type: ignore[arg-type]
        raise MessageTooLarge(
            f"body of {len(body)} bytes is larger than max_message_size ({limit} bytes)",  # type: ignore[arg-type]
            size=len(body),  # type: ignore[arg-type]
            limit=limit,
            hint="store large payloads elsewhere and send a reference, or raise max_message_size",
        )
    return body  # type: ignore[return-value]


def check_headers(headers: object) -> dict[str, str] | None:
    """Validate headers (str -> str); returns ``None`` for no headers."""
    if headers is None:
        return None
    if not isinstance(headers, Mapping):
        raise InvalidType(f"headers must be a dict of str to str, not {type(headers).__name__}")
    if not headers:
        return None
    if len(headers) > MAX_HEADERS:
        raise InvalidArgument(f"{len(headers)} headers is more than the limit of {MAX_HEADERS}")
    out: dict[str, str] = {}
    for k, v in headers.items():
        if type(k) is not str or type(v) is not str:
            raise InvalidType(
                f"headers must map str to str; got {type(k).__name__} -> {type(v).__name__}",
                hint="convert header values with str() first",
            )
        if not k or len(k) > MAX_HEADER_NAME:
            raise InvalidArgument(f"header name {k[:40]!r} must be 1 to {MAX_HEADER_NAME} characters")
        out[k] = v
    return out


# -- views -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """A read-only view of a stored message.

    Times are Unix seconds. ``state`` is one of ``ready``, ``leased``,
    ``delayed``, ``outbox`` or ``dead``.
    """

    id: str
    channel: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    priority: int = DEFAULT_PRIORITY
    created_at: float = 0.0
    deliver_at: float | None = None
    expires_at: float | None = None
    attempts: int = 0
    origin: str = ""
    job: int | None = None
    state: str = "ready"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that will not be delivered, with why.

    ``reason`` is one of ``max_attempts``, ``expired``, ``rejected`` (by a
    peer, for good), ``dead`` (a consumer gave up on it), ``buried`` (a
    beanstalkd client buried it) or ``corrupt``. ``peer`` is set when the
    message was on its way to that peer; a retry sends it there again.
    """

    message: Message
    reason: str
    detail: str
    died_at: float
    peer: str | None = None

    @property
    def id(self) -> str:
        return self.message.id

    @property
    def channel(self) -> str:
        return self.message.channel

    def as_dict(self) -> dict[str, Any]:
        m = self.message
        return {
            "id": m.id,
            "channel": m.channel,
            "peer": self.peer,
            "reason": self.reason,
            "detail": self.detail,
            "died_at": self.died_at,
            "attempts": m.attempts,
            "priority": m.priority,
            "created_at": m.created_at,
            "size": len(m.body),
            "job": m.job,
        }


_headers_enc = msgspec.msgpack.Encoder()
_headers_dec = msgspec.msgpack.Decoder(dict[str, str])


def encode_headers(headers: dict[str, str] | None) -> bytes | None:
    """Headers as stored: a MessagePack map of str -> str (None for none)."""
    return _headers_enc.encode(headers) if headers else None


def decode_headers(raw: bytes | None) -> dict[str, str]:
    """Stored headers; a damaged blob is shown, not raised (corruption is quarantined)."""
    if not raw:
        return {}
    try:
        return _headers_dec.decode(raw)
    except msgspec.DecodeError:
        return {"x-spoolq-corrupt-headers": raw.hex()}
