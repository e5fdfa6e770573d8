"""Redis Streams: a sink (pipelined XADD) and a source (consumer group).

Sink: one pipeline per batch, one ``XADD <stream> * id <spoolq id> channel ..
body .. priority .. [expires ..] [h:<name> <value>]...`` per message; a message
is settled when its XADD replied. Durability is Redis's: with
``appendonly yes`` and ``appendfsync always`` an acknowledged XADD survives a
power cut; with ``appendfsync everysec`` (Redis's default) up to one second of
acknowledged entries can be lost to a crash of the host. Redis has no dedup:
after a crash of the node between XADD and settling, the batch is added again
(at-least-once; the ``id`` field tells a consumer it has seen it).
"""

from __future__ import annotations

from typing import Any

from ..codec import ACCEPTED, REJECTED, Result, WireMessage
from ..errors import PeerError
from ..message import id_text_from_bytes
from . import redact, require, subject_for
from .source import Incoming

__all__ = ["make_source", "RedisSink", "make_sink", "fields_of"]

# errors after which the same XADD may well succeed later
_TRANSIENT = ("OOM", "BUSY", "LOADING", "READONLY", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN", "CLUSTERDOWN")


def fields_of(m: WireMessage) -> dict[str, Any]:
    f: dict[str, Any] = {"id": id_text_from_bytes(m.id), "channel": m.channel, "body": m.body,
                         "priority": str(m.priority)}
    if m.expires is not None:
        f["expires"] = str(m.expires)
    for k, v in (m.headers or {}).items():
        f[f"h:{k}"] = v
    return f


class RedisSink:
    def __init__(self, name: str, url: str, stream: str | None = None, maxlen: int | None = None) -> None:
        self.name, self.url, self.stream, self.maxlen = name, url, stream, maxlen
        self._mod = require("redis")
        self._client: Any = None

    async def _connect(self) -> Any:
        if self._client is None:
            self._client = self._mod.from_url(self.url, socket_connect_timeout=10, socket_timeout=60)
        return self._client

    async def deliver(self, messages: list[WireMessage]) -> list[Result]:
        from redis.exceptions import ResponseError

        r = await self._connect()
        pipe = r.pipeline(transaction=False)
        for m in messages:
            pipe.xadd(subject_for(self.stream, m.channel), fields_of(m), maxlen=self.maxlen, approximate=True)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except Exception as e:  # connection refused or lost: the whole batch stays in the outbox
            await self.close()
            raise PeerError(f"cannot reach {self.name} at {redact(self.url)}: {type(e).__name__}: {e}",
                            hint="is redis-server running and reachable?") from e
        out = []
        for rep in replies:
            if isinstance(rep, ResponseError):
                transient = str(rep).startswith(_TRANSIENT)
                out.append(Result(REJECTED, f"redis: {rep}", permanent=not transient))
            elif isinstance(rep, Exception):
                out.append(Result(REJECTED, f"redis: {rep}", permanent=False))
            else:
                out.append(Result(ACCEPTED))
        return out

    async def close(self) -> None:
        c, self._client = self._client, None
        if c is not None:
            try:
                await c.aclose()
            except Exception:  # closing a broken connection: nothing to save
                pass


def make_sink(name: str, url: str, options: dict[str, Any]) -> RedisSink:
    return RedisSink(name, url, options.get("stream"), options.get("maxlen"))


class RedisSource:
    """XREADGROUP from ``stream`` (default: the channel) in ``group`` (default: spoolq-<source name>).

    After a (re)connect it first re-reads this consumer's pending entries (delivered, never acked),
    then new ones. The broker id is the entry's ``id`` field when present (a spoolq sink wrote it),
    else the stream entry id. The body is the ``body`` field; ``h:NAME`` fields become headers.
    """

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.stream = cfg.options.get("stream") or cfg.channel
        self.group = cfg.options.get("group") or f"spoolq-{cfg.name}"
        self.consumer = cfg.options.get("consumer") or "spoolq"
        self._mod = require("redis")
        self._client: Any = None
        self._backlog = True

    async def connect(self) -> None:
        from redis.exceptions import ResponseError

        self._client = self._mod.from_url(self.cfg.url, socket_connect_timeout=10, socket_timeout=30)
        try:
            await self._client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._backlog = True

    async def fetch(self, n: int, wait: float) -> list[Any]:


        start = "0" if self._backlog else ">"
        reply = await self._client.xreadgroup(self.group, self.consumer, {self.stream: start}, count=n,
                                              block=None if self._backlog else int(wait * 1000))
        entries = reply[0][1] if reply else []
        if self._backlog and not entries:
            self._backlog = False
        out = []
        for eid, fields in entries:
            eid_s = eid.decode() if isinstance(eid, bytes) else str(eid)
            f = {(k.decode() if isinstance(k, bytes) else k): v for k, v in (fields or {}).items()}
            body = f.get("body", b"")
            headers = {k[2:]: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in f.items()
                       if k.startswith("h:")}
            bid = f.get("id")
            pri = f.get("priority")
            out.append(Incoming(bid.decode() if isinstance(bid, bytes) else f"{self.stream}/{eid_s}",
                                body if isinstance(body, bytes) else str(body).encode(), headers,
                                int(pri) if pri is not None and pri.isdigit() else None, eid_s))
        return out

    async def ack(self, items: list[Any]) -> None:
        await self._client.xack(self.stream, self.group, *[it.token for it in items])

    async def close(self) -> None:
        c, self._client = self._client, None
        if c is not None:
            try:
                await c.aclose()
            except Exception:  # closing a broken connection: nothing to save
                pass


def make_source(cfg: Any) -> RedisSource:
    return RedisSource(cfg)
