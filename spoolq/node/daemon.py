"""``spoolq node``: the daemon beside a spool. The only place that wires the pieces.

A node holds the spool's lock (one daemon per spool), serves HTTP
(``server.py``), runs one forwarding loop per outbox peer (``forwarder.py``),
sweeps time-driven chores, and writes ``node.json`` (pid, URL, node id) into
the spool so tools and tests can find it. Signals: SIGTERM/SIGINT stop it
gracefully (exit 0); SIGHUP reloads peers, routes and tokens from the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import gc
import json
import logging
import os
import resource
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from .. import __version__, _loop
from .._bell import OUTBOX, BellHub, channel_bell
from ..codec import BATCH_BYTES, BATCH_MESSAGES, MAX_IN_FLIGHT
from ..errors import SpoolqError, SpoolUnavailable
from ..lease import Lease
from ..message import check_channel
from ..routing import failover_parts
from ..spool import Spool
from .api import build_app
from .config import NodeConfig, PeerConfig, load_config, parse_listen
from .forwarder import PeerLink, Sink, Target
from .gate import BACKLOG, Gate, effective_cap
from .history import History, Sampler
from .metrics import Metrics
from .sdnotify import notify

__all__ = ["Node", "run_node", "setup_logging"]

log = logging.getLogger("spoolq.node")
T = TypeVar("T")

LOCK_FILE = "node.lock"
INFO_FILE = "node.json"
PRUNE_INTERVAL = 30.0  # seconds between two prunes of the trace log
NEW_PEER_GAP = 0.05  # the outbox bell looks for new outbox peers at most this often (seconds; see _outbox_bell_loop)
GC_THRESHOLD = 50_000  # allocations between two young-generation collections (see run_node)


# -- logging --------------------------------------------------------------------------------


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(json_lines: bool = False, level: int = logging.INFO) -> None:
    """One line per event on stderr: readable, or JSON with ``json_lines``."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)-5s %(name)s: %(message)s",
                                               "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class _LoopThread:
    """An event loop in a thread of its own, for a front-end that runs spool calls inline."""

    def __init__(self, name: str) -> None:
        self.loop = _loop.new_event_loop()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on this loop; await its result from another loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


# -- the node -----------------------------------------------------------------------------------


class Node:
    """A running node: spool, HTTP server, forwarders and chores.

    Args:
        config: validated configuration.
        spool: an open spool to use (default: open ``config.spool``).
    """

    def __init__(self, config: NodeConfig, *, spool: Spool | None = None) -> None:
        self.config = config
        self._own_spool = spool is None
        self.spool = spool or Spool(config.spool, durability=config.durability,  # type: ignore[arg-type]
                                    max_message_size=config.max_message_size)  # trace: the spool's (start)
        self.metrics = Metrics()
        self.history: History | None = History(config.history_interval)
        self.bells = BellHub(self.spool.path / "bells")
        self.links: dict[str, PeerLink] = {}
        self.url = ""
        self.started_at = time.time()
        self._lock_fd: int | None = None
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self.gate: Gate | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._link_tasks: dict[str, asyncio.Task[None]] = {}
        self._sinks: dict[tuple[str, str], Sink] = {}  # bridge peers: (name, _sink_key) -> sink
        self.sources: dict[str, Any] = {}  # name -> bridges.source.SourceLoop
        self._source_tasks: dict[str, asyncio.Task[None]] = {}
        self._outbox_event: asyncio.Event | None = None
        self._unknown_warned: set[str] = set()
        self._stopping = False
        self.beanstalk: Any = None
        self._beanstalk_loop: _LoopThread | None = None
        self.beanstalk_addr: str | None = None
        self.stomp: Any = None  # spoolq.stomp.server.Server when [stomp] is configured
        self.stomp_addr: str | None = None

    # -- start and stop -------------------------------------------------------------------

    def _lock(self) -> None:
        path = self.spool.path / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            other = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise SpoolUnavailable(
                    f"another spoolq node (pid {other or '?'}) is already running on the spool {self.spool.path}",
                    hint="stop it first, or give this node its own spool with --spool",
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _server_ssl(self) -> ssl.SSLContext | None:
        if not self.config.tls_cert:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return ctx

    async def start(self) -> str:
        """Take the spool's lock, start serving and forwarding. Returns the URL it listens on."""
        self._lock()
        try:
            host, port = parse_listen(self.config.listen)
            self.spool.set_routes(self.config.routes)
            # the event log is the spool's setting: library processes using this spool log too
            self.spool.set_trace(self.config.trace)
            self.metrics.watch(self.spool, lambda: list(self.links.values()))
            self.bells.start()
            self._outbox_event = self.bells.subscribe(OUTBOX)
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=60, connect=10),
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=16),
                headers={"User-Agent": f"spoolq/{__version__}"},
            )
            self._runner = web.AppRunner(build_app(self), access_log=None, handle_signals=False,
                                         keepalive_timeout=self.config.keepalive_timeout)
            await self._runner.setup()
            tls = self._server_ssl()
            assert self._runner.server is not None
            soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            cap = effective_cap(self.config.max_connections, None if soft == resource.RLIM_INFINITY else soft)
            if cap < self.config.max_connections:
                log.info("at most %d connections (node.max_connections is %d, the fd limit is %d)",
                         cap, self.config.max_connections, soft)
            self.gate = Gate(self._runner.server, cap)
            self._listener = await asyncio.get_running_loop().create_server(
                self.gate, host, port, ssl=tls, reuse_address=True, backlog=BACKLOG)
            sock = self._listener.sockets[0] if self._listener.sockets else None
            bound = sock.getsockname() if sock is not None else (host, port)
            shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
            self.url = f"{'https' if tls else 'http'}://{shown}:{bound[1]}"
            if self.config.beanstalk:
                from ..beanstalk.server import Server as BeanstalkServer
                from ..beanstalk.standalone import bind

                addr = self.config.beanstalk
                if addr.startswith("unix:"):
                    bsock = bind(addr, 0)
                else:
                    bhost, bport = parse_listen(addr, key="node.beanstalk")
                    bsock = bind(bhost, bport)
                spool, size = self.spool, self.config.beanstalk_max_job_size

                async def serve_beanstalk() -> Any:
                    server = BeanstalkServer(spool, max_job_size=size)
                    await server.listen(bsock)
                    return server

                # its quick spool calls run inline on its loop: a loop of its own keeps a held write lock
                # from stalling HTTP, /healthz and forwarding
                self._beanstalk_loop = _LoopThread("spoolq-beanstalk")
                self.beanstalk = await self._beanstalk_loop.call(serve_beanstalk())
                bname = bsock.getsockname()
                self.beanstalk_addr = addr if addr.startswith("unix:") else f"{bname[0]}:{bname[1]}"
            if self.config.stomp is not None:
                await self._start_stomp()
            self._write_info()
            self._tasks = [
                asyncio.create_task(self._scan_loop(), name="scan"),
                asyncio.create_task(self._sweep_loop(), name="sweep"),
                asyncio.create_task(self._prune_loop(), name="prune-events"),
                asyncio.create_task(self._outbox_bell_loop(), name="outbox-bell"),
            ]
            if self.history is not None:
                sampler = Sampler(self.history, self.spool.stats,
                                  lambda: {name: link.forwarded for name, link in self.links.items()})
                self._tasks.append(asyncio.create_task(sampler.run(), name="history"))
            await self._sync_links()
            self._sync_sources()
            self._tasks.append(asyncio.create_task(self._say_hello(), name="hello"))
        except BaseException:
            await self.stop()
            raise
        auth = f"{len(self.config.tokens)} tokens" if self.config.tokens else \
            "no tokens: anyone who can reach this loopback address may use it"
        log.info("node %s listening on %s (spool %s, durability %s, %s, %d peers, %d routes)",
                 self.spool.node_id, self.url, self.spool.path, self.spool.durability, auth,
                 len(self.config.peers), len(self.config.routes))
        log.info("event loop: %s (SPOOLQ_LOOP=asyncio forces asyncio's)", type(asyncio.get_running_loop()).__module__)
        if self.beanstalk_addr:
            log.info("beanstalkd protocol on %s", self.beanstalk_addr)
        return self.url

    async def _start_stomp(self) -> None:
        from ..stomp.server import Server as StompServer
        from ..stomp.server import Token

        sc = self.config.stomp
        assert sc is not None
        ctx = None
        if sc.tls_cert:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(sc.tls_cert, sc.tls_key)
        self.stomp = StompServer(self.spool, tokens=[Token(t.token, t.scopes) for t in self.config.tokens])
        shost, sport = parse_listen(sc.listen, key="stomp.listen")
        h, p = await self.stomp.listen(shost, sport, ssl=ctx)
        self.stomp_addr = f"{h}:{p}"
        log.info("STOMP on %s%s", self.stomp_addr, " (TLS)" if ctx else "")

    def _write_info(self) -> None:
        info = {"pid": os.getpid(), "url": self.url, "node_id": self.spool.node_id, "version": __version__,
                "beanstalk": self.beanstalk_addr, "stomp": self.stomp_addr}
        path = self.spool.path / INFO_FILE
        tmp = path.with_name(f".{INFO_FILE}.tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, path)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop serving, let in-flight batches finish for ``grace`` seconds, close everything."""
        if self._stopping:
            return
        self._stopping = True
        if self._listener is not None:
            self._listener.close()  # stop taking new work
        if self.beanstalk is not None and self._beanstalk_loop is not None:
            with contextlib.suppress(Exception):
                await self._beanstalk_loop.call(self.beanstalk.close())
        if self._beanstalk_loop is not None:
            await asyncio.to_thread(self._beanstalk_loop.stop)
            self._beanstalk_loop = None
        if self.stomp is not None:
            with contextlib.suppress(Exception):
                await self.stomp.close()
        await asyncio.gather(*(link.stop(grace) for link in self.links.values()), return_exceptions=True)
        for src in self.sources.values():
            src.stop()
        for t in [*self._tasks, *self._link_tasks.values(), *self._source_tasks.values()]:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._link_tasks.values(), *self._source_tasks.values(),
                             return_exceptions=True)
        for sink in self._sinks.values():
            with contextlib.suppress(Exception):
                await sink.close()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        self.bells.close()
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                (self.spool.path / INFO_FILE).unlink()
        if self._own_spool:
            await asyncio.to_thread(self.spool.close)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None
        log.info("node stopped")

    async def reload(self, config: NodeConfig) -> None:
        """Apply new peers, routes and tokens (the listen address and spool stay)."""
        self.config = config
        self.spool.set_routes(config.routes)
        for key in list(self._sinks):  # bridge peers removed or pointed elsewhere: close their connections
            peer = config.peer(key[0])
            if peer is None or _sink_key(peer) != key[1]:
                with contextlib.suppress(Exception):
                    await self._sinks.pop(key).close()
        for name in list(self.links):
            targets = self._targets(name)
            link = self.links[name]
            old = {t.name: t for t in link.targets}
            for t in targets:  # keep the health of targets that did not change
                if t.name in old and old[t.name].url == t.url:
                    t.failures, t.retry_at = old[t.name].failures, old[t.name].retry_at
            link.targets = targets
            peer = self.config.peer(failover_parts(name)[0])
            if peer is not None:
                link.max_in_flight = peer.max_in_flight
                link.batch_messages = peer.batch_messages
                link.batch_bytes = peer.batch_bytes
            link.backoff_base, link.backoff_cap = config.backoff_base, config.backoff_cap
            link.wake.set()
        self._unknown_warned.clear()
        await self._sync_links()
        self._sync_sources()
        log.info("configuration reloaded: %d peers, %d routes, %d tokens",
                 len(config.peers), len(config.routes), len(config.tokens))

    # -- forwarding -------------------------------------------------------------------------

    def _ssl_for(self, peer: PeerConfig | None, url: str) -> ssl.SSLContext | None:
        if not url.startswith("https://"):
            return None
        cafile = (peer.ca_file if peer else None) or self.config.ca_file
        return ssl.create_default_context(cafile=cafile)

    def _target(self, name: str) -> Target | None:
        if name.startswith(("http://", "https://")):
            url = name.rstrip("/")
            peer = next((p for p in self.config.peers if p.url == url), None)
            return Target(name, url, peer.token if peer else None, self._ssl_for(peer, url))
        peer = self.config.peer(name)
        if peer is None:
            return None
        if not peer.url.startswith(("http://", "https://")):  # a broker: only ever from the config
            from ..bridges import make_sink, redact

            key = (name, _sink_key(peer))
            sink = self._sinks.get(key)
            if sink is None:
                sink = self._sinks[key] = make_sink(name, peer.url, peer.options)
            return Target(name, redact(peer.url), sink=sink)  # no password in logs and /healthz
        return Target(name, peer.url, peer.token, self._ssl_for(peer, peer.url))

    def _targets(self, outbox_peer: str) -> list[Target]:
        out = []
        for part in failover_parts(outbox_peer):
            t = self._target(part)
            if t is None:
                if part not in self._unknown_warned:
                    log.warning("messages for unknown peer %r wait in the outbox: add [peers.%s] to the config",
                                part, part)
                    self._unknown_warned.add(part)
                continue
            out.append(t)
        return out

    async def _sync_links(self) -> None:
        names = await asyncio.to_thread(self.spool.outbox_peers)
        for name in names:
            if name in self.links or self._stopping:
                continue
            first = failover_parts(name)[0]
            peer = self.config.peer(first)
            assert self._session is not None
            link = PeerLink(
                name, self._targets(name), self.spool, self._session, node_id=self.spool.node_id,
                max_in_flight=peer.max_in_flight if peer else MAX_IN_FLIGHT,
                batch_messages=peer.batch_messages if peer else BATCH_MESSAGES,
                batch_bytes=peer.batch_bytes if peer else BATCH_BYTES,
                backoff_base=self.config.backoff_base, backoff_cap=self.config.backoff_cap,
                scan_interval=self.config.scan_interval, metrics=self.metrics)
            self.links[name] = link
            # the outbox bell wakes the link itself: no hop through _outbox_bell_loop first (issue 15)
            self.bells.subscribe(OUTBOX, link.wake)
            self._link_tasks[name] = asyncio.create_task(link.run(), name=f"link-{name}")

    def _sync_sources(self) -> None:
        """Start a task per configured source; stop those no longer configured (or changed)."""
        wanted = {s.name: s for s in self.config.sources}
        for name in list(self.sources):
            if name not in wanted or wanted[name] != self.sources[name].cfg:
                self.sources.pop(name).stop()
                self._source_tasks.pop(name).cancel()
        if self._stopping or not wanted:
            return
        from ..bridges.source import SourceLoop

        for name, cfg in wanted.items():
            if name in self.sources:
                continue
            loop = SourceLoop(cfg, self.spool, backoff_base=self.config.backoff_base,
                              backoff_cap=self.config.backoff_cap)
            self.sources[name] = loop
            self._source_tasks[name] = asyncio.create_task(loop.run(), name=f"source-{name}")

    async def _say_hello(self) -> None:
        """Tell each configured peer this node is up (``POST /v1/hello``), so a peer that backs off
        from us after an outage tries again at once. Best effort: errors are ignored."""
        assert self._session is not None
        session = self._session

        async def hello(peer: PeerConfig) -> None:
            headers = {"Authorization": f"Bearer {peer.token}"} if peer.token else {}
            ctx = self._ssl_for(peer, peer.url)
            with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError):
                async with session.post(peer.url + "/v1/hello", json={"node_id": self.spool.node_id},
                                        headers=headers, timeout=aiohttp.ClientTimeout(total=5),
                                        ssl=ctx if ctx is not None else True) as resp:
                    await resp.read()

        await asyncio.gather(*(hello(p) for p in self.config.peers), return_exceptions=True)

    def peer_hello(self) -> None:
        """A peer says it is up: end the backoff of every target that gave no reply."""
        for link in self.links.values():
            for t in link.targets:
                link.peer_is_up(t)

    async def _outbox_bell_loop(self) -> None:
        assert self._outbox_event is not None
        while True:
            await self._outbox_event.wait()
            self._outbox_event.clear()
            # known links are subscribed to this bell themselves (_sync_links); looking for new
            # outbox peers costs a thread hop and a query, which they do not wait for (issue 15)
            known = len(self.links)
            await self._sync_links()
            for link in list(self.links.values())[known:]:
                link.wake.set()
            # Every send to a peer rings this bell: looking on each ring cost a thread hop and a query
            # per message, on the CPU the forwarding needed (issue 15). Rings during the gap are kept
            # by the event and looked at after it, so a new peer still gets its link within the gap.
            await asyncio.sleep(NEW_PEER_GAP)

    async def _scan_loop(self) -> None:
        """Covers what no bell announced: messages sent while the daemon was down, new peers."""
        while True:
            await asyncio.sleep(self.config.scan_interval)
            try:
                await self._sync_links()
            except SpoolqError as e:
                log.error("cannot scan the outbox: %s", e)
            for link in self.links.values():
                link.wake.set()

    async def _sweep_loop(self) -> None:
        while True:
            try:
                done = await asyncio.to_thread(self.spool.sweep)
                if done["expired"]:
                    log.info("dead-lettered %d messages whose ttl passed", done["expired"])
            except SpoolqError as e:
                log.error("sweep failed: %s", e)
            await asyncio.sleep(self.config.sweep_interval)

    async def _prune_loop(self) -> None:
        """Bound the event log (node.trace_retention, node.trace_max_rows), off the event loop."""
        while True:  # whatever the setting now: events logged before it was switched off age out too
            cfg = self.config
            try:
                n = await asyncio.to_thread(self.spool.event_log.prune, cfg.trace_retention, cfg.trace_max_rows)
                if n:
                    log.debug("pruned %d events from the trace log", n)
            except SpoolqError as e:
                log.error("pruning the trace log failed: %s", e)
            await asyncio.sleep(PRUNE_INTERVAL)

    # -- producing over HTTP --------------------------------------------------------------

    async def send(self, channel: str, items: list[tuple[bytes, dict[str, Any]]]) -> list[str]:
        """Send for the HTTP API: validated now, committed with every other send of this loop turn
        (one hand-off to the spool's writer thread, one transaction, one sync under ``full``)."""
        ids = await self.spool.asend_items(channel, items)
        if self.history is not None:
            self.history.came(channel, sum(1 for _, opts in items if not opts.get("to")))
        return ids

    async def send_one(self, channel: str, body: bytes) -> str:
        """:meth:`send` of one message without options (the API's ``{"body": "..."}``)."""
        mid = await self.spool.asend_one(body, channel)
        if self.history is not None:
            self.history.came(channel)
        return mid

    # -- consuming over HTTP ---------------------------------------------------------------

    async def lease_async(self, channel: str, n: int, visibility: float, wait: float,
                          gone: Callable[[], bool] | None = None) -> list[Lease]:
        """Lease without holding a thread while waiting: sleeps on the channel's bell.

        ``gone()`` says the client left: then nothing is leased, and leases just taken are given
        back uncounted (``Spool.release``), so a message is not hidden from everyone for the
        visibility nor spends an attempt on nobody.
        """
        bell = channel_bell(check_channel(channel))  # before the bell: its file is named after the channel
        ev = self.bells.subscribe(bell, create=False)  # a client names the channel: no file made for it
        # counted on time.monotonic(): uvloop's loop.time() is whole ms from the loop's wake-up, and a
        # wait counted on it could end up to ~1 ms early
        deadline = time.monotonic() + wait
        try:
            while True:
                ev.clear()
                if gone is not None and gone():
                    return []
                leases = await _loop.lease_in_thread(self.spool, channel, n, visibility)
                if leases and gone is not None and gone():
                    await self.release(leases)
                    return []
                remaining = deadline - time.monotonic()
                if leases or remaining <= 0 or self._stopping:
                    return leases
                # delayed messages and expiring leases ring no bell: look again at least twice a second
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ev.wait(), min(remaining, 0.5))
        finally:
            self.bells.unsubscribe(bell, ev)

    async def release(self, leases: list[Lease]) -> None:
        """Give back leases whose client is gone (see ``lease_async``)."""
        try:
            n = await asyncio.to_thread(self.spool.release, leases)
        except SpoolqError as e:  # they come back when their visibility runs out
            log.warning("cannot give back %d leases of a client that left: %s", len(leases), e)
            return
        self.metrics.leases_released.inc(n)

    def health(self, detail: bool = True) -> dict[str, Any]:
        """Liveness; with ``detail``, each peer's URL, failures, backoff and last error (which may
        quote a peer's reply: only for admins, or on a node without tokens)."""
        from ..bridges import redact

        now = time.monotonic()
        peers = {}
        up = down = 0
        for link in self.links.values():
            for t in link.targets:
                up, down = (up + 1, down) if t.failures == 0 else (up, down + 1)
                peers[t.name] = {
                    "url": redact(t.url), "up": t.failures == 0, "failures": t.failures,
                    "backoff_seconds": round(max(0.0, t.retry_at - now), 3),
                    "last_error": t.last_error, "forwarded": link.forwarded,
                }
        sources = {name: {"url": redact(src.cfg.url), "channel": src.cfg.channel, "up": src.failures == 0,
                          "failures": src.failures, "last_error": src.last_error, "stored": src.stored}
                   for name, src in self.sources.items()}
        out: dict[str, Any] = {"status": "ok", "uptime_seconds": round(time.time() - self.started_at, 3)}
        if not detail:
            return {**out, "peers_up": up, "peers_down": down}
        return {**out, "node_id": self.spool.node_id, "version": __version__, "url": self.url, "peers": peers,
                "sources": sources}


def _sink_key(peer: PeerConfig) -> str:
    """What a bridge sink is made from: a change of any of it makes a new sink (on reload)."""
    return peer.url + "\x00" + repr(sorted(peer.options.items()))


# -- running it -------------------------------------------------------------------------------


async def _serve(config: NodeConfig) -> int:
    node = Node(config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    pending: set[asyncio.Task[None]] = set()
    started = False
    early_hup = False

    def on_stop(sig: signal.Signals) -> None:
        log.info("received %s: stopping", sig.name)
        stop.set()

    def on_hup() -> None:
        nonlocal early_hup
        if not started:  # reload once the node is up
            early_hup = True
            return
        if not config.source:
            log.warning("SIGHUP: no config file to reload")
            return
        try:  # the listen address, spool and TLS files stay as started (flags included)
            new = load_config(config.source, spool=config.spool, listen=config.listen,
                              tls_cert=config.tls_cert, tls_key=config.tls_key)
        except SpoolqError as e:
            log.error("SIGHUP: keeping the old configuration: %s", e)
            return
        task = loop.create_task(node.reload(new))
        pending.add(task)
        task.add_done_callback(pending.discard)

    # handlers before start(): node.json, written there, tells tools the node is ready, and a
    # signal sent from then on must not find the default action (which kills without cleaning up)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop, sig)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await node.start()
    started = True
    # What exists now (modules, the app, the spool) lives as long as the process: take it out of the
    # garbage collector's view, so its full collections under load walk only what came since
    gc.freeze()
    # A forwarded or received batch is thousands of objects that live for a few ms: collected every 700
    # allocations, they were traversed while alive (and again once promoted), ~8% of a forwarding node's
    # CPU; with 50,000 most batches are freed before a collection sees them (issue 15)
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    # systemd's Type=notify: ready once the port is open and node.json written (no-op without NOTIFY_SOCKET)
    notify(f"READY=1\nSTATUS=serving on {node.url}\nMAINPID={os.getpid()}")
    if early_hup:
        on_hup()
    await stop.wait()
    notify("STOPPING=1")
    await node.stop()
    return 0


def run_node(config: NodeConfig) -> int:
    """Run a node until SIGTERM/SIGINT; returns the exit status."""
    setup_logging(config.log_json)
    return _loop.run(_serve(config))
