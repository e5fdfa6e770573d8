"""Forwarding the outbox: one loop per outbox peer.

Theory of operation
===================

The outbox is keyed ``(peer, priority, id)``. For each outbox peer (a peer
name, a URL, or a failover group ``a|b``) a :class:`PeerLink` reads batches in
key order with a *cursor* (the key of the last message it took), POSTs each
batch to the peer, and settles the reply in one transaction: accepted and
duplicate ids are removed, permanently rejected ones become dead letters,
the rest stay. Nothing is written to claim a batch: the daemon holds the
spool's lock, so it is the only forwarder, and the cursor keeps concurrent
batches (``max_in_flight``) disjoint. When the cursor reaches the end and no
batch is in flight, it starts again from the front, which picks up messages
that failed, arrived with a more urgent priority, or were retried from dead
letters.

A transport failure, a 4xx/5xx answer or an unreadable reply is *transient*:
(except a 413 for a batch of one message, which the peer will never take: that
message becomes a dead letter; a 413 for a larger batch halves the batch size)
the batch's messages stay in the outbox and the target backs off
exponentially with jitter (``retry.backoff``), reset by the next success.
A ``Retry-After`` in the answer lengthens the wait up to ``backoff_cap``, no
further: a peer (or a proxy) cannot stall forwarding beyond what the
operator configured.
Repeated errors are logged once, then summarised every 30 seconds. In a
failover group the first target that is not backing off gets the batch.

Transports: a batch goes through the target's :class:`Sink` (``deliver`` ->
one :class:`~spoolq.codec.Result` per message). :class:`HttpSink` POSTs to a
spoolq peer; ``spoolq.bridges`` has sinks for RabbitMQ, NATS JetStream and
Redis Streams. Everything above (cursor, batching, backoff, dead letters,
metrics) is the same for every sink.

A target that gave no reply at all (connection refused, reset, timed out) gets
one batch of at most ``UNREACHABLE_MESSAGES`` per attempt until it answers:
reading thousands of messages, and logging a failed attempt for each of them
(the event log), only to find the connection refused again would take the
spool's write lock from the producers for tens of milliseconds every time. It
is *probed* while it backs off: a ``GET /healthz`` every 0.5 to 1 s (jittered);
any HTTP answer ends its backoff, so forwarding resumes within about a second
of the peer coming back. A peer that answers with errors is not probed: its
backoff applies in full. A node that starts says so to its configured peers
(``POST /v1/hello``), which ends their backoff towards it at once.

Latency: an idle link woken by the outbox bell reads its first batch (at most
``INLINE_MESSAGES``) on the event loop when the read needs no wait, saving a
thread hop; later batches, and any read that would wait, come from a thread.
A link that read to the end of the outbox sleeps until the bell (or a batch it
could not go round for) wakes it, and POSTs to spoolq peers go through the
small client of ``peerhttp`` (issue 15). A batch read on the loop is short, so
it ends the step (the outbox was read to its end; what is sent later rings the
bell), and a small all-accepted answer is settled on the loop when that needs
no wait (no thread hop; the in-flight slot is free sooner).

``step()`` does one round and returns; ``run()`` repeats it until stopped,
waking on the outbox bell, on a finished batch, or after ``scan_interval``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import operator
import random
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import aiohttp

from .. import __version__
from ..codec import (
    ACCEPTED,
    ACCEPTED_RESULT,
    BATCH_BYTES,
    BATCH_MESSAGES,
    DUPLICATE,
    MAX_IN_FLIGHT,
    REJECTED,
    Result,
    WireMessage,
    WireRow,
    decode_reply,
    encode_batch,
)
from ..errors import CodecError, PeerError, SpoolqError
from ..retry import backoff
from .peerhttp import BadAnswer, HttpPool, NoAnswer

if TYPE_CHECKING:
    from ..spool import OutboxRecord, Spool
    from .metrics import Metrics

__all__ = ["HttpSink", "PeerLink", "Sink", "Target"]

log = logging.getLogger("spoolq.forwarder")

ERROR_LOG_INTERVAL = 30.0
PROBE_INTERVAL = 1.0  # an unreachable peer is probed every 0.5 to 1 s
PROBE_TIMEOUT = 2.0
RATE_WINDOW = 10.0  # seconds over which rate() averages
RATE_SAMPLES = 1024  # settled batches remembered for it
INLINE_MESSAGES = 64  # an idle link's first batch is read on the event loop when it needs no wait: at most
INLINE_BYTES = 256 << 10  # this many messages and bytes (well under a millisecond of the loop)
UNREACHABLE_MESSAGES = 64  # at most this many per attempt at a target that gave no reply (see step())


class Sink(Protocol):
    """A transport a batch is handed to.

    ``deliver`` returns one result per message, in order: accepted (the
    receiver holds it durably), duplicate, or rejected (``permanent`` or not).
    It raises :class:`~spoolq.errors.PeerError` when the whole batch failed
    (nothing is settled; the target backs off).
    """

    async def deliver(self, messages: list[WireMessage]) -> list[Result]: ...

    async def close(self) -> None: ...


@dataclass
class Target:
    """One peer endpoint and its health. ``sink``: its transport (``None``: HTTP POST to a spoolq peer)."""

    name: str
    url: str
    token: str | None = None
    ssl: ssl.SSLContext | None = None
    failures: int = 0
    retry_at: float = 0.0  # monotonic
    last_error: str | None = None
    last_error_at: float | None = None  # Unix time
    last_ok_at: float | None = None
    sink: Sink | None = field(default=None, repr=False)
    unreachable: bool = False  # the last attempt got no reply at all (refused, reset, timed out)
    _logged_at: float = field(default=0.0, repr=False)
    _suppressed: int = field(default=0, repr=False)

    def backing_off(self, now: float) -> bool:
        return self.retry_at > now


class PeerLink:
    """Forwards the outbox of one outbox peer to its target(s)."""

    def __init__(
        self,
        outbox_peer: str,
        targets: list[Target],
        spool: Spool,
        session: aiohttp.ClientSession,
        *,
        node_id: str,
        max_in_flight: int = MAX_IN_FLIGHT,
        batch_messages: int = BATCH_MESSAGES,
        batch_bytes: int = BATCH_BYTES,
        backoff_base: float = 0.5,
        backoff_cap: float = 60.0,
        scan_interval: float = 5.0,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = outbox_peer
        self.targets = targets
        self.spool = spool
        self.session = session
        self.node_id = node_id
        self.max_in_flight = max_in_flight
        self.batch_messages = batch_messages
        self.batch_bytes = batch_bytes
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.scan_interval = scan_interval
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.clock = clock
        self.wake = asyncio.Event()
        self.cursor: tuple[int, bytes] | None = None
        self.in_flight = 0  # batches
        self.in_flight_messages = 0
        self.forwarded = 0
        self._backlog = False  # the last thread read was full: read from a thread until one comes back short
        self._drained = False  # the last step read to the end of the outbox (see step())
        self._unwrapped = False  # it read to the end after the cursor, but could not go round (batches in flight)
        self._done: collections.deque[tuple[float, int]] = collections.deque(maxlen=RATE_SAMPLES)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._pools: dict[str, HttpPool] = {}  # kept-alive connections to each spoolq peer URL

    def _pool(self, target: Target) -> HttpPool:
        """The connections to ``target``'s URL (new ones when its TLS settings changed: a reload)."""
        pool = self._pools.get(target.url)
        if pool is not None and pool.ssl is not target.ssl:
            self._pools.pop(target.url)
            pool.close()
            pool = None
        if pool is None:
            pool = self._pools[target.url] = HttpPool(target.url, target.ssl, f"spoolq/{__version__}")
        return pool

    # -- one round ----------------------------------------------------------------

    def pick(self, now: float) -> Target | None:
        """The target to send to now: the first one not backing off (failover order)."""
        for t in self.targets:
            if not t.backing_off(now):
                return t
        return None

    def next_retry(self) -> float | None:
        if not self.targets:
            return None
        return min(t.retry_at for t in self.targets)

    async def step(self) -> int:
        """Read and launch as many batches as the in-flight limit and backoff allow. Returns how many."""
        launched = 0
        self._drained = False
        while not self._stopping and self.in_flight < self.max_in_flight:
            target = self.pick(self.clock())
            if target is None:
                break
            size = self.batch_messages
            if target.unreachable:  # it gave no reply last time: one small batch at a time finds out if it is back
                if self.in_flight:
                    break
                size = min(size, UNREACHABLE_MESSAGES)
            batch = None
            inline = False
            if not self._backlog:
                # No backlog (a link woken by sends): read a small batch on the loop when that needs no
                # wait (a thread hop costs more than the read), also while other batches are in flight
                # (at 1,000 msg/s they usually are); a backlog is read from a thread (issue 15).
                batch = self._read_inline()
                inline = batch is not None
            if batch is None:
                batch = await asyncio.to_thread(
                    self.spool.outbox_batch, self.name, after=self.cursor,
                    max_messages=size, max_bytes=self.batch_bytes)
                self._backlog = len(batch) >= size  # a full batch: more is likely waiting
            if not batch:
                if self.cursor is not None and self.in_flight == 0:
                    self.cursor = None  # wrap around: revisit what failed or came in ahead of the cursor
                    continue
                # the end of the outbox: what is sent from now on rings the bell, which wakes the loop
                self._drained = True
                self._unwrapped = self.cursor is not None
                break
            self.cursor = batch[-1].key
            self.in_flight += 1
            self.in_flight_messages += len(batch)
            task = asyncio.create_task(self._forward(target, batch), name=f"forward-{self.name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            launched += 1
            if inline:
                # An inline batch is short (_read_inline passes no full one): it read to the end of the
                # outbox as it was when read, and what is sent after that rings the bell, which wakes the
                # loop again. So the step ends here, as the read after it (which found nothing, ~0.1 ms of
                # the loop before the batch's task could post) would end it: the outbox read to its end
                # after the cursor, which goes round once nothing is in flight (issue 15, latency).
                self._drained = True
                self._unwrapped = True
                break
        return launched

    def _read_inline(self) -> list[OutboxRecord] | None:
        """A small batch read on the event loop, or ``None``: the read would wait, or the batch is full
        (a backlog: then a full-sized batch is read from a thread instead, and no more inline reads are
        tried until a batch comes back short of ``batch_messages``)."""
        limit = min(self.batch_messages, INLINE_MESSAGES)
        size_cap = min(self.batch_bytes, INLINE_BYTES)
        batch = self.spool.outbox_batch_nowait(self.name, after=self.cursor, max_messages=limit, max_bytes=size_cap)
        if batch is None:
            return None
        if len(batch) >= limit < self.batch_messages or (
                sum(len(b.body) + 64 for b in batch) > size_cap // 2 and size_cap < self.batch_bytes):
            self._backlog = True
            return None
        return batch

    async def _forward(self, target: Target, batch: list[OutboxRecord]) -> None:
        ok = False
        started = time.perf_counter()
        try:
            now_ms = int(time.time() * 1000)
            expired = [b for b in batch if b.expires is not None and b.expires <= now_ms]
            live = [b for b in batch if b.expires is None or b.expires > now_ms] if expired else batch
            done: list[tuple[int, bytes]] = []
            dead: list[tuple[tuple[int, bytes], str, str]] = [
                (b.key, "expired", "ttl passed before it could be forwarded") for b in expired]
            retry: list[tuple[int, bytes]] = []
            dups: set[bytes] = set()
            counts = {"accepted": 0, "duplicate": 0, "rejected": 0, "retry": 0}
            if live:
                if target.sink is None:
                    # A spoolq peer: the records are encoded as they are, in the wire's order (a record's
                    # origin is None for this node, which a peer takes as the sender's: 37 bytes less each)
                    results = await HttpSink(self._pool(target), target, self.node_id).deliver_records(live)
                else:
                    results = await target.sink.deliver([_wire(b, self.node_id) for b in live])
                if len(results) == len(live) and results.count(ACCEPTED_RESULT) == len(live):
                    # the usual reply: all accepted, no loop per message
                    done = list(zip(map(_PRIORITY, live), map(_ID, live), strict=True))
                    counts["accepted"] = len(live)
                else:
                    for b, r in zip(live, results, strict=True):
                        if r.status == ACCEPTED:
                            done.append(b.key)
                            counts["accepted"] += 1
                        elif r.status == DUPLICATE:
                            done.append(b.key)
                            dups.add(b.id)
                            counts["duplicate"] += 1
                        elif r.status == REJECTED and r.permanent:
                            dead.append((b.key, "rejected", f"peer {target.name}: {r.reason or 'rejected'}"))
                            counts["rejected"] += 1
                        else:
                            retry.append(b.key)
                            counts["retry"] += 1
            if dead or retry or len(done) > INLINE_MESSAGES or not self.spool.outbox_settle_nowait(
                    self.name, done, target=(target.name, target.url), duplicates=dups):
                # a small answer of accepted messages is settled on the loop when that needs no wait
                # (the thread hop cost more than the delete; issue 15), anything else from a thread
                await asyncio.to_thread(self.spool.outbox_settle, self.name, done, dead, retry,
                                        target=(target.name, target.url), duplicates=dups)
            ok = not retry
            self.forwarded += len(done)
            if done:
                self._done.append((self.clock(), len(done)))
            if retry:
                self._failed(target, PeerError(f"{target.name} asked to retry {len(retry)} messages later"))
            else:
                self._recovered(target)
            if self.metrics is not None:
                self.metrics.forwarded(self.name, counts, len(expired), time.perf_counter() - started)
        except PeerError as e:
            if e.status == 413 and len(batch) > 1:  # the peer takes smaller batches: send less at once
                self.batch_messages = max(1, len(batch) // 2)
                self.batch_bytes = max(1, self.batch_bytes // 2)
            if e.status == 413 and len(batch) == 1:
                # one message the peer will never take (over its batch size limit): give up on it
                await self._give_up(batch[0].key, target, e)
            else:
                await self._log_failure(target, batch, e)
            self._failed(target, e)
        except SpoolqError as e:  # our own spool failed while settling: the messages stay, retried later
            self._failed(target, e)
        except Exception as e:  # never let one batch kill the loop
            log.exception("forwarding to %s failed unexpectedly", target.name)
            self._failed(target, e)
        finally:
            self.in_flight -= 1
            self.in_flight_messages -= len(batch)
            if self.in_flight == 0:
                # Nothing in flight: the front of the outbox is where the cursor would go on from, plus
                # what failed or came in ahead of it. One read from the front finds both (before, the
                # next step read after the cursor, found nothing, and read again from the front).
                self.cursor = None
            if self.metrics is not None:
                self.metrics.batch(self.name, ok)
            if not ok or not self._drained or (self._unwrapped and self.in_flight == 0):
                # More may be waiting: the in-flight limit or a backlog stopped the last step, this
                # batch's messages stay to be retried, or the last step could not go round to what came
                # in ahead of the cursor. Otherwise the outbox bell wakes the loop when something new is
                # sent: waking it here too would cost reads that find nothing (issue 15).
                self.wake.set()

    def _failed(self, target: Target, e: Exception) -> None:
        target.failures += 1
        delay = backoff(target.failures, base=self.backoff_base, cap=self.backoff_cap, rng=self.rng)
        retry_after = getattr(e, "retry_after", None)
        if retry_after:  # the peer's wish lengthens the wait, but never past the configured cap
            delay = max(delay, min(float(retry_after), self.backoff_cap))
        target.retry_at = self.clock() + delay
        target.last_error = str(e)
        target.last_error_at = time.time()
        now = self.clock()
        if target.failures == 1 or now - target._logged_at >= ERROR_LOG_INTERVAL:
            extra = f" ({target._suppressed} more errors since the last report)" if target._suppressed else ""
            log.warning("peer %s: %s; retrying in %.1fs%s", target.name, e, delay, extra)
            target._logged_at = now
            target._suppressed = 0
        else:
            target._suppressed += 1

    async def _log_failure(self, target: Target, batch: list[OutboxRecord], e: Exception) -> None:
        """Put the failed attempt in the event log of the batch's messages (they stay in the outbox)."""
        if not self.spool.trace:
            return
        try:
            await asyncio.to_thread(self.spool.event_log.forward_failed, self.name, [b.id for b in batch],
                                    (target.name, target.url), str(e))
        except SpoolqError as err:
            log.debug("peer %s: cannot log a failed attempt: %s", target.name, err)

    async def _give_up(self, key: tuple[int, bytes], target: Target, e: PeerError) -> None:
        try:
            dead = [(key, "rejected", f"peer {target.name}: {e}")]
            await asyncio.to_thread(self.spool.outbox_settle, self.name, (), dead)
        except SpoolqError as err:
            log.error("peer %s: cannot dead-letter a message it refused: %s", target.name, err)

    def _recovered(self, target: Target) -> None:
        target.last_ok_at = time.time()
        if target.failures:
            log.info("peer %s: forwarding again after %d failures", target.name, target.failures)
        target.failures = 0
        target.retry_at = 0.0

    # -- for operators ----------------------------------------------------------------

    def flush(self) -> None:
        """Retry now (Postfix's ``postqueue -f``): end every target's backoff (failures start again
        from zero), start again from the front of the outbox, and wake the loop."""
        for t in self.targets:
            t.failures = 0
            t.retry_at = 0.0
        if self.in_flight == 0:
            self.cursor = None
        self.wake.set()

    def rate(self, window: float = RATE_WINDOW) -> float:
        """Messages per second forwarded (accepted or duplicate) over the last ``window`` seconds."""
        since = self.clock() - window
        return sum(n for at, n in self._done if at >= since) / window

    # -- probing a peer that does not answer ----------------------------------------

    def probing(self, now: float) -> list[Target]:
        """Targets that gave no reply at all and are waiting out their backoff: these are probed
        every ``PROBE_INTERVAL`` (jittered) instead, so forwarding resumes soon after they are back.
        Backoff still applies in full to a peer that answers with errors."""
        return [t for t in self.targets if t.unreachable and t.backing_off(now)]

    def probe_delay(self) -> float:
        return PROBE_INTERVAL * (0.5 + self.rng.random() / 2)

    async def probe(self, target: Target) -> bool:
        """A cheap ``GET /healthz``: any HTTP answer means the peer is back (its backoff ends)."""
        try:
            async with self.session.get(target.url + "/healthz", timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT),
                                        ssl=target.ssl if target.ssl is not None else True) as resp:
                await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False
        self.peer_is_up(target)
        return True

    def peer_is_up(self, target: Target) -> None:
        """The peer answers again (a probe, or its hello): try it now."""
        if target.unreachable:
            target.unreachable = False
            target.retry_at = 0.0
            self.wake.set()

    # -- the loop -------------------------------------------------------------------

    async def run(self) -> None:
        """Forward until :meth:`stop`; wakes on the outbox bell (``wake``), finished batches, or a timer."""
        while not self._stopping:
            self.wake.clear()
            try:
                launched = await self.step()
            except SpoolqError as e:
                log.error("peer %s: cannot read the outbox: %s", self.name, e)
                launched = 0
            if launched and not self._drained:
                continue
            timeout = self.scan_interval
            nxt = self.next_retry()
            now = self.clock()
            if nxt is not None and nxt > now:
                timeout = min(timeout, nxt - now)
            probing = self.probing(now)
            probe_at = now + self.probe_delay() if probing else None
            if probe_at is not None:
                timeout = min(timeout, probe_at - now)
            try:
                async with asyncio.timeout(max(0.001, timeout)):  # unlike wait_for, no task per wait
                    await self.wake.wait()
            except TimeoutError:
                pass
            if probe_at is not None and not self.wake.is_set() and not self._stopping:
                for t in self.probing(self.clock()):
                    await self.probe(t)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking batches; let in-flight ones finish for ``grace`` seconds, then abandon them.

        An abandoned batch stays in the outbox and is sent again later; the
        peer drops what it already has (dedup by id).
        """
        self._stopping = True
        self.wake.set()
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


_PRIORITY, _ID = operator.itemgetter(3), operator.itemgetter(0)  # of an OutboxRecord: its key is (priority, id)


def _wire(r: OutboxRecord, me: str) -> WireMessage:
    """An outbox record as a message for a sink: its fields are the message's, in ``WireMessage``
    order (tests/test_forwarder.py checks); a message of this node is given this node's id."""
    return WireMessage(*r) if r.origin is not None else WireMessage(*r[:7], me)


class HttpSink:
    """The spoolq peer protocol: one ``POST /v1/batches`` per batch (see ``codec``), through the link's
    kept-alive connections to the target (``peerhttp``)."""

    def __init__(self, pool: HttpPool, target: Target, node_id: str) -> None:
        self.pool = pool
        self.target = target
        self.node_id = node_id

    async def deliver(self, messages: list[WireMessage]) -> list[Result]:
        return await self._post(encode_batch(self.node_id, messages), len(messages))

    async def deliver_records(self, records: Sequence[WireRow]) -> list[Result]:
        """:meth:`deliver` for messages as tuples in ``WireMessage`` order (outbox records)."""
        return await self._post(encode_batch(self.node_id, records), len(records))

    async def _post(self, payload: bytes, n: int) -> list[Result]:
        target = self.target
        headers = {"Content-Type": "application/x-msgpack"}
        if target.token:
            headers["Authorization"] = f"Bearer {target.token}"
        try:
            reply = await self.pool.post("/v1/batches", payload, headers)
        except (NoAnswer, OSError) as e:
            target.unreachable = True
            raise PeerError(f"cannot reach {target.name} at {target.url}: {e}",
                            hint="is the peer's daemon running and reachable?") from e
        except BadAnswer as e:
            target.unreachable = False
            raise PeerError(f"{target.name} at {target.url} sent an unreadable answer: {e}") from e
        except ValueError as e:
            target.unreachable = False
            raise PeerError(f"cannot send to {target.name}: {e}", hint="check the peer's token in the config") from e
        target.unreachable = False
        body, status = reply.body, reply.status
        retry_after = reply.headers.get("retry-after")
        if status == 200:
            try:
                return list(decode_reply(body, expected=n).results)
            except CodecError as e:
                raise PeerError(f"{target.name} sent an unreadable reply: {e}", status=status) from e
        code, message = "", body[:200].decode("utf-8", "replace")
        try:
            data = json.loads(body)
            if isinstance(data, dict):
                code, message = str(data.get("error", "")), str(data.get("message", message))
        except ValueError:
            pass
        hint = None
        if status == 401:
            hint = f"check the token configured for peer {target.name} against the peer's [tokens] with scope 'peer'"
        elif status == 403:
            hint = f"the token for peer {target.name} needs the 'peer' scope on that node"
        raise PeerError(f"{target.name} answered {status} {code}: {message}", status=status,
                        retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None, hint=hint)

    async def close(self) -> None:
        """The connections belong to the link: nothing to close."""
