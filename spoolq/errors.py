"""The one exception tree of spoolq.

Every error spoolq raises is a :class:`SpoolqError`. The tree separates whose
fault an error is, so a caller can decide what to do without parsing text:

* :class:`InvalidArgument` — the caller passed something wrong; retrying the
  same call cannot help. Also a :class:`ValueError` (and :class:`InvalidType`
  a :class:`TypeError`), so code written against the builtins still works.
* :class:`LeaseError` — the caller acted on a lease it no longer holds.
* :class:`StorageError` — the spool on disk could not do what was asked
  (full disk, permissions, a newer schema, a lock held too long).
* :class:`PeerError` — another node refused or failed (used by the daemon).

Each error carries a ``hint`` saying what to do about it.
"""

from __future__ import annotations

__all__ = [
    "CodecError",
    "InvalidArgument",
    "InvalidChannel",
    "InvalidType",
    "LeaseError",
    "LeaseExpired",
    "LeaseLost",
    "MessageTooLarge",
    "NotFound",
    "PeerError",
    "SpoolBusy",
    "SpoolUnavailable",
    "SpoolVersionError",
    "SpoolqError",
    "StorageError",
    "StorageFull",
]


class SpoolqError(Exception):
    """Base class of every error raised by spoolq.

    Attributes:
        hint: what the caller can do about it, or ``None``.
    """

    hint: str | None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} (hint: {self.hint})"
        return self.message


# -- the caller's fault ------------------------------------------------------


class InvalidArgument(SpoolqError, ValueError):
    """An argument has a wrong value; nothing was changed."""


class InvalidType(InvalidArgument, TypeError):
    """An argument has a wrong type; nothing was changed."""


class InvalidChannel(InvalidArgument):
    """A channel name does not match ``[A-Za-z0-9._-]{1,200}``."""


class MessageTooLarge(InvalidArgument):
    """A body (with its headers) is larger than the spool's ``max_message_size``."""

    def __init__(self, message: str, *, size: int, limit: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.size = size
        self.limit = limit


class NotFound(SpoolqError, KeyError):
    """The message, dead letter or object asked for does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return SpoolqError.__str__(self)


class LeaseError(SpoolqError):
    """An operation on a lease that is no longer held; nothing was changed."""


class LeaseExpired(LeaseError):
    """The lease ran out before ``ack``/``nack``/``touch``; the message is ready again."""


class LeaseLost(LeaseError):
    """The lease is not held any more: the message was acked, nacked, re-leased or removed."""


# -- the storage's fault -------------------------------------------------------


class StorageError(SpoolqError):
    """The spool could not carry out the operation; nothing was changed."""


class SpoolUnavailable(StorageError):
    """The spool directory or database cannot be opened or written."""


class SpoolCorrupt(SpoolUnavailable):
    """The directory holds a spool whose database is empty or unreadable; it was left untouched."""


class SpoolVersionError(StorageError):
    """The spool was written by a newer spoolq; it is refused, not altered."""


class StorageFull(StorageError):
    """The disk (or the database's size limit) is full."""


class SpoolBusy(StorageError):
    """The spool stayed locked by other processes for longer than the busy timeout."""


# -- the network's fault --------------------------------------------------------


class PeerError(SpoolqError):
    """A peer node failed or refused a request.

    Attributes:
        status: the HTTP status the peer answered, if any.
        retry_after: seconds after which a retry may help, if known.
        permanent: ``True`` when retrying the same request cannot help.
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        permanent: bool = False,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.retry_after = retry_after
        self.permanent = permanent


class CodecError(SpoolqError):
    """Bytes on the wire could not be decoded (malformed, truncated, oversized).

    Attributes:
        code: a short machine-readable code, e.g. ``"malformed"`` or ``"too_large"``.
    """

    def __init__(self, message: str, *, code: str = "malformed", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code
