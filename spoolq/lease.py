"""A lease: a consumer's exclusive, time-limited hold on one message.

Finish it with exactly one of ``ack()`` (done: the message is gone),
``nack(delay)`` (failed: ready again after ``delay``, default backoff) or
``dead(detail)`` (give up: move it to dead letters); ``touch()`` extends it.
A lease only remembers its key and token; the spool that made it (any object
with the :class:`Finisher` methods) does the work.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from .errors import InvalidArgument, LeaseLost, SpoolUnavailable
from .message import MAX_PRIORITY, Message, _ms_of, decode_headers, id_text_from_bytes

__all__ = ["Lease", "Finisher", "load_secret"]

SECRET_FILE = "lease.key"
SECRET_BYTES = 32
MAC_BYTES = 16

# channel.priority.idhex.attempts.mac: ASCII digits only (no int() leniency for "+1", " 1", "0_1" or
# other scripts' digits), a 32-digit lowercase hex id, and a 22-character base64url HMAC tag.
_HANDLE_RE = r"([1-9][0-9]{0,18})\.([0-9]{1,10})\.([0-9a-f]{32})\.([1-9][0-9]{0,18})\.([A-Za-z0-9_-]{22})"


@functools.cache
def _handle_pattern() -> re.Pattern[str]:
    """The handle's grammar, compiled on first use (compiling it costs start-up time of every front-end)."""
    return re.compile(_HANDLE_RE)


def load_secret(directory: Path, sync_dir: bool = True) -> bytes:
    """The node's lease-handle secret: ``<directory>/lease.key``, 32 random bytes, created once.

    Created atomically (written to a private temp file, fsynced, then hard-linked into place, which
    fails if another process got there first), mode 0600; every process of the spool reads the same one.

    Raises:
        SpoolUnavailable: the file cannot be read or created, or does not hold 32 bytes.
    """
    path = directory / SECRET_FILE
    hint = f"check the permissions of {directory}; delete {path} only if no lease handles are outstanding"
    for _ in range(3):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise SpoolUnavailable(f"cannot read the lease secret {path}: {e}", hint=hint) from e
        else:
            if len(data) != SECRET_BYTES:
                raise SpoolUnavailable(f"the lease secret {path} holds {len(data)} bytes, not {SECRET_BYTES}",
                                       hint=hint)
            return data
        tmp = directory / f".{SECRET_FILE}.{os.getpid()}.{os.urandom(4).hex()}"
        secret = os.urandom(SECRET_BYTES)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, secret)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                continue  # another process created it first: read theirs
            finally:
                os.unlink(tmp)
        except OSError as e:
            raise SpoolUnavailable(f"cannot create the lease secret {path}: {e}", hint=hint) from e
        if sync_dir:
            try:
                dfd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            except OSError:
                pass
        return secret
    raise SpoolUnavailable(f"cannot settle the lease secret {path}", hint=hint)


def _tag(secret: bytes, text: str) -> str:
    mac = hmac.new(secret, text.encode("ascii"), hashlib.sha256).digest()[:MAC_BYTES]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


class Finisher(Protocol):
    """What a lease needs of its spool."""

    lease_secret: bytes

    def ack_lease(self, lease: Lease) -> None: ...
    def nack_lease(self, lease: Lease, delay: float | None, priority: int | None,
                   reason: str | None = None) -> bool: ...
    def touch_lease(self, lease: Lease, visibility: float) -> int: ...
    def forward_lease(self, lease: Lease, to: str | Sequence[str]) -> None: ...
    def dead_lease(self, lease: Lease, reason: str, detail: str, priority: int | None) -> None: ...
    def origin_name(self, ref: int | None) -> str: ...
    def channel_name(self, ch: int) -> str: ...


class Lease:
    """An exclusive, time-limited hold on one message.

    Attributes:
        channel: the channel it was leased from.
        body: the payload.
        priority: 0 is most urgent.
        attempts: deliveries so far, this one included (1 on the first).
        job: the node-local integer id (what beanstalkd clients see).
        deadline: when the lease runs out (Unix seconds).
    """

    __slots__ = (
        "_ch",
        "_deliver_at",
        "_expires",
        "_hdrs",
        "_id",
        "_idb",
        "_origin",
        "_spool",
        "_until",
        "attempts",
        "body",
        "channel",
        "job",
        "priority",
    )

    def __init__(
        self,
        spool: Finisher,
        ch: int,
        channel: str,
        priority: int,
        idb: bytes,
        attempts: int,
        job: int,
        body: bytes,
        hdrs: bytes | None,
        expires: int | None,
        origin: int | None,
        deliver_at: int | None,
        until: int,
    ) -> None:
        self._spool = spool
        self._ch = ch
        self.channel = channel
        self.priority = priority
        self._idb = idb
        self.attempts = attempts
        self.job = job
        self.body = body
        self._hdrs = hdrs
        self._expires = expires
        self._origin = origin
        self._deliver_at = deliver_at
        self._until = until
        self._id: str | None = None

    @property
    def id(self) -> str:
        """The message id (text form)."""
        if self._id is None:
            self._id = id_text_from_bytes(self._idb)
        return self._id

    @property
    def key(self) -> tuple[int, int, bytes, int]:
        """Where the message is and which delivery this is: (channel id, priority, id, attempts)."""
        return (self._ch, self.priority, self._idb, self.attempts)

    @property
    def handle(self) -> str:
        """An opaque string that identifies this lease (see :meth:`from_handle`).

        The lease key, then an HMAC-SHA-256 tag (16 bytes, base64url) of it under the spool's
        secret, so a handle cannot be guessed from another one or from message ids.
        """
        text = f"{self._ch}.{self.priority}.{self._idb.hex()}.{self.attempts}"
        return f"{text}.{_tag(self._spool.lease_secret, text)}"

    @classmethod
    def from_handle(cls, spool: Finisher, handle: str) -> Lease:
        """Rebuild a lease from :attr:`handle` (for the HTTP API) to ack, nack or touch it.

        Only the identity is restored: ``body`` and ``headers`` are empty.

        Raises:
            InvalidArgument: the handle is malformed.
            LeaseLost: the handle is well formed but its tag is not this spool's (forged or altered).
        """
        m = _handle_pattern().fullmatch(handle) if isinstance(handle, str) else None
        ch = pri = att = 0
        if m is not None:
            ch, pri, att = int(m[1]), int(m[2]), int(m[4])
        if m is None or not ch < 1 << 63 or not att < 1 << 63 or not pri <= MAX_PRIORITY:
            raise InvalidArgument(f"malformed lease handle {str(handle)[:80]!r}",
                                  hint="pass the 'lease' value the lease call returned")
        text = handle[:m.start(5) - 1]
        if not hmac.compare_digest(_tag(spool.lease_secret, text), m[5]):
            raise LeaseLost(f"lease handle {handle[:80]!r} was not given out by this node",
                            hint="pass the 'lease' value the lease call returned, unchanged")
        idb = bytes.fromhex(m[3])
        return cls(spool, ch, spool.channel_name(ch), pri, idb, att, 0, b"", None, None, None, None, 0)

    @property
    def headers(self) -> dict[str, str]:
        return decode_headers(self._hdrs)

    @property
    def created_at(self) -> float:
        return _ms_of(self._idb) / 1000.0

    @property
    def expires_at(self) -> float | None:
        return self._expires / 1000.0 if self._expires is not None else None

    @property
    def deadline(self) -> float:
        return self._until / 1000.0

    @property
    def origin(self) -> str:
        return self._spool.origin_name(self._origin)

    @property
    def message(self) -> Message:
        """A read-only snapshot of the leased message."""
        return Message(
            id=self.id,
            channel=self.channel,
            body=self.body,
            headers=self.headers,
            priority=self.priority,
            created_at=self.created_at,
            deliver_at=self._deliver_at / 1000.0 if self._deliver_at else None,
            expires_at=self.expires_at,
            attempts=self.attempts,
            origin=self.origin,
            job=self.job,
            state="leased",
        )

    def ack(self) -> None:
        """The message is done: remove it.

        Raises:
            LeaseExpired: the lease ran out first (the message is ready again).
            LeaseLost: the lease is no longer held (acked, nacked, re-leased).
        """
        self._spool.ack_lease(self)

    def nack(self, delay: float | None = None, *, priority: int | None = None, reason: str | None = None) -> bool:
        """Processing failed: make the message ready again after ``delay`` seconds.

        Without ``delay``, the wait is exponential backoff with jitter from the
        attempt count. When the channel's ``max_attempts`` is used up, the
        message goes to dead letters instead.

        ``reason`` (why it failed) is kept in the event log (``spoolq trace``).

        Returns:
            ``True`` if the message will be delivered again, ``False`` if it
            became a dead letter.
        """
        return self._spool.nack_lease(self, delay, priority, reason)

    def forward(self, to: str | Sequence[str]) -> None:
        """Hand the message on to peer(s) ``to`` (names or URLs) under the same id, and ack it, in one
        transaction: how a program on a relay node passes messages along (``spoolq trace`` follows
        them, since the id stays the same). A node does not relay received messages by itself.

        Raises:
            LeaseExpired, LeaseLost: the lease is no longer held; nothing happened.
        """
        self._spool.forward_lease(self, to)

    def touch(self, visibility: float = 30.0) -> None:
        """Extend the lease to ``visibility`` seconds from now."""
        self._until = self._spool.touch_lease(self, visibility)

    def dead(self, detail: str = "", *, reason: str = "rejected", priority: int | None = None) -> None:
        """Give up on the message: move it to dead letters with ``detail`` (and a new priority)."""
        self._spool.dead_lease(self, reason, str(detail), priority)

    def __repr__(self) -> str:
        return f"<Lease {self.id} channel={self.channel!r} attempts={self.attempts} size={len(self.body)}>"
