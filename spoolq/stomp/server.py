"""STOMP server: sessions over TCP (or WebSocket) translated onto spool calls.

Theory of operation
===================

One :class:`Session` per connection processes frames strictly in order. The
event loop never waits on SQLite: sends go through ``Spool.asend`` (the group
commit writer thread), leases/acks/nacks run in ``asyncio.to_thread``, and a
subscription with nothing to deliver sleeps on the channel's bell (BellHub),
as ``Node.lease_async`` does.

Destinations: ``/queue/<channel>`` is a spoolq channel (competing consumers
via leases). ``/topic/<name>`` is fan-out, in memory, to the subscribers
connected at that moment: nothing is stored, a message with no subscriber is
dropped, and a subscriber that is slow or gone loses it.

Header mapping (SEND -> spool): see ``to_send_options``; ActiveMQ priority
0..9 maps to spoolq priority ``1024 + (4 - p) * 128`` (9 -> 384, most urgent;
4, the JMS default -> 1024, spoolq's default; 0 -> 1536).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from .._bell import BellHub, channel_bell
from .._loop import lease_in_thread
from ..errors import LeaseError, SpoolqError
from ..lease import Lease
from ..message import MAX_HEADERS, check_channel, new_id
from ..spool import Spool
from ..store.events import ACTOR
from .wire import HEARTBEAT, Frame, Parser, StompWireError, encode

log = logging.getLogger("spoolq.stomp")

VERSIONS = ("1.2", "1.1", "1.0")
DEFAULT_PRIORITY = 1024
_MSGID_NS = uuid.UUID("6b1c3f7e-6f2a-5c1e-9d0e-73706f6f6c71")  # fixed: message-id text -> spoolq id
_RESERVED = {"destination", "content-length", "receipt", "transaction", "persistent", "priority", "expires",
             "message-id", "AMQ_SCHEDULED_DELAY", "ack", "id", "subscription"}


@dataclass(frozen=True, slots=True)
class Token:
    secret: str
    scopes: frozenset[str]


class StompError(SpoolqError):
    """A client error answered with an ERROR frame (then the connection closes)."""


def amq_to_priority(p: int) -> int:
    """ActiveMQ/JMS priority 0..9 (9 most urgent) -> spoolq priority (lower is more urgent)."""
    return DEFAULT_PRIORITY + (4 - max(0, min(9, p))) * 128


def priority_to_amq(p: int) -> int:
    return max(0, min(9, 4 - round((p - DEFAULT_PRIORITY) / 128)))


def message_id_to_spool(text: str) -> str:
    """A STOMP message-id as a spoolq id: a UUID is used as is; any other text maps
    deterministically to a name-based UUID (uuid5 under a fixed namespace), so a
    resent SEND with the same message-id is a duplicate."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return str(uuid.uuid5(_MSGID_NS, text))


def to_send_options(frame: Frame, now_ms: int) -> dict[str, Any]:
    """SEND headers -> keyword options for ``Spool.send``."""
    opts: dict[str, Any] = {}
    p = frame.get("priority")
    if p is not None:
        if not p.strip().isdigit():
            raise StompError(f"priority {p!r} must be 0 to 9")
        opts["priority"] = amq_to_priority(int(p))
    exp = frame.get("expires")
    if exp not in (None, "", "0"):
        try:
            ms = int(exp)  # type: ignore[arg-type]
        except ValueError:
            raise StompError(f"expires {exp!r} must be milliseconds since the epoch") from None
        opts["ttl"] = max(0.001, (ms - now_ms) / 1000)
    d = frame.get("AMQ_SCHEDULED_DELAY")
    if d not in (None, "", "0"):
        try:
            opts["delay"] = max(0, int(d)) / 1000  # type: ignore[arg-type]
        except ValueError:
            raise StompError(f"AMQ_SCHEDULED_DELAY {d!r} must be milliseconds") from None
    mid = frame.get("message-id")
    if mid:
        opts["id"] = message_id_to_spool(mid)
    headers: dict[str, str] = {}
    for k, v in frame.headers:
        if k not in _RESERVED and k not in headers:
            headers[k] = v
    if mid:
        headers["message-id"] = mid
    if len(headers) > MAX_HEADERS:
        raise StompError(f"{len(headers)} headers is more than spoolq's limit of {MAX_HEADERS}")
    if headers:
        opts["headers"] = headers
    return opts


def parse_destination(dest: str | None) -> tuple[str, str]:
    if not dest:
        raise StompError("missing destination header")
    for kind in ("queue", "topic"):
        prefix = f"/{kind}/"
        if dest.startswith(prefix):
            name = dest[len(prefix):]
            try:
                check_channel(name)
            except SpoolqError as e:
                raise StompError(f"bad destination {dest!r}: {e}") from None
            return kind, name
    raise StompError(f"destination {dest!r} must be /queue/<channel> or /topic/<name>")


@dataclass(slots=True)
class _Pending:
    ack_id: str
    lease: Lease | None  # None for topic messages
    message_id: str


@dataclass(slots=True, eq=False)
class _Sub:
    id: str
    kind: str
    name: str
    destination: str
    ack: str
    prefetch: int
    pending: OrderedDict[str, _Pending] = field(default_factory=OrderedDict)
    task: asyncio.Task[None] | None = None
    room: asyncio.Event = field(default_factory=asyncio.Event)


async def _commit_transaction(spool: Spool, sends: Sequence[tuple[bytes, str, dict[str, Any]]],
                              acks: Sequence[Lease]) -> None:
    """Apply a STOMP transaction's sends and acks together: one spool transaction, all or nothing."""
    await spool.acommit(sends, acks)


class Server:
    """A STOMP server on one spool. ``tokens``: passcode -> scopes; empty means no login (loopback)."""

    def __init__(self, spool: Spool, *, tokens: Sequence[Token] = (), heartbeat: tuple[int, int] = (10000, 10000),
                 visibility: float = 60.0, max_frame_size: int | None = None) -> None:
        self.spool = spool
        self.tokens = list(tokens)
        self.heartbeat = heartbeat
        self.visibility = visibility
        self.max_frame_size = max_frame_size or max(spool.max_message_size + 64 * 1024, 1 << 16)
        self.hub = BellHub(spool.path / "bells")
        self.topics: dict[str, set[tuple[Session, _Sub]]] = {}
        self.sessions: set[Session] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._handlers: set[asyncio.Task[Any]] = set()  # the TCP connections' tasks (see close)
        self._started = False
        self._n = 0

    def _start(self) -> None:
        if not self._started:
            self.hub.start()
            self._started = True

    async def listen(self, host: str, port: int, ssl: Any = None) -> tuple[str, int]:
        self._start()
        srv = await asyncio.start_server(self._tcp, host, port, ssl=ssl, limit=1 << 16)
        self._servers.append(srv)
        addr = srv.sockets[0].getsockname()
        return addr[0], addr[1]

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def send(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        def close() -> None:
            writer.close()

        session = Session(self, send, close)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            while not session.closed:
                data = await reader.read(1 << 16)
                if not data:
                    break
                await session.data_received(data)
        except (ConnectionError, OSError):
            pass
        finally:
            if task is not None:
                self._handlers.discard(task)
            await session.connection_lost()
            with contextlib.suppress(Exception):
                writer.close()

    def new_session(self, send: Callable[[bytes], Awaitable[None]], close: Callable[[], None]) -> Session:
        """For other transports (WebSocket): feed ``data_received``, call ``connection_lost`` at the end."""
        self._start()
        return Session(self, send, close)

    def next_id(self) -> str:
        self._n += 1
        return str(self._n)

    async def close(self) -> None:
        for srv in self._servers:
            srv.close()
        for s in list(self.sessions):
            await s.connection_lost()
            s.close_transport()
        if self._handlers:  # their reads end with the transports: let them finish rather than be cancelled
            await asyncio.wait(list(self._handlers), timeout=5)  # (asyncio 3.11 logs a cancelled one's error)
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await srv.wait_closed()
        self.hub.close()

    async def lease_async(self, channel: str, n: int, wait: float) -> list[Lease]:
        bell = channel_bell(check_channel(channel))  # before the bell: its file is named after the channel
        ev = self.hub.subscribe(bell, create=False)  # a client names the channel: no file made for it
        # counted on time.monotonic(): uvloop's loop.time() is whole ms from the loop's wake-up, and a
        # wait counted on it could end up to ~1 ms early
        deadline = time.monotonic() + wait
        try:
            while True:
                ev.clear()
                leases = await lease_in_thread(self.spool, channel, n, self.visibility)
                remaining = deadline - time.monotonic()
                if leases or remaining <= 0:
                    return leases
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ev.wait(), min(remaining, 0.5))
        finally:
            self.hub.unsubscribe(bell, ev)


class Session:
    """One STOMP connection."""

    def __init__(self, server: Server, send: Callable[[bytes], Awaitable[None]], close: Callable[[], None]) -> None:
        self.server = server
        self._send = send
        self.close_transport = close
        self.parser = Parser(max_frame_size=server.max_frame_size)
        self.version = "1.2"
        self.connected = False
        self.closed = False
        self.scopes: frozenset[str] = frozenset()
        self.subs: dict[str, _Sub] = {}
        self.acks: dict[str, tuple[_Sub, _Pending]] = {}
        self.by_msgid: dict[str, str] = {}
        self.tx: dict[str, list[tuple[str, Any]]] = {}
        self.id = f"spoolq-{uuid.uuid4().hex[:16]}"
        self.last_rx = time.monotonic()
        self._hb_tasks: list[asyncio.Task[None]] = []
        self._keepalive: asyncio.Task[None] | None = None
        self._wlock = asyncio.Lock()
        server.sessions.add(self)

    # -- I/O --------------------------------------------------------------------------------

    async def write(self, frame: Frame) -> None:
        data = encode(frame, self.version)
        async with self._wlock:
            await self._send(data)

    async def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        try:
            events = self.parser.feed(data)
        except StompWireError as e:
            await self.error(str(e), None)
            return
        # ACKs that arrive together (pipelined, one read) are applied in one ack_many: one
        # transaction instead of one each; their RECEIPTs follow it, in order.
        acks: list[Lease] = []
        receipts: list[str] = []
        for ev in events:
            if self.closed:
                return
            if ev is HEARTBEAT:
                continue
            assert isinstance(ev, Frame)
            try:
                if ev.command == "ACK" and self.connected and "transaction" not in ev:
                    sub, items = self._find_ack(ev)
                    self._forget(sub, items)
                    acks += [p.lease for p in items if p.lease is not None]
                    if ev.get("receipt") is not None:
                        receipts.append(ev.get("receipt") or "")
                    continue
                if acks or receipts:
                    await self._flush_acks(acks, receipts)
                    acks, receipts = [], []
                await self.handle(ev)
            except (StompError, SpoolqError) as e:
                if acks or receipts:
                    with contextlib.suppress(Exception):
                        await self._flush_acks(acks, receipts)
                await self.error(str(e), ev)
                return
            except Exception as e:  # a bug: say so to the client, keep serving the others
                log.exception("stomp session %s: %s failed", self.id, ev.command)
                await self.error(f"internal error: {type(e).__name__}", ev)
                return
        if (acks or receipts) and not self.closed:
            await self._flush_acks(acks, receipts)
        if self.parser.error is not None and not self.closed:
            await self.error(str(self.parser.error), None)

    async def _flush_acks(self, acks: list[Lease], receipts: list[str]) -> None:
        if acks:
            await asyncio.to_thread(_ack_all, self.server.spool, acks)
        for r in receipts:
            await self.write(Frame("RECEIPT", (("receipt-id", r),)))

    async def error(self, message: str, frame: Frame | None) -> None:
        headers = [("message", message.splitlines()[0][:200] if message else "error")]
        if frame is not None and frame.get("receipt"):
            headers.append(("receipt-id", frame.get("receipt") or ""))
        headers.append(("content-type", "text/plain"))
        with contextlib.suppress(Exception):
            await self.write(Frame("ERROR", tuple(headers), message.encode()))
        await self.connection_lost()
        self.close_transport()

    async def connection_lost(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.server.sessions.discard(self)
        for t in self._hb_tasks:
            t.cancel()
        if self._keepalive is not None:
            self._keepalive.cancel()
        leases: list[Lease] = []
        for sub in self.subs.values():
            self._stop_sub(sub)
            leases += [p.lease for p in sub.pending.values() if p.lease is not None]
        self.subs.clear()
        if leases:
            await asyncio.to_thread(_give_back, leases)

    # -- frames -----------------------------------------------------------------------------

    async def handle(self, f: Frame) -> None:
        cmd = f.command
        if cmd in ("CONNECT", "STOMP"):
            await self.on_connect(f)
            return
        if not self.connected:
            raise StompError(f"{cmd} before CONNECT")
        tx = f.get("transaction")
        if tx is not None and cmd in ("SEND", "ACK", "NACK"):
            if tx not in self.tx:
                raise StompError(f"unknown transaction {tx!r}")
            if cmd == "SEND":
                self._need("send")
                self.tx[tx].append((cmd, self._prepare_send(f)))
            else:
                self.tx[tx].append((cmd, self._find_ack(f)))
        elif cmd == "SEND":
            await self.on_send(f)
        elif cmd == "SUBSCRIBE":
            await self.on_subscribe(f)
        elif cmd == "UNSUBSCRIBE":
            await self.on_unsubscribe(f)
        elif cmd in ("ACK", "NACK"):
            await self._settle(cmd, self._find_ack(f))
        elif cmd == "BEGIN":
            name = self._tx_name(f)
            if name in self.tx:
                raise StompError(f"transaction {name!r} already begun")
            self.tx[name] = []
        elif cmd == "COMMIT":
            await self.on_commit(self.tx.pop(self._tx_name(f, known=True)))
        elif cmd == "ABORT":
            self.tx.pop(self._tx_name(f, known=True))
        elif cmd == "DISCONNECT":
            await self._receipt(f)
            await self.connection_lost()
            self.close_transport()
            return
        await self._receipt(f)

    async def _receipt(self, f: Frame) -> None:
        r = f.get("receipt")
        if r is not None:
            await self.write(Frame("RECEIPT", (("receipt-id", r),)))

    def _tx_name(self, f: Frame, known: bool = False) -> str:
        name = f.get("transaction")
        if not name:
            raise StompError(f"{f.command} without a transaction header")
        if known and name not in self.tx:
            raise StompError(f"unknown transaction {name!r}")
        return name

    def _need(self, scope: str) -> None:
        if self.scopes is not None and scope not in self.scopes and "admin" not in self.scopes:
            raise StompError(f"the login has no {scope!r} scope")

    async def on_connect(self, f: Frame) -> None:
        if self.connected:
            raise StompError("already connected")
        accept = f.get("accept-version")
        offered = [v.strip() for v in accept.split(",")] if accept else ["1.0"]
        version = next((v for v in VERSIONS if v in offered), None)
        if version is None:
            self.version = "1.2"
            raise StompError(f"supported protocol versions are {','.join(VERSIONS)}")
        self.version = self.parser.version = version
        if f.command == "STOMP" and version == "1.0":
            raise StompError("the STOMP frame needs accept-version 1.1 or 1.2")
        if version != "1.0" and not f.get("host"):
            raise StompError("CONNECT without a host header")
        if self.server.tokens:
            code = f.get("passcode") or ""
            tok = next((t for t in self.server.tokens if hmac.compare_digest(t.secret.encode(), code.encode())), None)
            if tok is None:
                raise StompError("login failed: passcode must be a node token")
            self.scopes = tok.scopes
        else:
            self.scopes = frozenset({"admin"})
        cx, cy = _heartbeat(f.get("heart-beat"))
        sx, sy = self.server.heartbeat if version != "1.0" else (0, 0)
        out = sx and cy and max(sx, cy)
        inn = sy and cx and max(sy, cx)
        headers = [("version", version), ("server", f"spoolq/{__version__}"), ("session", self.id)]
        if version != "1.0":
            headers.append(("heart-beat", f"{sx},{sy}"))
        self.connected = True
        ACTOR.set(("stomp", None))  # this connection's sends, in the event log (spoolq trace)
        await self.write(Frame("CONNECTED", tuple(headers)))
        if out:
            self._hb_tasks.append(asyncio.create_task(self._beat(out / 1000)))
        if inn:
            self._hb_tasks.append(asyncio.create_task(self._watch(inn / 1000)))

    async def _beat(self, every: float) -> None:
        with contextlib.suppress(Exception):
            while not self.closed:
                await asyncio.sleep(every)
                async with self._wlock:
                    await self._send(b"\n")

    async def _watch(self, every: float) -> None:
        while not self.closed:
            await asyncio.sleep(every)
            if time.monotonic() - self.last_rx > 2 * every:  # spec: allow a margin
                log.info("stomp session %s: no heart-beat for %.1fs, closing", self.id, 2 * every)
                await self.connection_lost()
                self.close_transport()
                return

    def _prepare_send(self, f: Frame) -> tuple[bytes, str, str, dict[str, Any]]:
        kind, name = parse_destination(f.get("destination"))
        return f.body, kind, name, to_send_options(f, int(time.time() * 1000))

    async def on_send(self, f: Frame) -> None:
        self._need("send")
        body, kind, name, opts = self._prepare_send(f)
        if kind == "topic":
            await self.server_publish(name, f, body)
        else:
            await self.server.spool.asend(body, name, **opts)

    async def server_publish(self, name: str, f: Frame, body: bytes) -> None:
        mid = f.get("message-id") or new_id()
        hdrs = [(k, v) for k, v in f.headers if k not in _RESERVED]
        for sess, sub in list(self.server.topics.get(name, ())):
            with contextlib.suppress(Exception):
                await sess.deliver(sub, mid, f"/topic/{name}", body, hdrs, None, False)

    async def on_commit(self, ops: list[tuple[str, Any]]) -> None:
        sends: list[tuple[bytes, str, dict[str, Any]]] = []
        acks: list[Lease] = []
        nacks: list[tuple[str, Any]] = []
        topic: list[tuple[str, bytes]] = []
        for cmd, arg in ops:
            if cmd == "SEND":
                body, kind, name, opts = arg
                if kind == "topic":
                    topic.append((name, body))
                else:
                    sends.append((body, name, opts))
            elif cmd == "ACK":
                sub, items = arg
                acks += [p.lease for p in items if p.lease is not None]
                self._forget(sub, items)
            else:
                nacks.append((cmd, arg))
        await _commit_transaction(self.server.spool, sends, acks)
        for name, body in topic:
            await self.server_publish(name, Frame("SEND"), body)
        for cmd, arg in nacks:
            await self._settle(cmd, arg)

    async def on_subscribe(self, f: Frame) -> None:
        self._need("consume")
        sid = f.get("id") or (f.get("destination") if self.version == "1.0" else None)
        if not sid:
            raise StompError("SUBSCRIBE without an id header")
        if sid in self.subs:
            raise StompError(f"subscription id {sid!r} already in use")
        dest = f.get("destination")
        kind, name = parse_destination(dest)
        ack = f.get("ack", "auto") or "auto"
        if ack not in ("auto", "client", "client-individual"):
            raise StompError(f"ack mode {ack!r} must be auto, client or client-individual")
        pf = f.get("activemq.prefetchSize") or f.get("prefetch-count")
        if pf is not None:
            if not pf.isdigit() or int(pf) < 1:
                raise StompError(f"prefetch {pf!r} must be a positive integer")
            prefetch = int(pf)
        else:
            prefetch = 1 if ack != "auto" else 100
        sub = _Sub(sid, kind, name, dest or "", ack, prefetch)
        self.subs[sid] = sub
        if kind == "topic":
            self.server.topics.setdefault(name, set()).add((self, sub))
        else:
            sub.task = asyncio.create_task(self._pump(sub))

    def _stop_sub(self, sub: _Sub) -> None:
        if sub.task is not None:
            sub.task.cancel()
        if sub.kind == "topic":
            subs = self.server.topics.get(sub.name)
            if subs is not None:
                subs.discard((self, sub))
                if not subs:
                    del self.server.topics[sub.name]

    async def on_unsubscribe(self, f: Frame) -> None:
        sid = f.get("id") or (f.get("destination") if self.version == "1.0" else None)
        sub = self.subs.pop(sid or "", None)
        if sub is None:
            raise StompError(f"no subscription {sid!r}")
        self._stop_sub(sub)
        leases = [p.lease for p in sub.pending.values() if p.lease is not None]
        for p in sub.pending.values():
            self.acks.pop(p.ack_id, None)
            self.by_msgid.pop(p.message_id, None)
        if leases:
            await asyncio.to_thread(_give_back, leases)

    async def _pump(self, sub: _Sub) -> None:
        server = self.server
        try:
            while not self.closed:
                room = sub.prefetch - len(sub.pending) if sub.ack != "auto" else sub.prefetch
                if room <= 0:
                    sub.room.clear()
                    await sub.room.wait()
                    continue
                leases = await server.lease_async(sub.name, room, 30.0)
                if not leases:
                    continue
                if self.closed or sub.id not in self.subs:
                    await asyncio.to_thread(_never_sent, server.spool, leases)
                    return
                for i, lease in enumerate(leases):
                    try:
                        await self.deliver(sub, lease.id, sub.destination, lease.body,
                                           list(lease.headers.items()), lease, lease.attempts > 1)
                    except BaseException:
                        rest = [x for x in leases[i:] if all(p.lease is not x for p in sub.pending.values())]
                        if rest:
                            await asyncio.to_thread(_never_sent, server.spool, rest)
                        raise
                if sub.ack == "auto":
                    await asyncio.to_thread(server.spool.ack_many, leases)
        except asyncio.CancelledError:
            pass
        except (ConnectionError, OSError):
            pass
        except SpoolqError as e:  # pragma: no cover - storage trouble
            log.warning("stomp subscription %s: %s", sub.id, e)

    async def deliver(self, sub: _Sub, mid: str, dest: str, body: bytes, hdrs: list[tuple[str, str]],
                      lease: Lease | None, redelivered: bool) -> None:
        headers = [("subscription", sub.id), ("message-id", mid), ("destination", dest)]
        if sub.ack != "auto":
            ack_id = self.server.next_id()
            p = _Pending(ack_id, lease, mid)
            sub.pending[ack_id] = p
            self.acks[ack_id] = (sub, p)
            self.by_msgid[mid] = ack_id
            if self.version == "1.2":
                headers.append(("ack", ack_id))
            if lease is not None and self._keepalive is None:
                self._keepalive = asyncio.create_task(self._touch_loop())
        if lease is not None:
            headers.append(("priority", str(priority_to_amq(lease.priority))))
            if lease.expires_at is not None:
                headers.append(("expires", str(int(lease.expires_at * 1000))))
            if redelivered:
                headers.append(("redelivered", "true"))
        seen = {k for k, _ in headers}
        headers += [(k, v) for k, v in hdrs if k not in seen and k != "content-length"]
        await self.write(Frame("MESSAGE", tuple(headers), body))

    async def _touch_loop(self) -> None:
        """A STOMP client may hold an unacked message as long as it likes: keep its leases alive."""
        every = self.server.visibility / 3
        while not self.closed:
            await asyncio.sleep(every)
            leases = [p.lease for sub in self.subs.values() for p in sub.pending.values() if p.lease is not None]
            if leases:
                await asyncio.to_thread(_touch_all, leases, self.server.visibility)

    def _find_ack(self, f: Frame) -> tuple[_Sub, list[_Pending]]:
        if self.version == "1.2":
            key = f.get("id")
            if not key:
                raise StompError(f"{f.command} without an id header")
        else:
            mid = f.get("message-id")
            if not mid:
                raise StompError(f"{f.command} without a message-id header")
            key = self.by_msgid.get(mid, "")
        hit = self.acks.get(key)
        if hit is None:
            raise StompError(f"{f.command}: no unacknowledged message with that id")
        sub, p = hit
        if sub.ack == "client":  # cumulative: this one and every earlier one of the subscription
            items = []
            for k, q in sub.pending.items():
                items.append(q)
                if k == p.ack_id:
                    break
            return sub, items
        return sub, [p]

    def _forget(self, sub: _Sub, items: list[_Pending]) -> None:
        for p in items:
            sub.pending.pop(p.ack_id, None)
            self.acks.pop(p.ack_id, None)
            self.by_msgid.pop(p.message_id, None)
        sub.room.set()

    async def _settle(self, cmd: str, arg: tuple[_Sub, list[_Pending]]) -> None:
        sub, items = arg
        leases = [p.lease for p in items if p.lease is not None]
        self._forget(sub, items)
        if not leases:
            return
        if cmd == "ACK":
            await asyncio.to_thread(self.server.spool.ack_many, leases)
        else:
            await asyncio.to_thread(_nack_all, leases)


def _give_back(leases: list[Lease]) -> None:
    """Messages a client saw and did not ack (it disconnected or unsubscribed): ready again at once.

    The delivery counts as an attempt (as RabbitMQ marks them redelivered), so a message that makes
    every consumer crash ends in dead letters after ``max_attempts``."""
    for lease in leases:
        with contextlib.suppress(LeaseError):
            lease.nack(0)


def _never_sent(spool: Spool, leases: list[Lease]) -> None:
    """Leases taken for a subscription that was gone before they were sent: back, uncounted."""
    spool.release(leases)


def _ack_all(spool: Spool, leases: list[Lease]) -> None:
    """Ack many; when one lease has expired or was lost, ack the others one by one (STOMP has no
    per-message answer to an ACK, and the client's message will simply come again)."""
    try:
        spool.ack_many(leases)
    except LeaseError:
        for lease in leases:
            with contextlib.suppress(LeaseError):
                lease.ack()


def _touch_all(leases: list[Lease], visibility: float) -> None:
    for lease in leases:
        with contextlib.suppress(LeaseError):
            lease.touch(visibility)


def _nack_all(leases: list[Lease]) -> None:
    for lease in leases:
        with contextlib.suppress(LeaseError):
            lease.nack()  # spoolq backoff; dead letter after max_attempts


def _heartbeat(value: str | None) -> tuple[int, int]:
    if not value:
        return 0, 0
    try:
        a, b = value.split(",")
        x, y = int(a), int(b)
    except ValueError:
        raise StompError(f"heart-beat {value!r} must be two integers: cx,cy") from None
    if x < 0 or y < 0:
        raise StompError("heart-beat values must not be negative")
    return x, y


async def serve(spool: Spool, host: str, port: int, *, ssl: Any = None, tokens: Sequence[Token] = (),
                ready: Callable[[str, int], None] | None = None, heartbeat: tuple[int, int] = (10000, 10000)) -> None:
    """Run a standalone STOMP server until cancelled."""
    server = Server(spool, tokens=tokens, heartbeat=heartbeat)
    h, p = await server.listen(host, port, ssl=ssl)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):  # SIGTERM: give held messages back, then exit
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    if ready is not None:
        ready(h, p)
    try:
        await stop.wait()
    finally:
        await server.close()
