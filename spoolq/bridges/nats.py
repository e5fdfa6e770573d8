"""NATS JetStream: a sink (publish, settle on PubAck) and a source (durable pull consumer).

Sink: each message is published with ``Nats-Msg-Id`` = its spoolq id; the
batch's publishes are in flight together and each is settled on its PubAck.
A PubAck flagged ``duplicate`` (the stream's dedup window already holds that
id) settles the message as a duplicate. A node killed after the publish and
before settling re-publishes the batch: within the stream's
``duplicate_window`` (default 2 minutes) JetStream drops it, so the hand-off
is exactly-once inside that window and at-least-once beyond it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..codec import ACCEPTED, DUPLICATE, REJECTED, Result, WireMessage
from ..errors import PeerError
from ..message import id_text_from_bytes
from . import redact, require, subject_for
from .source import Incoming

__all__ = ["make_source", "NatsSink", "make_sink", "headers_of"]


async def _quiet(e: Exception) -> None:
    """nats-py logs every failed attempt with a traceback; the caller reports (and backs off) once."""


async def connect(mod: Any, url: str) -> Any:
    """One connection attempt, no automatic reconnects (the loops reconnect with their own backoff).

    ``max_reconnect_attempts=0`` makes nats-py retry its first connect forever; 1 makes it give up.
    """
    return await mod.connect(url, allow_reconnect=False, connect_timeout=10, max_reconnect_attempts=1,
                             reconnect_time_wait=0.1, error_cb=_quiet)


def headers_of(m: WireMessage) -> dict[str, str]:
    h = dict(m.headers or {})
    h["Nats-Msg-Id"] = id_text_from_bytes(m.id)
    h["Spoolq-Channel"] = m.channel
    h["Spoolq-Priority"] = str(m.priority)
    if m.expires is not None:
        h["Spoolq-Expires"] = str(m.expires)
    return h


class NatsSink:
    def __init__(self, name: str, url: str, subject: str | None = None, timeout: float = 30.0) -> None:
        self.name, self.url, self.subject, self.timeout = name, url, subject, timeout
        self._mod = require("nats")
        self._nc: Any = None
        self._js: Any = None

    async def _connect(self) -> Any:
        if self._nc is None or self._nc.is_closed:
            try:
                self._nc = await connect(self._mod, self.url)
            except Exception as e:
                self._nc = None
                raise PeerError(f"cannot reach {self.name} at {redact(self.url)}: {type(e).__name__}: {e}",
                                hint="is nats-server -js running and reachable?") from e
            self._js = self._nc.jetstream(timeout=self.timeout)
        return self._js

    async def deliver(self, messages: list[WireMessage]) -> list[Result]:
        from nats.errors import ConnectionClosedError, MaxPayloadError, NoRespondersError
        from nats.errors import TimeoutError as NatsTimeout

        js = await self._connect()
        coros = [js.publish(subject_for(self.subject, m.channel), m.body, headers=headers_of(m)) for m in messages]
        acks = await asyncio.gather(*coros, return_exceptions=True)
        out = []
        lost = None
        for a in acks:
            if isinstance(a, ConnectionClosedError | OSError):
                lost = a
                out.append(Result(REJECTED, f"nats: {type(a).__name__}: {a}", permanent=False))
            elif isinstance(a, MaxPayloadError):  # over the server's max_payload: it will never take it
                out.append(Result(REJECTED, f"nats: {a}", permanent=True))
            elif isinstance(a, NoRespondersError | NatsTimeout | asyncio.TimeoutError):
                out.append(Result(REJECTED, "nats: no stream answered for this subject (yet)", permanent=False))
            elif isinstance(a, BaseException):
                out.append(Result(REJECTED, f"nats: {type(a).__name__}: {a}", permanent=False))
            else:
                out.append(Result(DUPLICATE if getattr(a, "duplicate", False) else ACCEPTED))
        if lost is not None and all(r.status == REJECTED for r in out):
            await self.close()
            raise PeerError(f"lost the connection to {self.name} at {redact(self.url)}: {lost}")
        if lost is not None or (self._nc is not None and not self._nc.is_connected):
            await self.close()
        return out

    async def close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            try:
                await nc.close()
            except Exception:  # closing a broken connection: nothing to save
                pass


def make_sink(name: str, url: str, options: dict[str, Any]) -> NatsSink:
    return NatsSink(name, url, options.get("subject"))


class NatsSource:
    """A JetStream durable pull consumer (``durable``, default spoolq-<source name>) on ``stream``
    (default: the channel), filtered by ``subject`` (default: the channel). The broker id is the
    ``Nats-Msg-Id`` header when present, else ``<stream>/<stream sequence>``."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.stream = cfg.options.get("stream") or cfg.channel
        self.durable = cfg.options.get("durable") or f"spoolq-{cfg.name}"
        self.subject = cfg.options.get("subject") or cfg.channel
        self._mod = require("nats")
        self._nc: Any = None
        self._sub: Any = None

    async def connect(self) -> None:
        self._nc = await connect(self._mod, self.cfg.url)
        js = self._nc.jetstream()
        self._sub = await js.pull_subscribe(self.subject, durable=self.durable, stream=self.stream)

    async def fetch(self, n: int, wait: float) -> list[Any]:
        from nats.errors import TimeoutError as NatsTimeout



        try:
            msgs = await self._sub.fetch(n, timeout=wait)
        except (TimeoutError, NatsTimeout):
            if self._nc is None or not self._nc.is_connected:
                raise ConnectionError("the connection to nats-server is closed") from None
            return []
        out = []
        for m in msgs:
            h = dict(m.headers or {})
            bid = h.pop("Nats-Msg-Id", None) or f"{self.stream}/{m.metadata.sequence.stream}"
            pri = h.pop("Spoolq-Priority", None)
            h.pop("Spoolq-Channel", None)
            h.pop("Spoolq-Expires", None)
            out.append(Incoming(bid, m.data, h, int(pri) if pri and pri.isdigit() else None, m))
        return out

    async def ack(self, items: list[Any]) -> None:
        for it in items:
            await it.token.ack()
        await self._nc.flush()

    async def close(self) -> None:
        nc, self._nc, self._sub = self._nc, None, None
        if nc is not None:
            try:
                await nc.close()
            except Exception:  # closing a broken connection: nothing to save
                pass


def make_source(cfg: Any) -> NatsSource:
    return NatsSource(cfg)
