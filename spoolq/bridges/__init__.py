"""Bridges: sinks (outbox peers) and sources that speak other brokers' protocols.

A peer whose URL is ``amqp://``/``amqps://`` (RabbitMQ), ``nats://`` (NATS
JetStream) or ``redis://``/``rediss://`` (Redis Streams) is forwarded to by a
*sink* of this package instead of the spoolq HTTP protocol; the forwarder's
cursor, batching, in-flight limit, backoff, dead letters and metrics are the
same. A ``[[sources]]`` entry consumes from such a broker into a local channel.

Each broker's client library is an optional extra, imported only when a peer
or source needs it; a missing one raises :class:`BridgeUnavailable` naming
``pip install 'spoolq[EXTRA]'``.

Ids: a message forwarded to a broker carries its spoolq id (UUID text) as the
broker's message id. A source keeps a broker id that is already a UUID; any
other id is mapped deterministically with :func:`source_id` (uuid5 of the
source name and the broker id), so a redelivered message gets the same spoolq
id and the spool's ``seen`` table drops it.
"""

from __future__ import annotations

import importlib
import uuid
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import SpoolqError

if TYPE_CHECKING:
    from ..node.forwarder import Sink

__all__ = ["SCHEMES", "BridgeUnavailable", "make_sink", "redact", "require", "scheme_of", "source_id", "subject_for"]

# URL scheme -> (extra, module in this package)
SCHEMES: dict[str, str] = {"amqp": "rabbitmq", "amqps": "rabbitmq", "nats": "nats", "redis": "redis",
                           "rediss": "redis"}
_CLIENTS = {"rabbitmq": "aio_pika", "nats": "nats", "redis": "redis.asyncio"}

# keys a bridge peer may carry in its [peers.NAME] table, per extra
PEER_KEYS: dict[str, frozenset[str]] = {
    "rabbitmq": frozenset({"exchange", "routing_key"}),
    "nats": frozenset({"subject"}),
    "redis": frozenset({"stream", "maxlen"}),
}

_NAMESPACE = uuid.UUID("6f1b2c1e-8a4e-4d0b-9a51-5b0f3c7e2d10")


class BridgeUnavailable(SpoolqError):
    """A peer or source needs a broker client library that is not installed."""


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def require(extra: str) -> ModuleType:
    """Import the client library of ``extra`` or raise :class:`BridgeUnavailable` naming the pip command."""
    name = _CLIENTS[extra]
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise BridgeUnavailable(
            f"the {extra} bridge needs the Python package {name.split('.')[0]!r}, which is not installed",
            hint=f"pip install 'spoolq[{extra}]'") from e


def redact(url: str) -> str:
    """The URL without its password, for logs, errors and ``/healthz``."""
    try:
        u = urlsplit(url)
        if u.password is None:
            return url
        host = u.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{u.username or ''}:***@{host}" + (f":{u.port}" if u.port is not None else "")
        return urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))
    except ValueError:
        return url.split("://", 1)[0] + "://***"


def subject_for(template: str | None, channel: str) -> str:
    """The broker address of a message: ``template`` with ``{channel}`` filled in, or the channel name."""
    if not template:
        return channel
    return template.replace("{channel}", channel)


def source_id(source: str, broker_id: str) -> str:
    """The spoolq id of a message consumed by ``source``: a UUID broker id as is, else uuid5(source, id)."""
    try:
        return str(uuid.UUID(broker_id))
    except ValueError:
        return str(uuid.uuid5(_NAMESPACE, f"{source}\x00{broker_id}"))


def make_sink(name: str, url: str, options: dict[str, Any]) -> Sink:
    """The sink for a bridge peer URL. Raises BridgeUnavailable when its extra is missing."""
    extra = SCHEMES[scheme_of(url)]
    require(extra)
    mod = importlib.import_module(f"{__name__}.{extra}")
    sink: Sink = mod.make_sink(name, url, options)
    return sink
