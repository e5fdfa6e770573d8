"""Transactional outbox: send a message if and only if your own transaction commits.

``outbox.send(cur, body, channel, ...)`` writes the message into a ``spoolq_outbox``
table of *your* database, in *your* transaction, and returns its id at once. A relay
(``outbox.relay().run()`` or ``spoolq outbox relay``) moves committed rows into the
spool under the same ids, then deletes them; the spool's dedup by id makes that
hand-off idempotent, so a crash at any instant still gives exactly one message.

``PostgresOutbox`` needs psycopg 3 (``pip install 'spoolq[postgres]'``) and is
imported on first use; ``SQLiteOutbox`` needs only the standard library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["PostgresOutbox", "SQLiteOutbox", "Relay", "TABLE"]

_WHERE = {"PostgresOutbox": "postgres", "SQLiteOutbox": "sqlite", "Relay": "relay", "TABLE": "_rows"}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'spoolq.outbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from ._rows import TABLE
    from .postgres import PostgresOutbox
    from .relay import Relay
    from .sqlite import SQLiteOutbox
