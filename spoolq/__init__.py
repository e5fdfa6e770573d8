"""spoolq: a durable store-and-forward message queue.

A program hands a message to its local spool and goes on; the write is on disk
before ``send()`` returns. Consumers lease, process and ack. The daemon
(``spoolq node``) forwards outboxes to peer nodes.

The names below are imported on first use (PEP 562), so that command-line
entry points such as ``spoolq-beanstalkd`` start fast.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # not typing's: importing typing costs start-up time (mypy knows this idiom)

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
    "SpoolCorrupt",
    "StorageFull",
    "SpoolBusy",
    "PeerError",
    "CodecError",
    "__version__",
]

_WHERE = {
    "Spool": "spool", "Stats": "spool", "ChannelStats": "spool", "PeerStats": "spool",
    "Lease": "lease", "Worker": "consumer", "Reject": "consumer",
    "Message": "message", "DeadLetter": "message", "new_id": "message", "id_time": "message",
    "backoff": "retry",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        if name in __all__:
            module = "errors"
        else:
            raise AttributeError(f"module 'spoolq' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from typing import Any

    from .consumer import Reject, Worker
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
        SpoolCorrupt,
        SpoolqError,
        SpoolUnavailable,
        SpoolVersionError,
        StorageError,
        StorageFull,
    )
    from .lease import Lease
    from .message import DeadLetter, Message, id_time, new_id
    from .retry import backoff
    from .spool import ChannelStats, PeerStats, Spool, Stats
