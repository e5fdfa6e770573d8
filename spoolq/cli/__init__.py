"""The ``spoolq`` command line: a thin shell over :class:`spoolq.Spool` and a node's HTTP API.

One module per concern; each defines its commands and this package adds them to the ``main`` group
(``spoolq = spoolq.cli:main``):

- ``messaging``: send, lease, stats, check
- ``dead``: dead letters (ls, show, retry, purge)
- ``outbox``: per peer status, and the transactional outbox relay
- ``worker``: run a handler on a channel
- ``servers``: node, beanstalkd, stomp
- ``demos``: demo, showcase
- ``top``: the live view of channels and peers
- ``messages``: ls, show (what is in a queue, without leasing it)
- ``admin``: hold, release, requeue, delete, flush, audit
- ``trace``: one message across nodes (``spoolq trace ID``); the spool's event-log setting (``--enable``)
- ``_backend``, ``_select``, ``_format``: where admin commands act (spool or node), their filters, text
- ``_http``: the client of a node's HTTP API (``--node URL --token T``)
"""

from __future__ import annotations

from . import admin, dead, demos, messages, messaging, outbox, servers, top, trace, worker
from ._main import main

for _cmd in (messaging.send, messaging.lease, messaging.stats, messaging.check, dead.dead, worker.worker,
             servers.node, servers.beanstalkd, servers.stomp, demos.demo, outbox.outbox, demos.showcase,
             top.top, messages.ls, messages.show, admin.hold, admin.release, admin.requeue, admin.delete,
             admin.flush, admin.audit, trace.trace):
    main.add_command(_cmd)

__all__ = ["main"]
