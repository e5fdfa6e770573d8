"""spoolq: a durable store-and-forward message queue.

A program hands a message to its local spool and goes on; the write is on disk
before ``send()`` returns. Consumers lease, process and ack. The daemon
(``spoolq node``) forwards outboxes to peer nodes.
"""

from .consumer import Lease, Reject, Worker
from .errors import (
    CodecError,
    InvalidArgument,
    InvalidChannel,
    InvalidType,
    LeaseError,
    LeaseExpired,
    LeaseLost,
    MessageTooLarge,
    NotFound,
    PeerError,
    SpoolBusy,
    SpoolqError,
    SpoolUnavailable,
    SpoolVersionError,
    StorageError,
    StorageFull,
)
from .message import DeadLetter, Message, id_time, new_id
from .retry import backoff
from .spool import ChannelStats, PeerStats, Spool, Stats

__version__ = "0.1.0"

__all__ = [
    # the spool
    "Spool",
    "Lease",
    "Worker",
    "Reject",
    # values
    "Message",
    "DeadLetter",
    "Stats",
    "ChannelStats",
    "PeerStats",
    "new_id",
    "id_time",
    "backoff",
    # errors
    "SpoolqError",
    "InvalidArgument",
    "InvalidType",
    "InvalidChannel",
    "MessageTooLarge",
    "NotFound",
    "LeaseError",
    "LeaseExpired",
    "LeaseLost",
    "StorageError",
    "SpoolUnavailable",
    "SpoolVersionError",
    "StorageFull",
    "SpoolBusy",
    "PeerError",
    "CodecError",
    "__version__",
]
