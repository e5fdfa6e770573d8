"""RabbitMQ: a sink (publisher confirms) and a source (queue consumer).

Sink: each message is published persistent (``delivery_mode=2``) on a channel
with publisher confirms, to ``exchange`` (default: the default exchange) with
``routing_key`` (default: the channel name; ``{channel}`` is filled in); a
message is settled only after the broker confirmed it. ``message_id`` is the
spoolq id, headers go to the AMQP headers (plus ``x-spoolq-priority`` and
``x-spoolq-channel``), the TTL left becomes ``expiration``. Priority: spoolq's
0 (most urgent) .. 1023 maps to AMQP 9 .. 0, 1024 and above to 0.

RabbitMQ does not deduplicate: a node killed after the confirm and before
settling publishes the batch again (at-least-once; consumers dedup by
``message_id``). A message the broker cannot route (``mandatory``; no queue
bound) or nacks stays in the outbox and is retried with backoff.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import Any

from ..codec import ACCEPTED, REJECTED, Result, WireMessage
from ..errors import PeerError
from ..message import id_text_from_bytes
from . import redact, require, subject_for
from .source import Incoming

__all__ = ["make_source", "RabbitSink", "amqp_priority", "make_sink"]


def _up(conn: Any) -> bool:
    """aio-pika's ``is_closed`` stays False after the broker closed the connection; ``connected`` is cleared."""
    return conn is not None and not conn.is_closed and conn.connected.is_set()


def amqp_priority(p: int) -> int:
    return 0 if p >= 1024 else 9 - (p * 10) // 1024


class RabbitSink:
    def __init__(self, name: str, url: str, exchange: str | None = None, routing_key: str | None = None) -> None:
        self.name, self.url, self.exchange_name, self.routing_key = name, url, exchange or "", routing_key
        self._mod = require("rabbitmq")
        self._conn: Any = None
        self._exchange: Any = None

    async def _connect(self) -> Any:
        if not _up(self._conn):
            await self.close()
            try:
                self._conn = await self._mod.connect(self.url, timeout=10)
                ch = await self._conn.channel(publisher_confirms=True)
                if self.exchange_name:
                    self._exchange = await ch.get_exchange(self.exchange_name, ensure=False)
                else:
                    self._exchange = ch.default_exchange
            except Exception as e:
                await self.close()
                raise PeerError(f"cannot reach {self.name} at {redact(self.url)}: {type(e).__name__}: {e}",
                                hint="is rabbitmq-server running and reachable?") from e
        return self._exchange

    def _message(self, m: WireMessage, now_ms: int) -> Any:
        headers: dict[str, Any] = dict(m.headers or {})
        headers["x-spoolq-priority"] = m.priority
        headers["x-spoolq-channel"] = m.channel
        expiration = None
        if m.expires is not None:
            expiration = datetime.timedelta(milliseconds=max(1, m.expires - now_ms))
        return self._mod.Message(m.body, message_id=id_text_from_bytes(m.id), headers=headers,
                                 priority=amqp_priority(m.priority), expiration=expiration,
                                 delivery_mode=self._mod.DeliveryMode.PERSISTENT)

    async def deliver(self, messages: list[WireMessage]) -> list[Result]:
        ex = await self._connect()
        now_ms = int(time.time() * 1000)
        coros = [ex.publish(self._message(m, now_ms), subject_for(self.routing_key, m.channel), mandatory=True)
                 for m in messages]
        confirms = await asyncio.gather(*coros, return_exceptions=True)
        out = []
        broken = False
        for c in confirms:
            if isinstance(c, BaseException):
                broken = broken or not isinstance(c, self._mod.exceptions.DeliveryError)
                out.append(Result(REJECTED, f"rabbitmq: {type(c).__name__}: {c}", permanent=False))
            else:
                out.append(Result(ACCEPTED))
        if broken:
            await self.close()
            if all(r.status == REJECTED for r in out):
                raise PeerError(f"publishing to {self.name} at {redact(self.url)} failed: {out[0].reason}")
        return out

    async def close(self) -> None:
        conn, self._conn, self._exchange = self._conn, None, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # closing a broken connection: nothing to save
                pass


def make_sink(name: str, url: str, options: dict[str, Any]) -> RabbitSink:
    return RabbitSink(name, url, options.get("exchange"), options.get("routing_key"))


class RabbitSource:
    """Consumes ``queue`` (default: the channel) with ``prefetch`` (default 2 x batch) unacked
    deliveries; acks a batch with one ``basic.ack(multiple)`` after the spool commit. The broker
    id is the AMQP ``message_id``; a message without one gets a fresh spoolq id (no dedup)."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.queue_name = cfg.options.get("queue") or cfg.channel
        self.prefetch = cfg.options.get("prefetch") or 2 * cfg.batch
        self._mod = require("rabbitmq")
        self._conn: Any = None
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()

    async def connect(self) -> None:
        self._inbox = asyncio.Queue()
        self._conn = await self._mod.connect(self.cfg.url, timeout=10)
        ch = await self._conn.channel()
        await ch.set_qos(prefetch_count=self.prefetch)
        q = await ch.get_queue(self.queue_name, ensure=True)
        await q.consume(self._inbox.put)

    async def fetch(self, n: int, wait: float) -> list[Any]:


        if not _up(self._conn):
            raise ConnectionError("the connection to rabbitmq is closed")
        msgs = []
        try:
            msgs.append(await asyncio.wait_for(self._inbox.get(), wait))
        except TimeoutError:
            if not _up(self._conn):
                raise ConnectionError("the connection to rabbitmq is closed") from None
            return []
        while len(msgs) < n and not self._inbox.empty():
            msgs.append(self._inbox.get_nowait())
        out = []
        for m in msgs:
            h = {str(k): str(v) for k, v in (m.headers or {}).items()}
            pri = h.pop("x-spoolq-priority", None)
            h.pop("x-spoolq-channel", None)
            out.append(Incoming(m.message_id, m.body, h, int(pri) if pri and pri.isdigit() else None, m))
        return out

    async def ack(self, items: list[Any]) -> None:
        await items[-1].token.ack(multiple=True)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # closing a broken connection: nothing to save
                pass


def make_source(cfg: Any) -> RabbitSource:
    return RabbitSource(cfg)
